"""The energy counter on a torch without the private dispatch-stack calls it pauses its mode with: the same counts,
one warning at import."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import torch

from svformer_deploy.energy import count_ops
from svformer_deploy.energy import counter as counter_module
from svformer_deploy.models import create_model


def _model_and_clips():
    torch.manual_seed(0)
    m = create_model("svformer_tiny").eval()
    with torch.no_grad():
        for p in m.parameters():  # make neurons fire
            if p.dim() > 1:
                p.mul_(4)
    return m, torch.randn(2, *m.config.input_shape)


def test_without_the_dispatch_stack_calls_the_counts_are_the_same(monkeypatch):
    m, x = _model_and_clips()
    paused = count_ops(m, x, plan=False)
    assert any("PLIF" in k for k in paused.internal)  # the neuron layers were paused: not intercepted
    monkeypatch.setattr(counter_module, "_pop_torch_dispatch_stack", None)
    monkeypatch.setattr(counter_module, "_push_on_torch_dispatch_stack", None)
    intercepted = count_ops(m, x, plan=False)
    pd.testing.assert_frame_equal(paused.df, intercepted.df)
    assert paused.uncounted == intercepted.uncounted
    assert not any("PLIF" in k for k in intercepted.internal) and intercepted.internal  # their aten ops instead


def test_at_import_one_warning_names_the_missing_call():
    code = ("import torch, torch.utils._python_dispatch\ndel torch._C._push_on_torch_dispatch_stack\n"
            "from svformer_deploy.energy import counter\nprint(counter._push_on_torch_dispatch_stack)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["None"]
    lines = [ln for ln in res.stderr.splitlines() if "energy counting" in ln]
    assert len(lines) == 1 and "_push_on_torch_dispatch_stack" in lines[0] and "same counts" in lines[0]
