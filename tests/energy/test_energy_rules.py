"""The counting rules as a table: one rule per aten op or module type, stated once, registrable, printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from svformer_deploy.energy import count_ops, rules
from svformer_deploy.energy.rules import list_rules, register_rule, rules_markdown
from svformer_deploy.errors import EnergyError
from svformer_deploy.models.neurons import PLIF

DOC = Path(__file__).resolve().parents[2] / "docs" / "energy.md"


def test_every_rule_is_stated_and_the_plif_rule_exists_once():
    names = [r.name for r in list_rules()]
    assert len(names) == len(set(names))
    assert all(len(r.doc) > 40 for r in list_rules())
    plif = [r for r in list_rules() if PLIF in r.keys]
    assert [r.name for r in plif] == ["plif"]
    with pytest.raises(EnergyError, match="docstring"):
        register_rule(torch.ops.aten.exp)(lambda ctx, a, k, o: None)


@pytest.mark.parametrize("section", ["rules", "memory", "conventions"])
def test_docs_sections_are_generated_from_the_code(section):
    from svformer_deploy.energy._docs import generated_sections

    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- {section}:begin -->\n(.*?)<!-- {section}:end -->", text, re.S)
    assert m, f"docs/energy.md lacks the generated {section} section"
    assert m.group(1) == generated_sections()[section], f"docs/energy.md drifted from the code ({section}): " \
        "regenerate it with python -m svformer_deploy.energy._docs"


def test_user_rule_for_an_aten_op_counts_it(scratch_registry):
    class Net(nn.Module):
        def forward(self, x):
            return torch.softmax(x, -1)

    assert count_ops(Net(), torch.randn(2, 3), num_steps=None).uncounted
    aten = torch.ops.aten

    @register_rule(aten._softmax)
    def softmax(ctx, args, kwargs, out):
        """Softmax: exp, sum and divide per element, booked as 3 `mul` per element (test rule)."""
        ctx.book("mul", 3 * out.numel())

    c = count_ops(Net(), torch.randn(2, 3), num_steps=None)
    assert c.uncounted == {} and c.totals()["mul"] == 18 and "softmax" in c.rules_used


def test_module_rule_covers_whatever_kernel_runs_inside():
    class OddKernelPLIF(PLIF):
        """A PLIF whose forward runs extra, unrelated aten ops (as a fused kernel might)."""

        def forward(self, x):
            y = super().forward(x)
            return (y.exp() * 0 + y).clone()

    class Net(nn.Module):
        def __init__(self, lif):
            super().__init__()
            self.lif = lif

        def forward(self, x):
            return self.lif(x)

    x = torch.randn(3, 2, 5)
    a = count_ops(Net(PLIF()), x, num_steps=3, batch=2)
    b = count_ops(Net(OddKernelPLIF()), x, num_steps=3, batch=2)
    assert a.df.equals(b.df) and b.uncounted == {}
    assert a.totals()["neuron_mul"] == 30 and a.totals()["neuron_add"] == 90
    assert a.rules_used == ("plif",)


def test_user_module_rule(scratch_registry):
    class Gate(nn.Module):
        def forward(self, x):
            return torch.sigmoid(x) * x

    @register_rule(Gate)
    def gate(ctx, name, module, x):
        """Gate: 2 `mul` per element (test rule)."""
        ctx.book("mul", 2 * x.numel(), name)

    c = count_ops(nn.Sequential(Gate()), torch.randn(4, 3), num_steps=None)
    assert c.uncounted == {} and c.totals()["mul"] == 24 and c.rules_used == ("gate",)
    assert "| `gate` | Gate |" in rules_markdown(["gate"])


def _tot(c, cls):
    return c.totals()[cls]


_SYNAPTIC_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@pytest.mark.parametrize("kw", [{}, {"dense": True}, {"skip_zero_macs": True}, {"fold_bn": True},
                                {"bn": "per_timestep"}, {"neuron": "relu"}])
def test_synaptic_module_rules_count_exactly_what_the_aten_rules_count(scratch_registry, kw):
    from svformer_deploy.models import create_model
    from svformer_deploy.models.norm import TemporalBatchNorm
    from svformer_deploy.models.svformer import SpikeAttentionProduct

    model_kw = {k: v for k, v in kw.items() if k in ("bn", "neuron")}
    count_kw = {k: v for k, v in kw.items() if k not in model_kw}
    torch.manual_seed(0)
    m = create_model("svformer_tiny", **model_kw).eval()
    with torch.no_grad():
        for p in m.parameters():  # make neurons fire
            if p.dim() > 1:
                p.mul_(4)
    x = torch.randn(2, *m.config.input_shape)
    fast = count_ops(m, x, **count_kw)
    assert fast.internal.get("TConv2d (module rule)", 0) > 0 and "aten.convolution" not in fast.internal
    for key in (*_SYNAPTIC_MODULES, TemporalBatchNorm, SpikeAttentionProduct):
        rules._MODULE_RULES.pop(key)
    slow = count_ops(m, x, **count_kw)  # every synaptic op counted at the aten level
    assert "TConv2d (module rule)" not in slow.internal
    assert fast.df.equals(slow.df) and fast.memory.equals(slow.memory)
    assert fast.uncounted == slow.uncounted == {} and set(fast.rules_used) == set(slow.rules_used)


def test_module_rules_decline_modules_they_cannot_state():
    class Doubled(nn.Conv2d):
        def forward(self, x):  # not the stock forward: the aten rules must see both convolutions
            return super().forward(x) + super().forward(x)

    x = (torch.rand(1, 2, 5, 5) > 0.5).float()
    plain, odd = nn.Conv2d(2, 3, 3, padding=1), Doubled(2, 3, 3, padding=1)
    a, b = count_ops(plain, x, num_steps=None), count_ops(odd, x, num_steps=None)
    assert _tot(b, "ac") == 2 * _tot(a, "ac") > 0 and a.internal == {"Conv2d (module rule)": 1}
    circ = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular")  # pads all around: every tap in bounds
    assert _tot(count_ops(circ, x, num_steps=None), "ac") == int(x.sum()) * 3 * 9
