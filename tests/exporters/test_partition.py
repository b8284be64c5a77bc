"""Lowering rules: every operation exactly once, BN folding, depthwise expansion, LIF parameters, refusals."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nir
from svformer_deploy.errors import UnsupportedLayerError
from svformer_deploy.exporters.nir.lowering import DT, PerTimestepBNError, lower_svformer
from svformer_deploy.exporters.plan import model_operations
from svformer_deploy.exporters.compare import coverage_problems
from svformer_deploy.models.svformer import TConv2d

from .conftest import active_model


@pytest.fixture(scope="module")
def lowered():
    model = active_model()
    return model, lower_svformer(model)


def _covered(low):
    return [m for p in low.partitions for m in p.modules] + [m for h in low.host_ops for m in h.modules]


def test_every_operation_exactly_once(lowered):
    model, low = lowered
    ops = model_operations(model)
    covered = _covered(low)
    assert sorted(covered) == sorted(ops)  # same multiset: nothing missing, nothing twice
    # the list of operations is itself complete: every parametrised or neuron module is a leaf in it
    leaves = {n for n, m in model.named_modules() if n and not list(m.children())}
    assert leaves <= set(ops) and {"blocks3.0:add1", "blocks4.0:add2", "forward_features:cat"} <= set(ops)
    assert coverage_problems(model, covered) == []
    assert coverage_problems(model, covered[1:]) == [f"not exported: {covered[0]}"]
    assert coverage_problems(model, covered + ["head.fc"]) == ["exported 2 times: head.fc"]


def test_host_ops_are_what_nir_cannot_say(lowered):
    _, low = lowered
    assert [(h.name, h.op, h.time) for h in low.host_ops] == [
        ("blocks3.0.attn.product", "spike_attention_product", "per_timestep"),
        ("blocks4.0.attn.product", "spike_attention_product", "per_timestep"),
        ("forward_features.cat", "concat", "per_timestep"),
        ("head.readout", "temporal_head", "per_clip")]
    assert low.host_ops[0].attrs == {"num_heads": 3, "head_dim": 32, "scale": 32 ** -0.5}
    for p in low.partitions:  # only node types snntorch imports
        kinds = {type(n).__name__ for n in p.nodes.values()}
        assert kinds <= {"Input", "Output", "Conv2d", "LIF"}


def test_bn_folded_into_conv_matches_conv_then_bn(lowered):
    model, low = lowered
    node = low.partitions[0].nodes["blocks1.0.mlp.fc1"]
    assert low.partitions[0].node_modules["blocks1.0.mlp.fc1"] == ["blocks1.0.mlp.fc1", "blocks1.0.mlp.bn1"]
    conv, bn = model.blocks1[0].mlp.fc1, model.blocks1[0].mlp.bn1
    x = torch.randn(3, conv.in_channels, 16, 16, dtype=torch.float64)
    y = F.conv2d(x, conv.weight.double(), conv.bias.double())
    # BatchNorm by its definition, with the (non-trivial) running statistics
    ref = (y - bn.running_mean.double()[:, None, None]) / torch.sqrt(bn.running_var.double()[:, None, None] + bn.eps) \
        * bn.weight.double()[:, None, None] + bn.bias.double()[:, None, None]
    got = F.conv2d(x, torch.from_numpy(node.weight).double(), torch.from_numpy(node.bias).double())
    assert bn.running_var.min() < 0.1 and bn.running_mean.abs().max() > 0.01  # folding is not a no-op here
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_qkv_split_into_three_convs_with_bn(lowered):
    model, low = lowered
    a = model.blocks3[0].attn
    C = a.proj.in_features
    nodes = low.partitions[1].nodes if "blocks3.0.attn.qkv.q" in low.partitions[1].nodes else low.partitions[0].nodes
    tokens = torch.randn(5, C)
    ref = a.bn_qkv(a.qkv(tokens)[None, None]).reshape(5, 3 * C)
    for j, w in enumerate("qkv"):
        n = nodes[f"blocks3.0.attn.qkv.{w}"]
        assert n.weight.shape == (C, C, 1, 1)
        got = tokens @ torch.from_numpy(n.weight[:, :, 0, 0]).T + torch.from_numpy(n.bias)
        assert torch.allclose(got, ref[:, j * C:(j + 1) * C], atol=1e-5)


def test_depthwise_expanded_block_diagonal(lowered):
    model, low = lowered
    dw = model.blocks1[0].dwconv
    node = low.partitions[0].nodes["blocks1.0.dwconv"]
    assert node.groups == 1 and node.weight.shape == (dw.out_channels, dw.in_channels, 5, 5)
    x = torch.randn(2, dw.in_channels, 16, 16)
    assert torch.allclose(F.conv2d(x, torch.from_numpy(node.weight), torch.from_numpy(node.bias), padding=2),
                          dw(x[None])[0], atol=1e-5)
    off = node.weight.copy()
    off[np.arange(dw.in_channels), np.arange(dw.in_channels)] = 0
    assert not off.any()


def test_every_conv_has_input_shape_and_lif_parameters_per_neuron(lowered):
    model, low = lowered
    tau = {n: float(1 / torch.sigmoid(m.w.detach()).double()) for n, m in model.named_modules() if hasattr(m, "w")}
    n_lif = 0
    for p in low.partitions:
        for name, node in p.nodes.items():
            if isinstance(node, nir.Conv2d):
                assert node.input_shape is not None and node.input_type["input"].size == 3
            if isinstance(node, nir.LIF):
                n_lif += 1
                shape = node.tau.shape
                assert len(shape) == 3  # one value per neuron of the (C, H, W) map
                np.testing.assert_allclose(node.tau, tau[name] * DT, rtol=1e-12)
                assert (node.r == 1).all() and (node.v_leak == 0).all() and (node.v_reset == 0).all()
                assert (node.v_threshold == 1.0).all()
    assert n_lif == len(tau) == 25


def test_per_timestep_bn_refused_with_reason_and_fix():
    model = active_model(bn="per_timestep")
    with pytest.raises(PerTimestepBNError) as e:
        lower_svformer(model)
    msg = str(e.value)
    assert "per-timestep BatchNorm" in msg and "bn='shared'" in msg and "--approximate-bn" in msg
    low = lower_svformer(model, approximate_bn=True)
    assert [a.kind for a in low.approximations] == ["bn_time_average"] and "time-averaged" in low.approximations[0].text
    assert low.approximations[0].params == {"num_frames": model.config.num_frames}
    # folded = time-mean of the per-timestep affine maps
    scale, shift = model.patch_embed1.bn.affine()
    conv = model.patch_embed1.conv
    node = low.partitions[0].nodes["patch_embed1.conv"]
    np.testing.assert_allclose(node.bias, (conv.bias.detach().double() * scale.double().mean(0) + shift.double().mean(0)).numpy(),
                               rtol=1e-5, atol=1e-6)


class GELUNeuron(nn.Module):
    def forward(self, x):
        return F.gelu(x)


class MyConv(TConv2d):
    pass


@pytest.mark.parametrize("path, replacement, type_name", [
    ("blocks2.0.mlp.lif2", GELUNeuron(), "GELUNeuron"),
    ("blocks1.0.conv1", MyConv(32, 32, 1), "MyConv"),
    ("head.fc", nn.Sequential(nn.Linear(256, 10)), "Sequential"),
    ("blocks3.0.attn.extra_norm", nn.LayerNorm(96), "LayerNorm"),  # an added module, not a replaced one
])
def test_unsupported_module_names_path_and_type(path, replacement, type_name):
    model = active_model()
    parent, attr = path.rsplit(".", 1)
    setattr(model.get_submodule(parent), attr, replacement)
    with pytest.raises(UnsupportedLayerError, match=rf"'{path}' of type .*{type_name}"):
        lower_svformer(model)


def test_relu_twin_refused():
    with pytest.raises(UnsupportedLayerError, match="ReLUNeuron"):
        lower_svformer(active_model(neuron="relu"))
