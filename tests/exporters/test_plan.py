"""The export plan: self-validating nodes, the coverage invariant, JSON round trip, the type-keyed lowering table
(a new model family plugs in by registering), and the cut by target capabilities."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from svformer_deploy.errors import UnsupportedLayerError
from svformer_deploy.exporters.fold import PerTimestepBNError
from svformer_deploy.exporters.host_ops import HOST_OPS
from svformer_deploy.exporters.lava.partition import LAVA_CAPABILITIES
from svformer_deploy.exporters.onnx_export import ONNX_CAPABILITIES
from svformer_deploy.exporters.nir.lowering import NIR_CAPABILITIES
from svformer_deploy.exporters.plan import (LOWERINGS, PLAN_VERSION, Add, HostOp, HostStep, Input, Neuron, Plan,
                                            PlanError, PlanPartition, Synapse, cut, lower, model_operations,
                                            partition_coverage, register_lowering)
from svformer_deploy.models.neurons import PLIF
from svformer_deploy.models.svformer import TConv2d

from .conftest import active_model


@pytest.fixture(scope="module")
def planned():
    model = active_model()
    return model, lower(model)


def test_plan_covers_every_model_operation_once_and_names_registered_host_ops(planned):
    model, plan = planned
    assert sorted(plan.covered()) == sorted(model_operations(model)) == sorted(plan.operations)
    assert plan.host_ops() == ["concat", "spike_attention_product", "temporal_head"]
    assert all(op in HOST_OPS for op in plan.host_ops())
    kinds = [n.kind for n in plan.nodes]
    assert kinds[0] == "input" and kinds.count("neuron") == 25 and kinds.count("add") == 8
    assert plan.output == "head.readout" and plan.node("head.readout").output_time == "per_clip"


def test_json_round_trip_is_checked_and_equal(planned):
    _, plan = planned
    d = json.loads(json.dumps(plan.to_dict()))
    back = Plan.from_dict(d)
    assert back.to_dict() == plan.to_dict() and back.version == PLAN_VERSION and not back.params
    with pytest.raises(PlanError, match="version 99"):
        Plan.from_dict({**d, "version": 99})
    bad = json.loads(json.dumps(d))
    bad["nodes"][3]["kind"] = "matmul"
    with pytest.raises(PlanError, match="kind 'matmul'"):
        Plan.from_dict(bad)
    bad = json.loads(json.dumps(d))
    bad["nodes"][5]["modules"] = []  # an operation no node covers any more
    with pytest.raises(PlanError, match="coverage is broken: not exported"):
        Plan.from_dict(bad)
    bad = json.loads(json.dumps(d))
    bad["nodes"][1]["inputs"] = ["head.lif"]  # a read before the value exists: not a data flow in order
    with pytest.raises(PlanError, match="which no earlier node produces"):
        Plan.from_dict(bad)


def test_synapse_params_equal_conv_then_batchnorm(planned):
    """The plan's float64 weights are the model's conv followed by its eval BatchNorm (by definition)."""
    model, plan = planned
    conv, bn = model.blocks1[0].mlp.fc1, model.blocks1[0].mlp.bn1
    w, b = plan.params["blocks1.0.mlp.fc1.weight"], plan.params["blocks1.0.mlp.fc1.bias"]
    x = torch.randn(2, conv.in_channels, 16, 16, dtype=torch.float64)
    y = F.conv2d(x, conv.weight.double(), conv.bias.double())
    ref = (y - bn.running_mean.double()[:, None, None]) / torch.sqrt(bn.running_var.double()[:, None, None] + bn.eps) \
        * bn.weight.double()[:, None, None] + bn.bias.double()[:, None, None]
    # (s, t) come from the layer's own float32 affine(): agreement to float32 precision
    assert torch.allclose(F.conv2d(x, torch.from_numpy(w), torch.from_numpy(b)), ref, rtol=1e-5, atol=1e-5)
    k = plan.node("blocks3.0.attn.qkv.k")
    assert k.modules == () and k.shares == ("blocks3.0.attn.qkv", "blocks3.0.attn.bn_qkv")


@pytest.mark.parametrize("make, match", [
    (lambda: Neuron("n", ("x",), (2, 3, 3), ("n",), tau=0.5), "tau 0.5"),
    (lambda: Neuron("n", ("x",), (2, 3, 3), ("n",), v_threshold=-1.0), "v_threshold"),
    (lambda: Synapse("s", ("x",), (2, 3, 3), ("s",), kernel=0), "kernel/stride/padding"),
    (lambda: Synapse("s", ("x",), (2, 3), ("s",)), r"\(C, H, W\) map"),
    (lambda: Add("a", ("x",), (2, 3, 3), ("a",)), "has 1 inputs, needs 2"),
    (lambda: HostOp("h", ("x",), (2,), ("h",), op="softmax", equation="y = softmax(x)"), "'softmax', which is not "
     "registered"),
    (lambda: Input("", (), (1,), ()), "no name"),
    (lambda: Neuron("n", ("x",), (2, 0, 3), ("n",)), "positive sizes"),
])
def test_nodes_validate_themselves(make, match):
    with pytest.raises(PlanError, match=match):
        make()


def test_plan_checks_shapes_along_edges_and_params():
    x = Input("x", (), (2, 8, 8), ())
    with pytest.raises(PlanError, match="gives \\(4, 4, 4\\)"):
        Plan("m", [x, Synapse("s", ("x",), (4, 8, 8), ("s",), kernel=3, stride=2, padding=1, in_channels=2)], "s",
             ["s"])
    ok = [x, Synapse("s", ("x",), (4, 4, 4), ("s",), kernel=3, stride=2, padding=1, in_channels=2)]
    Plan("m", ok, "s", ["s"])
    with pytest.raises(PlanError, match="has shape \\(4, 2, 1, 1\\), its node declares \\(4, 2, 3, 3\\)"):
        Plan("m", ok, "s", ["s"], params={"s.weight": np.zeros((4, 2, 1, 1)), "s.bias": np.zeros(4)})
    with pytest.raises(PlanError, match="exported 2 times: s"):
        Plan("m", [*ok, Neuron("n", ("s",), (4, 4, 4), ("s",))], "n", ["s"])


def test_cut_for_nir_splits_at_host_ops_and_covers_everything_once(planned):
    _, plan = planned
    steps = cut(plan, NIR_CAPABILITIES)
    assert [s.node if isinstance(s, HostStep) else "partition" for s in steps] == [
        "partition", "blocks3.0.attn.product", "partition", "blocks4.0.attn.product", "partition",
        "forward_features.cat", "partition", "head.readout"]
    nodes = {n.name: n for n in plan.nodes}
    covered = [m for s in steps for m in (partition_coverage(plan, s) if isinstance(s, PlanPartition)
                                          else nodes[s.node].modules)]
    assert sorted(covered) == sorted(plan.operations)
    first = steps[0]
    assert first.inputs == ("frames",) and "blocks3.0.attn.lif_q" in first.outputs
    assert {nodes[n].kind for s in steps if isinstance(s, PlanPartition) for n in s.nodes} == {"synapse", "neuron",
                                                                                              "add"}


def test_cut_for_chain_only_targets(planned):
    _, plan = planned
    chains = cut(plan, LAVA_CAPABILITIES)
    assert all(isinstance(c, PlanPartition) for c in chains) and len(chains) == 14
    lp = next(c for c in chains if c.name == "patch_embed3.lif>head.lif")
    assert lp.nodes == ("patch_embed3.conv", "local_path.lif", "local_path.dwconv", "local_path.pwconv",
                        "forward_features.cat", "head.lif")
    # the patch-embed conv also feeds the residual stream and head.lif is only a channel slice: the host's
    assert partition_coverage(plan, lp) == ["local_path.lif", "local_path.dwconv", "local_path.pwconv",
                                            "local_path.bn"]
    for c in chains:  # one input, no residual joins: synapses, neurons and a concat slice only
        assert len(c.inputs) == 1 and {plan.node(n).kind for n in c.nodes} <= {"synapse", "neuron", "host"}


def test_per_timestep_weights_are_cut_only_by_targets_that_hold_them():
    model = active_model(bn="per_timestep")
    plan = lower(model)
    syn = plan.node("patch_embed1.conv")
    assert syn.time_varying and plan.params["patch_embed1.conv.weight"].shape[0] == model.config.num_frames
    for caps in (NIR_CAPABILITIES, LAVA_CAPABILITIES):
        with pytest.raises(PerTimestepBNError, match=f"'{caps.target}' partition cannot hold.*--approximate-bn"):
            cut(plan, caps)
    assert len(cut(plan, ONNX_CAPABILITIES)) == 1
    avg = lower(model, approximate_bn=True)
    assert avg.bn_fold == "time_average" and not avg.node("patch_embed1.conv").time_varying


class _Twice(nn.Module):
    """A new model family: two PLIF -> conv stages, output spikes."""

    def __init__(self):
        super().__init__()
        self.lif1, self.conv, self.lif2 = PLIF(), TConv2d(2, 4, 3, padding=1), PLIF()
        self.config = SimpleNamespace(name="twice", input_shape=(2, 3, 8, 8))


def test_a_new_model_family_plugs_in_by_registering_its_lowering():
    model = _Twice()
    with pytest.raises(UnsupportedLayerError, match="register_lowering"):
        lower(model)

    @register_lowering(_Twice, {"lif1": PLIF, "conv": TConv2d, "lif2": PLIF})
    def twice(ctx, pfx, m, x):
        s = ctx.neuron("lif1", m.lif1, x)
        return ctx.neuron("lif2", m.lif2, ctx.synapse("conv", m.conv, s))

    try:
        plan = lower(model)
        assert [(n.kind, n.name) for n in plan.nodes] == [("input", "frames"), ("neuron", "lif1"),
                                                           ("synapse", "conv"), ("neuron", "lif2")]
        assert plan.operations == ["lif1", "conv", "lif2"] and plan.coverage_problems() == []
        (chain,) = cut(plan, LAVA_CAPABILITIES)
        assert chain.name == "lif1>lif2" and partition_coverage(plan, chain) == ["conv", "lif2"]
        (whole,) = cut(plan, NIR_CAPABILITIES)
        assert partition_coverage(plan, whole) == ["lif1", "conv", "lif2"]
        model.extra = nn.ReLU()  # a child the registered rule does not know is refused by name
        with pytest.raises(UnsupportedLayerError, match="'extra' of type .*ReLU"):
            lower(model)
    finally:
        del LOWERINGS[_Twice]


def test_a_bundle_stores_its_plan_and_reads_it_back_checked(planned, tmp_path):
    from svformer_deploy.exporters import read_bundle
    from svformer_deploy.exporters.nir.export import export_nir

    model, plan = planned
    path, manifest = export_nir(model, tmp_path / "b", checkpoint_sha256="ab" * 32)
    back = read_bundle(path)
    assert back.plan.to_dict() == plan.to_dict() and back.operations == plan.operations
    assert back.plan == plan  # nodes, output, operations (the weights are in the partition files)
