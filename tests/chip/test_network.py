"""The chip network is an exact rewriting of the plan: every neuron's input current, rebuilt from its spike
terms, host terms and bias map, equals the plan's own float value of that input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svformer_deploy.chip.network import derive_network
from svformer_deploy.errors import UnsupportedLayerError
from svformer_deploy.exporters.plan import Add, Input, Neuron, Plan, Synapse
from tests.chip.conftest import small_plan


def _float_values(plan: Plan, frames: torch.Tensor, spikes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each node's value for one frame (N, C, H, W), neurons replaced by the given spike maps."""
    v: dict[str, torch.Tensor] = {}
    for n in plan.nodes:
        if isinstance(n, Input):
            v[n.name] = frames
        elif isinstance(n, Synapse):
            w = torch.as_tensor(plan.params[f"{n.name}.weight"])
            b = torch.as_tensor(plan.params[f"{n.name}.bias"])
            v[n.name] = F.conv2d(v[n.inputs[0]], w, b, stride=n.stride, padding=n.padding)
        elif isinstance(n, Add):
            v[n.name] = v[n.inputs[0]] + v[n.inputs[1]]
        elif isinstance(n, Neuron):
            v[n.name] = spikes[n.name]
    return v


def _rebuilt(layer, v: dict[str, torch.Tensor]) -> torch.Tensor:
    cur = torch.as_tensor(layer.bias)[None].clone()
    for t in layer.terms:
        cur = cur + F.conv2d(v[t.source], torch.as_tensor(t.weight), stride=t.stride, padding=t.padding)
    for h in layer.host_terms:
        cur = cur + h.apply(v[h.source])
    return cur


def test_every_neuron_input_is_rebuilt_exactly_from_terms_host_terms_and_bias():
    plan = small_plan()
    net = derive_network(plan, ["a", "b", "c"])
    g = torch.Generator().manual_seed(3)
    frames = torch.randn(2, 2, 6, 6, generator=g, dtype=torch.float64)
    spikes = {n.name: (torch.rand(2, *n.shape, generator=g) < 0.4).double() for n in plan.nodes
              if isinstance(n, Neuron)}
    v = _float_values(plan, frames, spikes)
    for layer in net.layers:
        node = plan.node(layer.name)
        np.testing.assert_allclose(_rebuilt(layer, v).numpy(), v[node.inputs[0]].numpy(), rtol=1e-12, atol=1e-12)


def test_residual_join_gives_the_reader_both_branches_and_a_host_term_for_the_frames():
    net = derive_network(small_plan(), ["a", "b", "c"])
    a, c = net.layer("a"), net.layer("c")
    assert [t.source for t in a.terms] == [] and [h.source for h in a.host_terms] == ["frames"]
    assert sorted(t.source for t in c.terms) == ["a", "b"]
    by_src = {t.source: t for t in c.terms}
    assert by_src["a"].path == ("s2",) and by_src["b"].path == ("s3", "s4")  # 1x1 then 3x3 s2: one synapse
    assert by_src["b"].kernel == 3 and by_src["b"].stride == 2 and by_src["b"].weight.shape == (3, 5, 3, 3)
    # the bias map is per compartment: s2's bias is constant, s3's bias through s4 with zero padding is not
    assert not np.allclose(c.bias[0], c.bias[0, 1, 1])


def test_host_neurons_become_spike_sources_from_the_host():
    net = derive_network(small_plan(), ["c"])
    assert net.host_neurons == ("a", "b")
    assert sorted(net.host_spike_sources) == ["a", "b"]
    assert all(not t.on_chip for t in net.layer("c").terms)


def test_two_spatial_convolutions_without_a_neuron_between_them_are_refused_by_name():
    plan = small_plan()
    nodes = list(plan.nodes)
    i = next(k for k, n in enumerate(nodes) if n.name == "s3")
    nodes[i] = Synapse("s3", ("b",), (3, 6, 6), ("s3",), kernel=3, stride=1, padding=1, in_channels=5)
    params = dict(plan.params)
    params["s3.weight"] = np.ones((3, 5, 3, 3))
    bad = Plan("small", nodes, "c", plan.operations, params=params)
    with pytest.raises(UnsupportedLayerError, match=r"s3 -> s4 holds two spatial convolutions \(s3, s4\)"):
        derive_network(bad, ["a", "b", "c"])


def test_svformer_tiny_inputs_are_rebuilt_exactly(tiny_mapping):
    """The real model: residual streams, the local block's 1x1 -> depthwise 5x5 -> 1x1, the concat."""
    model, m, run, x = tiny_mapping
    plan = m.network.plan
    t = 3
    frames = x.permute(2, 0, 1, 3, 4)[t].double()
    spikes = {k: torch.as_tensor(a.spikes[t]).double() for k, a in run.layers.items()}
    from svformer_deploy.exporters.host_ops import run_host_op
    from svformer_deploy.exporters.plan import HostOp

    v: dict[str, torch.Tensor] = {}
    for n in plan.nodes:
        if isinstance(n, Input):
            v[n.name] = frames
        elif isinstance(n, Synapse):
            w = torch.as_tensor(plan.params[f"{n.name}.weight"])
            v[n.name] = F.conv2d(v[n.inputs[0]], w, torch.as_tensor(plan.params[f"{n.name}.bias"]),
                                 stride=n.stride, padding=n.padding)
        elif isinstance(n, Add):
            v[n.name] = v[n.inputs[0]] + v[n.inputs[1]]
        elif isinstance(n, Neuron):
            v[n.name] = spikes[n.name]
        elif isinstance(n, HostOp) and n.output_time == "per_timestep":
            v[n.name] = run_host_op(n.op, [v[i] for i in n.inputs], n.attrs, {})[0]
    for layer in m.network.layers:
        want = v[plan.node(layer.name).inputs[0]]
        np.testing.assert_allclose(_rebuilt(layer, v).numpy(), want.numpy(), rtol=1e-9, atol=1e-9)
