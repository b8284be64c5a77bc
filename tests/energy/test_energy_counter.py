"""Hand-computed operation counts for the energy counter's rules (see docs/energy.md)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from svformer_deploy.energy import count_ops
from svformer_deploy.models import create_model
from svformer_deploy.models.neurons import PLIF
from svformer_deploy.models.svformer import SpikeAttentionProduct, TConv2d


def _tot(c, cls):
    return c.totals()[cls]


def test_conv_padding_edges_counts_in_bounds_fanout():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    x = torch.ones(1, 1, 3, 3)
    c = count_ops(conv, x, num_steps=None)
    # fan-out of each input pixel in a 3x3 map with a 3x3 kernel, padding 1: corners 4, edges 6, centre 9
    assert _tot(c, "ac") == 4 * 4 + 4 * 6 + 9
    assert _tot(c, "mac") == 0
    d = count_ops(conv, x, num_steps=None, dense=True)
    assert _tot(d, "mac") == 9 * 9  # dense: 9 outputs x 9 taps, padding taps included


def test_strided_conv_each_input_in_one_window():
    conv = nn.Conv2d(1, 2, 2, stride=2, bias=False)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = x[0, 0, 1, 3] = x[0, 0, 3, 2] = 1
    assert _tot(count_ops(conv, x, num_steps=None), "ac") == 3 * 2  # 3 spikes x 1 window x 2 out channels


def test_strided_conv_border_dropped_inputs_have_no_fanout():
    conv = nn.Conv2d(1, 1, 2, stride=2, bias=False)
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 4, 4] = 1  # last row/column never read by a 2x2 stride-2 window over 5x5
    x[0, 0, 0, 0] = 1
    assert _tot(count_ops(conv, x, num_steps=None), "ac") == 1


def test_grouped_conv_fanout_is_out_channels_per_group():
    conv = nn.Conv2d(4, 6, 1, groups=2, bias=False)
    x = torch.zeros(1, 4, 2, 2)
    x[0, 0, 0, 0] = x[0, 1, 1, 1] = x[0, 2, 0, 1] = x[0, 3, 1, 0] = x[0, 3, 0, 0] = 1
    assert _tot(count_ops(conv, x, num_steps=None), "ac") == 5 * 3


def test_depthwise_conv_corner_and_centre():
    conv = nn.Conv2d(2, 2, 3, padding=1, groups=2, bias=False)
    x = torch.zeros(1, 2, 3, 3)
    x[0, 0, 0, 0] = 1  # corner: 4 windows
    x[0, 1, 1, 1] = 1  # centre: 9 windows
    assert _tot(count_ops(conv, x, num_steps=None), "ac") == 13


def test_conv3d_and_bias():
    conv = nn.Conv3d(1, 3, (2, 2, 2))
    x = torch.ones(1, 1, 2, 2, 2)
    c = count_ops(conv, x, num_steps=None)
    assert _tot(c, "ac") == 8 * 3
    assert _tot(c, "bias_add") == 3
    assert _tot(count_ops(conv, x, num_steps=None, dense=True), "mac") == 3 * 8


def test_linear_ac_is_nnz_times_out_features():
    fc = nn.Linear(5, 7)
    x = torch.tensor([[1.0, 0, 1, 0, 0], [0, 0, 0, 0, 1]])
    c = count_ops(fc, x, num_steps=None)
    assert _tot(c, "ac") == 3 * 7
    assert _tot(c, "bias_add") == 2 * 7
    xr = torch.randn(2, 5)
    assert _tot(count_ops(fc, xr, num_steps=None), "mac") == 2 * 5 * 7


def test_nonbinary_integer_input_counts_as_mac():
    fc = nn.Linear(3, 2, bias=False)
    x = torch.tensor([[0.0, 1.0, 2.0]])  # a spike sum: not binary -> dense MACs
    c = count_ops(fc, x, num_steps=None)
    assert (_tot(c, "mac"), _tot(c, "ac")) == (6, 0)


class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.product = SpikeAttentionProduct(0.125)

    def forward(self, q, k, v):
        return self.product(q, k, v)


def test_attention_product_pairs_by_hand():
    # T=1, B=1, 1 head, N=3 tokens, d=2
    q = torch.tensor([[1.0, 0], [1, 1], [0, 0]]).reshape(1, 1, 1, 3, 2)
    k = torch.tensor([[1.0, 1], [0, 1], [1, 0]]).reshape(1, 1, 1, 3, 2)
    v = torch.tensor([[1.0, 0], [1, 1], [0, 0]]).reshape(1, 1, 1, 3, 2)
    m = _Attn()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = m

        def forward(self, x):
            return self.a(q, k, v)

    c = count_ops(Wrap(), torch.zeros(1), num_steps=None)
    # K^T V: pairs over tokens n with k[n, i] = 1 and v[n, j] = 1:
    # n0: k (1,1) v (1,0) -> 2 ; n1: k (0,1) v (1,1) -> 2 ; n2: v all zero -> 0  => 4
    kv = k[0, 0, 0].T @ v[0, 0, 0]  # [[1, 0], [2, 1]]
    assert kv.tolist() == [[1, 0], [2, 1]]
    # Q (K^T V): pairs with q[n, i] = 1 and kv[i, j] != 0: row0 of kv has 1 non-zero, row1 has 2
    # q rows: (1,0) -> 1 ; (1,1) -> 1 + 2 = 3 ; (0,0) -> 0  => 4
    assert _tot(c, "spike_product") == 4 + 4
    assert _tot(c, "scale_mul") == 3 * 2
    assert _tot(c, "mac") == 0


def test_plif_layer_counts_and_timesteps():
    x = torch.randn(4, 2, 3)  # T=4, B=2, 3 units
    c = count_ops(nn.Sequential(OrderedDict(lif=PLIF())), x, num_steps=4, batch=2)
    df = c.df[c.df.layer == "lif"]
    assert sorted(df.timestep.unique().tolist()) == [0, 1, 2, 3]
    assert (df[df.op_class == "neuron_mul"]["count"] == 6).all()
    assert (df[df.op_class == "neuron_add"]["count"] == 18).all()
    assert c.uncounted == {} and c.internal == {"PLIF (module rule)": 1}
    traced = count_ops(nn.Sequential(OrderedDict(lif=PLIF())), x, num_steps=4, batch=2, trace_neurons=True)
    assert traced.df.equals(c.df)
    # the ops inside the neuron are listed: the fused kernel (one call for all timesteps) or, without it, the
    # pure-torch loop (at least one threshold comparison per timestep)
    from svformer_deploy.models._plif_ext import fused_plif_available

    if fused_plif_available():
        assert traced.internal.get("svformer_deploy.plif_forward") == 1
    else:
        assert traced.internal.get("aten.ge", 0) >= 4


def test_time_folded_conv_splits_per_timestep():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = TConv2d(1, 2, 1, bias=False)

        def forward(self, x):
            return self.conv(x)

    x = torch.zeros(3, 2, 1, 2, 2)  # (T=3, B=2, C, H, W)
    x[0, 1, 0, 0, 0] = 1
    x[2, 0, 0, :, :] = 1
    c = count_ops(Net(), x, num_steps=3, batch=2)
    per_t = dict(zip(c.df.timestep, c.df["count"]))
    assert per_t == {0: 1 * 2, 2: 4 * 2}


def test_uncounted_ops_are_listed_never_dropped():
    class Net(nn.Module):
        def forward(self, x):
            return torch.softmax(x, -1)

    c = count_ops(Net(), torch.randn(2, 3), num_steps=None)
    assert c.uncounted == {"aten._softmax": {"calls": 1, "elements": 6}}


def test_ann_twin_dense_macs_equal_flopcounter_half():
    torch.manual_seed(0)
    m = create_model("svformer_tiny", neuron="relu").eval()
    x = torch.randn(1, *m.config.input_shape)
    c = count_ops(m, x, dense=True)
    with FlopCounterMode(display=False) as f, torch.no_grad():
        m(x)
    assert 2 * c.dense_macs == f.get_total_flops()
    # the ANN twin's real activations give the same MACs without forcing dense
    assert count_ops(m, x).totals()["mac"] == c.dense_macs


def test_svformer_tiny_exact_counts_consistent_with_spikes():
    from svformer_deploy.models import record_spikes

    torch.manual_seed(0)
    m = create_model("svformer_tiny").eval()
    with torch.no_grad():
        for p in m.parameters():  # make neurons fire
            if p.dim() > 1:
                p.mul_(4)
    x = torch.randn(2, *m.config.input_shape)
    with record_spikes(m) as rec, torch.no_grad():
        m(x)
    c = count_ops(m, x)
    df = c.df
    # blocks1.0.conv1 is a 1x1 conv fed by blocks1.0.lif: AC per timestep = nnz(spikes[t]) x C_out
    s = rec.spikes["blocks1.0.lif"]
    cout = m.blocks1[0].conv1.out_channels
    got = df[(df.layer == "blocks1.0.conv1") & (df.op_class == "ac")].set_index("timestep")["count"]
    for t in range(s.shape[0]):
        assert got.get(t, 0) == int(s[t].count_nonzero()) * cout
    # qkv linear fed by lif_in spikes: nnz x 3C
    s = rec.spikes["blocks3.0.attn.lif_in"]
    got = df[(df.layer == "blocks3.0.attn.qkv") & (df.op_class == "ac")]["count"].sum()
    assert got == int(s.count_nonzero()) * m.blocks3[0].attn.qkv.out_features
    # head Conv3d (kernel spans T x H' x W', groups = C/2): every input element enters exactly one window of
    # each of its group's 2 output channels, booked at the spike's timestep
    s = rec.spikes["head.lif"]
    got = df[(df.layer == "head.conv3d") & (df.op_class == "ac")].set_index("timestep")["count"]
    assert int(s.count_nonzero()) > 0
    for t in range(s.shape[0]):
        assert got.get(t, 0) == 2 * int(s[t].count_nonzero())
    assert c.uncounted == {}
    assert set(df.timestep) <= set(range(-1, m.config.num_frames))
    # only the ops after the head's time collapse lack a timestep (B=2 != T: residual adds are (T, B, ...))
    assert sorted(df[df.timestep == -1].layer.unique()) == ["head.bn", "head.conv3d", "head.fc"]
    res = df[df.op_class == "residual_add"]
    assert sorted(res.timestep.unique()) == list(range(m.config.num_frames))


def test_per_timestep_batchnorm_split_and_folding():
    torch.manual_seed(0)
    m = create_model("svformer_tiny", bn="per_timestep").eval()
    x = torch.randn(2, *m.config.input_shape)
    c = count_ops(m, x)
    df = c.df
    bn = df[(df.layer == "patch_embed1.bn") & (df.op_class == "bn_mul")].set_index("timestep")["count"]
    C, H = m.config.embed_dims[0], m.config.img_size // 4
    assert bn.to_dict() == {t: 2 * C * H * H for t in range(m.config.num_frames)}
    # per-timestep BN is never folded; the head's BatchNorm3d (time-invariant) is
    f = count_ops(m, x, fold_bn=True).df
    assert f[f.op_class == "bn_folded"].layer.unique().tolist() == ["head.bn"]
    shared = create_model("svformer_tiny", bn="shared").eval()
    g = count_ops(shared, x, fold_bn=True).totals()
    assert g["bn_mul"] == 0 and g["bn_folded"] > 0


def test_counter_unwinds_after_an_error_inside_a_neuron():
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    class Boom(PLIF):
        def forward(self, x):
            raise RuntimeError("boom")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = Boom()

        def forward(self, x):
            return self.lif(x)

    with pytest.raises(RuntimeError, match="boom"):
        count_ops(Net(), torch.randn(2, 1, 3), num_steps=2, batch=1)
    assert _get_current_dispatch_mode() is None
    assert count_ops(nn.Linear(3, 2), torch.ones(1, 3), num_steps=None).totals()["ac"] == 6


def _conv_events_reference(conv: nn.Conv2d, x: torch.Tensor, steps: int) -> list[int]:
    """Per-timestep AC of a binary input, by the rule's definition computed in float64: sum over the non-zero
    input elements of their in-bounds fan-out F = conv_transpose(ones(out), ones(W))."""
    w = torch.ones(conv.weight.shape, dtype=torch.float64)
    out_shape = nn.functional.conv2d(x[:1].double(), w, None, conv.stride, conv.padding).shape
    fan = nn.functional.conv_transpose2d(torch.ones(out_shape, dtype=torch.float64), w, None, conv.stride,
                                         conv.padding)
    return [int(v) for v in ((x.double() != 0) * fan).reshape(steps, -1).sum(1)]


@pytest.mark.parametrize("side", [16, 64])  # 8 x 16 x 16 x 576 < 2**24 (float32 product); 8 x 64 x 64 x 576 > 2**24
def test_binary_conv_counts_are_exact_on_both_sides_of_the_float32_bound(side):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 64, 3, padding=1, bias=False)
    x = (torch.rand(2, 8, side, side) < 0.7).float()  # T=2 timesteps of B=1 image, time-folded
    c = count_ops(conv, x, num_steps=2, batch=1)
    got = c.df[c.df.op_class == "ac"].set_index("timestep")["count"]
    assert [int(got[t]) for t in range(2)] == _conv_events_reference(conv, x, 2)


def test_float32_split_only_within_its_exact_range():
    from svformer_deploy.energy.counter import OpCounter

    ctx = OpCounter(nn.Identity(), 2, 1)
    v = torch.tensor([[2.0**24 - 1, 1, 1], [1, 1, 1]])  # 2**24 + 1 is not a float32
    assert float(v[0].sum()) != 2**24 + 1  # what a float32 sum gives (so this test can fail)
    assert ctx.split(v, ("lead", 0), bound=2**24 - 1).tolist() == [2**24 + 1, 3]
    small = torch.full((2, 1000), 3.0)
    s = ctx.split(small, ("lead", 0), bound=3)
    assert s.dtype == torch.float64 and s.tolist() == [3000.0, 3000.0]


@pytest.mark.parametrize("kv_binary", [True, False])
def test_attention_product_reads_k_transpose_v_as_binary_exactly_when_it_is(kv_binary):
    from svformer_deploy.energy import rules

    # T=1, B=1, 1 head, N=3 tokens, d=2; K^T V = [[1, 0], [0, 1]] or [[2, 0], [0, 1]]
    q = torch.tensor([[1.0, 0], [1, 1], [0, 1]]).reshape(1, 1, 1, 3, 2)
    k = torch.tensor([[1.0, 0], [0, 1], [1 - float(kv_binary), 0]]).reshape(1, 1, 1, 3, 2)
    v = torch.tensor([[1.0, 0], [0, 1], [1, 0]]).reshape(1, 1, 1, 3, 2)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = _Attn()

        def forward(self, x):
            return self.a(q, k, v)

    fast = count_ops(Wrap(), torch.zeros(1), num_steps=None)
    mem = fast.memory.set_index("layer").loc["a.product"]
    kv_values = 2 * 2
    # K^T V reads K^T and V (binary, 6 values each), then Q (binary, 6) and K^T V (4 values, binary or real)
    assert mem["binary_act_values"] == 6 * 3 + (kv_values if kv_binary else 0)
    assert mem["real_act_values"] == (0 if kv_binary else kv_values)
    saved = rules._MODULE_RULES.pop(SpikeAttentionProduct)
    try:  # the aten rules (bmm), which check K^T V's values, agree
        slow = count_ops(Wrap(), torch.zeros(1), num_steps=None)
    finally:
        rules._MODULE_RULES[SpikeAttentionProduct] = saved
    assert fast.df.equals(slow.df)
    assert fast.memory.drop(columns="layer").sum().equals(slow.memory.drop(columns="layer").sum())


# ---------------------------------------------------------------------------------------------- whole models
def _binary(x):
    return bool(((x == 0) | (x == 1)).all())


def _fanout_by_autograd(conv, shape):
    """In-bounds fan-out of every input element of ``conv`` on a (1, C, ...) input: d sum(conv(x, ones)) / dx,
    in float64 (the number of (output position, output channel) pairs each input element reaches)."""
    x = torch.zeros((1, *shape[1:]), dtype=torch.float64, requires_grad=True)
    f = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}[len(conv.kernel_size)]
    f(x, torch.ones(conv.weight.shape, dtype=torch.float64), None, conv.stride, conv.padding, conv.dilation,
      conv.groups).sum().backward()
    return x.grad


def _reference_counts(model, x, *, dense=False, fold_bn=False, skip_zero_macs=False):
    """The rules of docs/energy.md applied by hand, layer by layer, to the operands each layer received in a
    plain forward (forward hooks; no counter involved): {(layer, op_class): count} for every convolution, linear
    layer, BatchNorm, neuron and attention product."""
    from svformer_deploy.models.neurons import ReLUNeuron
    from svformer_deploy.models.norm import TemporalBatchNorm
    from svformer_deploy.models.recording import forward_hooks

    seen = []
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm3d, TemporalBatchNorm, PLIF, ReLUNeuron,
             SpikeAttentionProduct)
    hooks = [(m, lambda mod, args, out, n=n: seen.append((n, mod, args, out)))
             for n, m in model.named_modules() if isinstance(m, kinds)]
    with forward_hooks(hooks), torch.no_grad():
        model(x)
    ref = {}

    def add(layer, op_class, n):
        ref[(layer, op_class)] = ref.get((layer, op_class), 0) + int(n)

    for name, mod, args, out in seen:
        a = args[0]
        spikes = not dense and _binary(a)
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            a = a.flatten(0, 1) if a.dim() == mod.weight.dim() + 1 else a  # TConv2d: (T, B, ...) time-folded
            if spikes or (skip_zero_macs and not dense):
                add(name, "ac" if spikes else "mac", (_fanout_by_autograd(mod, a.shape) * (a != 0)).sum())
            else:
                add(name, "mac", out.numel() * mod.weight[0].numel())
            if mod.bias is not None:
                add(name, "bias_add", out.numel())
        elif isinstance(mod, nn.Linear):
            rows = a.numel() // mod.in_features
            if spikes or (skip_zero_macs and not dense):
                add(name, "ac" if spikes else "mac", int((a != 0).sum()) * mod.out_features)
            else:
                add(name, "mac", rows * mod.in_features * mod.out_features)
            if mod.bias is not None:
                add(name, "bias_add", out.numel())
        elif isinstance(mod, (nn.BatchNorm3d, TemporalBatchNorm)):
            shared = not (isinstance(mod, TemporalBatchNorm) and mod.mode == "per_timestep")
            for c in (("bn_folded",) if fold_bn and shared else ("bn_mul", "bn_add")):
                add(name, c, a.numel())
        elif isinstance(mod, PLIF):
            add(name, "neuron_mul", a.numel())
            add(name, "neuron_add", 3 * a.numel())
        elif isinstance(mod, ReLUNeuron):
            add(name, "activation", a.numel())
        else:  # the attention product Q (K^T V): both products by the matmul rule, then the scale
            q, k, v = args
            kt, n, d = k.transpose(-2, -1), q.shape[-2], q.shape[-1]
            if dense or not any(_binary(t) for t in (q, k, v)):
                add(name, "mac", 2 * q.numel() // (n * d) * n * d * d)
            else:
                kv = kt @ v
                add(name, "spike_product", ((kt != 0).double() @ (v != 0).double().sum(-1, keepdim=True)).sum()
                    + ((q != 0).double() @ (kv != 0).double().sum(-1, keepdim=True)).sum())
            add(name, "scale_mul", out.numel())
    return ref


def _check_against_reference(c, model, x, **kw):
    """Every count of the layers the reference covers equals it, and no other layer books a synaptic op."""
    ref = _reference_counts(model, x, **kw)
    layers = {layer for layer, _ in ref}
    got = c.df[c.df.layer.isin(layers)].groupby(["layer", "op_class"])["count"].sum().to_dict()
    assert got == {k: v for k, v in ref.items() if v}
    synaptic = set(c.df.loc[c.df.op_class.isin(["mac", "ac", "spike_product"]), "layer"])
    assert synaptic <= layers


@pytest.mark.parametrize("model_kw,count_kw", [({}, {}), ({}, {"dense": True}), ({}, {"fold_bn": True}),
                                               ({}, {"skip_zero_macs": True}), ({"bn": "per_timestep"}, {}),
                                               ({"neuron": "relu"}, {"skip_zero_macs": True})])
def test_svformer_tiny_counts_every_layer_by_its_rule_in_every_mode(model_kw, count_kw):
    """Each count of the same model (three clips, neurons firing at different rates) equals the rules applied by
    hand to what each layer received; nothing a count leaves behind changes the next one."""
    torch.manual_seed(0)
    m = create_model("svformer_tiny", **model_kw).eval()
    with torch.no_grad():
        for p in m.parameters():  # neurons fire at different rates on different clips
            if p.dim() > 1:
                p.mul_(3)
    clips = [torch.randn(2, *m.config.input_shape) * s for s in (0.5, 1.0, 3.0)]
    counts = [count_ops(m, x, **count_kw) for x in clips]
    for x, c in zip(clips, counts):
        _check_against_reference(c, m, x, **count_kw)
        assert c.uncounted == {}
    assert counts[0].totals() != counts[2].totals() or count_kw.get("dense")  # each count saw its own clips


class _Switch(nn.Module):
    """Runs its second conv only when ``use_b`` is set (Python state, not data)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 1)
        self.use_b = True

    def forward(self, x):
        y = (self.a(x) > 0).float()
        return self.b(y) if self.use_b else y


def test_a_count_follows_the_python_state_of_the_model():
    torch.manual_seed(0)
    m, x = _Switch(), (torch.rand(1, 1, 6, 6) > 0.5).float()
    _check_against_reference(count_ops(m, x, num_steps=None), m, x)
    m.use_b = False
    got = count_ops(m, x, num_steps=None)
    _check_against_reference(got, m, x)
    assert "b" not in set(got.df["layer"])


def test_a_forward_that_branches_on_values_is_counted_on_the_branch_it_took():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.a(x) if x.sum() > 4 else self.b(x) + 1

    m = Branchy()
    few, many = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    few[0, 0, 0, 0] = 1
    for x, layers in ((many, {"a"}), (few, {"b", "model"}), (many, {"a"})):
        c = count_ops(m, x, num_steps=None)
        assert set(c.df["layer"]) == layers
        _check_against_reference(c, m, x)


def test_a_rule_registered_between_counts_counts_the_next_one(scratch_registry):
    from svformer_deploy.energy import register_rule

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 1))
    x = (torch.rand(1, 1, 5, 5) > 0.5).float()
    first = count_ops(m, x, num_steps=None)
    assert first.totals()["activation"] == 2 * 25

    def half_relu(ctx, args, kwargs, out):
        """ReLU counted as half an activation per element (a user's own convention)."""
        ctx.book("activation", out.numel() // 2)

    register_rule(torch.ops.aten.relu)(half_relu)
    got = count_ops(m, x, num_steps=None)
    assert got.totals()["activation"] == 25 and "half_relu" in got.rules_used
    assert got.totals()["ac"] == first.totals()["ac"]


def test_an_error_during_a_count_leaves_no_hook_or_mode_behind():
    from torch.nn.modules import module as module_globals
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    m = _Switch()
    x = (torch.rand(1, 1, 6, 6) > 0.5).float()
    hooks = (len(module_globals._global_forward_hooks), len(module_globals._global_forward_pre_hooks))
    with pytest.raises(RuntimeError):
        count_ops(m, torch.rand(1, 3, 6, 6), num_steps=None)  # wrong channel count: conv a raises
    assert _get_current_dispatch_mode() is None
    assert (len(module_globals._global_forward_hooks), len(module_globals._global_forward_pre_hooks)) == hooks
    _check_against_reference(count_ops(m, x, num_steps=None), m, x)


def test_functional_convolutions_with_same_shaped_weights_each_book_their_own_weight():
    class TwoKernels(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.ones(2, 1, 3, 3))
            self.w2 = nn.Parameter(torch.ones(2, 1, 3, 3))

        def forward(self, x):  # functional convs: counted by the aten rule, one layer ("model") for both
            return torch.nn.functional.conv2d(x, self.w1, padding=1) + torch.nn.functional.conv2d(x, self.w2,
                                                                                               padding=1)

    m, x = TwoKernels(), (torch.rand(1, 1, 5, 5) > 0.5).float()
    for _ in range(2):  # every count books both kernels
        mem = count_ops(m, x, num_steps=None).memory.set_index("layer").loc["model"]
        assert mem["weight_values"] == 2 * 18  # both kernels' footprints, not one kernel twice
        assert mem["weight_reads"] == 2 * 18 and mem["binary_act_values"] == 2 * 25


class _Configurable(nn.Module):
    """Two binary convs; ``use_c2`` and ``extra`` are Python flags its forward reads."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.use_c2, self.extra = True, False

    def forward(self, x):
        y = (self.bn(self.c1(x)) > 0).float()
        if self.use_c2:
            y = (self.c2(y) > 0).float()
        if self.extra:
            y = y * 2 + 1
        return y


def _flag(name, value):
    def change(m):
        setattr(m, name, value)
    return change


@pytest.mark.parametrize("before,change,between", [
    (_flag("use_c2", False), _flag("use_c2", True), {}),  # a module the first count never saw called
    (None, _flag("extra", True), {"scale_mul": 256, "add": 256}),  # ops between the modules: y * 2 + 1
    (None, lambda m: setattr(m.c1, "stride", (2, 2)), {}),
    (None, lambda m: setattr(m.c2, "padding", (0, 0)), {}),
    (None, lambda m: setattr(m.c2, "dilation", (2, 2)), {}),
    (None, lambda m: m.c1.register_forward_hook(lambda mod, i, o: o + 1), {"add": 256}),  # after c1 returned
    (None, lambda m: m.bn.train(), {}),
], ids=["module-added-by-flag", "ops-added-by-flag", "stride", "padding", "dilation", "hook", "submodule-train"])
def test_a_count_follows_every_change_of_the_model_between_counts(before, change, between):
    """Changes a user makes between two counts of the same model (from a new user's report): the second count
    is the rules applied to the changed model, never what the first count saw. ``between``: the ops booked
    outside the layers (1 x 4 x 8 x 8 = 256 elements)."""
    torch.manual_seed(0)
    m, x = _Configurable().eval(), (torch.rand(1, 2, 8, 8) > 0.5).float()
    if before is not None:
        before(m)
    count_ops(m, x, num_steps=None)
    change(m)
    modes = [mod.training for mod in m.modules()]
    got = count_ops(m, x, num_steps=None)
    assert [mod.training for mod in m.modules()] == modes  # each module's mode is given back
    m.eval()  # (a count runs every module in eval mode: so does the reference)
    _check_against_reference(got, m, x)
    assert got.df[got.df.layer == "model"].groupby("op_class")["count"].sum().to_dict() == between


class _SpikingStack(nn.Module):
    """Time-major (T, B, C, H, W): a conv on the real input, PLIF, a 3x3 conv on its spikes, PLIF, a linear layer
    on the tokens. ``copy`` hands the 3x3 conv a copy of the spikes, which is binary by value but no longer a
    neuron's output."""

    def __init__(self):
        super().__init__()
        self.inp = TConv2d(2, 4, 3, padding=1)
        self.lif1, self.lif2 = PLIF(), PLIF()
        self.conv = TConv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.copy = False

    def forward(self, x):
        s = self.lif1(self.inp(x) * 4)
        if self.copy:
            s = s.clone()
        s = self.lif2(self.conv(s) * 4)
        return self.fc(s.flatten(3).transpose(2, 3))


def _spiking_stack_clips(n, binary=False):
    torch.manual_seed(1)
    clips = [torch.randn(3, 2, 2, 6, 6) for _ in range(n)]
    return [(c > 0).float() for c in clips] if binary else clips


@pytest.mark.parametrize("copy", [False, True], ids=["neuron-output", "copy-of-spikes"])
def test_spike_fed_layers_are_counted_per_timestep_by_their_rule(copy):
    """Spikes by construction (a neuron's output) and a copy of them (binary by value) give the same counts."""
    m = _SpikingStack().eval()
    m.copy = copy
    counts = []
    for x in _spiking_stack_clips(3):
        c = count_ops(m, x, num_steps=3, batch=2)
        _check_against_reference(c, m, x)
        per_t = c.df[(c.df.layer == "conv") & (c.df.op_class == "ac")].set_index("timestep")["count"]
        with torch.no_grad():
            s = m.lif1(m.inp(x) * 4)  # the spikes the 3x3 conv reads, (T, B, C, H, W)
        fan = _fanout_by_autograd(m.conv, s.flatten(0, 1).shape)
        assert per_t.to_dict() == {t: int((fan * s[t]).sum()) for t in range(3) if (fan * s[t]).sum()}
        counts.append(c.totals()["ac"])
    assert len(set(counts)) == 3  # each count's own spikes


def test_a_real_input_that_turns_binary_is_counted_as_spikes():
    m = _SpikingStack().eval()
    real, binary = _spiking_stack_clips(1)[0], _spiking_stack_clips(1, binary=True)[0]
    a, b = count_ops(m, real, num_steps=3, batch=2), count_ops(m, binary, num_steps=3, batch=2)
    _check_against_reference(a, m, real)
    _check_against_reference(b, m, binary)
    assert "mac" in set(a.df.loc[a.df.layer == "inp", "op_class"])
    assert set(b.df.loc[b.df.layer == "inp", "op_class"]) == {"ac", "bias_add"}


def test_tables_are_made_once_on_first_access_and_totals_agree_with_them():
    m = create_model("svformer_tiny").eval()
    x = torch.randn(1, *m.config.input_shape)
    for c in (count_ops(m, x), count_ops(m, x)):
        t = c.totals()
        assert c.df is c.df and c.memory is c.memory
        by_table = c.df.groupby("op_class")["count"].sum()
        assert t == {k: int(by_table.get(k, 0)) for k in t}
