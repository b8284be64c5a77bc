"""Fixtures of the chip tests: a small hand-built plan, and svformer_tiny mapped onto Loihi with real activity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svformer_deploy.exporters.plan import Add, Input, Neuron, Plan, Synapse


def small_plan(seed: int = 0, scale: float = 0.6) -> Plan:
    """frames (2, 6, 6) -> conv 3x3 p1 -> PLIF a -> conv 1x1 -> PLIF b; a residual: c = PLIF(conv3x3(a) + 1x1(b)),
    so c has two spike terms (one spatial, one pointwise) and a has a host term (the frames' convolution)."""
    rng = np.random.default_rng(seed)
    nodes = [
        Input("frames", (), (2, 6, 6), ()),
        Synapse("s0", ("frames",), (4, 6, 6), ("s0",), kernel=3, stride=1, padding=1, in_channels=2),
        Neuron("a", ("s0",), (4, 6, 6), ("a",), tau=2.0, v_threshold=1.0),
        Synapse("s1", ("a",), (5, 6, 6), ("s1",), kernel=1, stride=1, padding=0, in_channels=4),
        Neuron("b", ("s1",), (5, 6, 6), ("b",), tau=1.5, v_threshold=1.0),
        Synapse("s2", ("a",), (3, 3, 3), ("s2",), kernel=3, stride=2, padding=1, in_channels=4),
        Synapse("s3", ("b",), (3, 6, 6), ("s3",), kernel=1, stride=1, padding=0, in_channels=5),
        Synapse("s4", ("s3",), (3, 3, 3), ("s4",), kernel=3, stride=2, padding=1, in_channels=3),
        Add("j", ("s2", "s4"), (3, 3, 3), ("j",)),
        Neuron("c", ("j",), (3, 3, 3), ("c",), tau=3.0, v_threshold=1.0),
    ]
    params = {}
    for n in nodes:
        if isinstance(n, Synapse):
            o, i, k = n.shape[0], n.in_channels, n.kernel
            params[f"{n.name}.weight"] = rng.normal(0, scale, (o, i, k, k))
            params[f"{n.name}.bias"] = rng.normal(0.2, 0.1, (o,))
    ops = [n.name for n in nodes if n.modules]
    return Plan("small", nodes, "c", ops, params=params)


@pytest.fixture(scope="module")
def tiny_mapping():
    """svformer_tiny (shared BN, active statistics) mapped onto Loihi, with one batch of two clips run."""
    from svformer_deploy.chip.arch import load_chip
    from svformer_deploy.chip.run import run_chip
    from svformer_deploy.chip.service import host_nodes, mapping_from_model
    from tests.exporters.conftest import active_model, clips

    model = active_model(bn="shared", img_size=32)
    m = mapping_from_model(model, load_chip("loihi"))
    x = clips(2, size=32)
    run = run_chip(m.network, m.fixed, m.chip.number_format, x, model.config.to_dict(), host_nodes(m))
    return model, m, run, x


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
