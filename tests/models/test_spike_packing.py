"""Spike packing (svformer_deploy.models.spike_packing): saved spike tensors kept as bits in a training forward;
exact round trips of every layout and dtype, bit-identical training gradients, the float spikes really freed,
and no hooks outside a grad-enabled eager forward."""

from __future__ import annotations

import math
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from svformer_deploy.models import PLIF, create_model, plif_multistep
from svformer_deploy.models import spike_packing as sp
from svformer_deploy.models._plif_ext import fused_plif_available
from svformer_deploy.models.neurons import _PLIFMultiStep


needs_packing = pytest.mark.skipif(
    sp.INTERNALS_PROBLEM is not None,
    reason=f"spike packing is off on this torch ({sp.INTERNALS_PROBLEM}); its public fallback is tested below")


def _spikes(shape=(4, 3, 6, 5, 7), dtype=torch.float32) -> torch.Tensor:
    """PLIF output spikes (about half of them fire) that require grad, as inside a training forward."""
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 1).to(dtype).requires_grad_()
    return plif_multistep(x, torch.tensor(0.0, requires_grad=True))


def _roundtrip(t: torch.Tensor) -> torch.Tensor:
    packed = sp.pack(t)
    assert isinstance(packed, sp.PackedSpikes), "a spike tensor was saved as it is"
    assert packed.bits.dtype == torch.uint8 and packed.bits.numel() == math.ceil(t.numel() / 8)
    out = sp.unpack(packed)
    assert out.dtype == t.dtype and out.shape == t.shape and out.stride() == t.stride()
    assert out.storage_offset() == t.storage_offset()
    assert torch.equal(out, t.detach())
    return out


VIEWS = {
    "itself": lambda s: s,
    "flatten (TConv2d input)": lambda s: s.flatten(0, 1),
    "2-D view (Linear input)": lambda s: s.reshape(-1, s.shape[-1]),
    "transpose (K^T)": lambda s: s.transpose(-2, -1),
    "permute (head input)": lambda s: s.permute(1, 2, 0, 3, 4),
    "slice with a storage offset": lambda s: s[1:],
    "select": lambda s: s[2],
    "channels-last copy": lambda s: s.flatten(0, 1).contiguous(memory_format=torch.channels_last),
    "clone of a transpose": lambda s: s.transpose(0, 2).clone(),
    "float16 cast (autocast)": lambda s: s.to(torch.float16),
    "bfloat16 cast of a view": lambda s: s.flatten(0, 1).to(torch.bfloat16),
    "float64 cast": lambda s: s.double(),
}


@pytest.fixture(params=["C++ kernels", "torch ops"])
def kernels(request, monkeypatch):
    """Both implementations of the packing: the C++ one (CPU, when the extension builds) and the torch one (CUDA,
    or no compiler), which must write the same bits."""
    if request.param == "C++ kernels":
        if not fused_plif_available():
            pytest.skip("no C++ compiler: the extension is not built")
    else:
        monkeypatch.setattr(sp, "_kernels", lambda device: False)
    return request.param


@pytest.mark.parametrize("view", list(VIEWS))
def test_spike_views_and_copies_round_trip_exactly(view, kernels):
    _roundtrip(VIEWS[view](_spikes()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 1, 8), (1, 1, 1), (2, 65, 9)])  # numel % 8 != 0, == 0, one
def test_every_dtype_and_size_round_trips(dtype, shape, kernels):
    _roundtrip(_spikes(shape, dtype))


def test_bit_order_is_the_documented_one(kernels):
    """Bit i of byte j is element 8 j + i (memory order), the same in both implementations."""
    s = _spikes((2, 3, 7))
    flat = s.detach().reshape(-1)
    want = [sum(int(flat[8 * j + i]) << i for i in range(min(8, flat.numel() - 8 * j)))
            for j in range(math.ceil(flat.numel() / 8))]
    assert sp.pack(s).bits.tolist() == want


def test_the_pure_torch_plif_output_is_packed_too():
    x = torch.randn(4, 2, 9, requires_grad=True) * 2
    _roundtrip(_PLIFMultiStep.apply(x, torch.tensor(0.3, requires_grad=True), 1.0, 2.0))


def test_the_plif_nodes_packing_looks_for_are_the_neuron_layers_own():
    """spike_packing names the PLIF backward nodes instead of importing neurons (no import cycle): a renamed
    autograd function must fail here, not silently stop the packing."""
    from svformer_deploy.models.neurons import _PLIFFused

    assert sp._PLIF_NODES == {_PLIFFused._backward_cls.__name__, _PLIFMultiStep._backward_cls.__name__}


NOT_SPIKES = {
    "real-valued activation": lambda s: torch.randn(4, 5, requires_grad=True) * 1.0,
    "0/1 values not made by a PLIF layer": lambda s: (torch.rand(40) > 0.5).float().requires_grad_(),
    "arithmetic on spikes": lambda s: s * 2,
    "spikes detached from the graph": lambda s: s.detach(),
    "gappy view": lambda s: s[:, :, ::2],
    "overlapping view": lambda s: s[:1].expand(3, *s.shape[1:]),
}


@pytest.mark.parametrize("case", list(NOT_SPIKES))
def test_other_tensors_are_saved_as_they_are(case):
    t = NOT_SPIKES[case](_spikes())
    assert sp.pack(t) is t
    assert sp.unpack(t) is t


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, packing: bool):
    """Logits and parameter gradients of one training step, from the same parameters and random state."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # DropPath draws the same masks
    off = torch.autograd.graph.disable_saved_tensors_hooks("packing off for the comparison")
    with (torch.enable_grad() if packing else off):
        logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters()}


def _counting_pack(monkeypatch) -> dict[str, int]:
    """Count what the pack hook receives and returns: tensors and bytes in, bytes saved."""
    stats = {"packed": 0, "bytes_in": 0, "bytes_saved": 0, "spike_bytes_in": 0}
    real = sp.pack

    def pack(t):
        out = real(t)
        nbytes = t.numel() * t.element_size()
        stats["bytes_in"] += nbytes
        if isinstance(out, sp.PackedSpikes):
            stats["packed"] += 1
            stats["spike_bytes_in"] += nbytes
            stats["bytes_saved"] += out.bits.numel()
        else:
            stats["bytes_saved"] += nbytes
        return out

    monkeypatch.setattr(sp, "pack", pack)
    return stats


@needs_packing
@pytest.mark.parametrize("overrides", [{}, {"bn": "per_timestep", "drop_path_rate": 0.2}],
                         ids=["svformer_tiny", "per-timestep BN and drop path"])
def test_training_gradients_are_bit_identical_with_and_without_packing(overrides, monkeypatch):
    stats = _counting_pack(monkeypatch)
    model = create_model("svformer_tiny", **overrides).train()
    x = torch.randn(2, *model.config.input_shape)
    y = torch.tensor([1, 7])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    logits, grads = _step(model, x, y, packing=True)
    assert stats["packed"] >= sum(isinstance(m, PLIF) for m in model.modules())  # every layer's spikes packed
    model.load_state_dict(state)  # BatchNorm running statistics as before the first step
    logits_ref, grads_ref = _step(model, x, y, packing=False)
    assert torch.equal(logits, logits_ref)
    assert grads.keys() == grads_ref.keys()
    for name, g in grads.items():
        assert g is not None and torch.equal(g, grads_ref[name]), name


@needs_packing
def test_saved_bytes_drop_and_float_spikes_are_freed_during_the_forward(monkeypatch):
    stats = _counting_pack(monkeypatch)
    model = create_model("svformer_tiny").train()
    x = torch.randn(2, *model.config.input_shape)
    neurons = [n for n, m in model.named_modules() if isinstance(m, PLIF)]
    alive: dict[bool, set[str]] = {}
    for packing in (True, False):
        refs: dict[str, weakref.ref] = {}
        hooks = [model.get_submodule(n).register_forward_hook(
            lambda _m, _a, out, n=n: refs.__setitem__(n, weakref.ref(out))) for n in neurons]
        off = torch.autograd.graph.disable_saved_tensors_hooks("packing off for the comparison")
        with (torch.enable_grad() if packing else off):
            loss = model(x).sum()  # the graph, and all it saved, stays alive until backward
        alive[packing] = {n for n, r in refs.items() if r() is not None}
        for h in hooks:
            h.remove()
        loss.backward()
    # without packing the graph keeps every layer's float spikes (but the local path's: its depthwise conv saves
    # a channels-last copy); with packing it keeps none of them
    assert alive[False] == set(neurons) - {"local_path.lif"}
    assert alive[True] == set()
    # what the hook saved: the spike tensors' bytes / 32 (float32 -> 1 bit, rounded up to whole bytes), the rest
    # unchanged; spikes are a large share of what a training forward saves
    assert stats["spike_bytes_in"] > 0.2 * stats["bytes_in"]
    assert stats["bytes_saved"] <= stats["bytes_in"] - stats["spike_bytes_in"] * (1 - 1 / 32) + stats["packed"]


@needs_packing
def test_hooks_only_in_a_grad_enabled_eager_forward():
    assert sp.packing_applies()
    with torch.no_grad():
        assert not sp.packing_applies()
    with torch.inference_mode():
        assert not sp.packing_applies()
    with torch.autograd.graph.disable_saved_tensors_hooks("off"):
        assert not sp.packing_applies()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):  # someone else's hooks stay in charge
        assert not sp.packing_applies()
    seen = []  # the ONNX export traces with TorchScript, grad mode on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated (the exporter still uses it)
        torch.jit.trace(lambda x: seen.append((torch.is_grad_enabled(), sp.packing_applies())) or x * 2,
                        torch.ones(2), check_trace=False)
    assert seen == [(True, False)]
    with sp.pack_saved_spikes() as on:
        assert on and torch._C._autograd._top_saved_tensors_default_hooks(False) == (sp.pack, sp.unpack)
    with torch.no_grad(), sp.pack_saved_spikes() as on:
        assert not on and torch._C._autograd._top_saved_tensors_default_hooks(False) is None


def test_activation_checkpointing_keeps_its_hooks_and_gradients():
    model = create_model("svformer_tiny").eval()  # eval: BN statistics unchanged by the recomputation
    x = torch.randn(1, *model.config.input_shape)
    model(x).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    checkpoint(model, x, use_reentrant=False).sum().backward()
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, ref[n]), n


needs_kernels = pytest.mark.skipif(not fused_plif_available(), reason="no C++ compiler: the extension is not built")


@needs_kernels
@needs_packing
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_the_fused_forward_writes_the_bits_pack_would_write(dtype):
    x = (torch.randn(5, 3, 4, 6, dtype=torch.float64) * 2 + 1).to(dtype).requires_grad_()  # 72 per step
    w = torch.tensor(0.2, requires_grad=True)
    with sp.pack_saved_spikes():
        s = plif_multistep(x, w)
    assert torch.equal(s, plif_multistep(x, w))  # the same spikes as without bits
    bits = sp._ready_bits(s)
    assert bits is not None and torch.equal(bits, sp._pack_bits(s))
    assert torch.equal(sp._ready_bits(s.flatten(0, 1)), bits)  # a view of all of it in the same order
    assert sp._ready_bits(s.transpose(0, 1).contiguous()) is None and sp._ready_bits(s[1:]) is None


@needs_kernels
def test_no_bits_outside_packing_or_when_a_step_is_not_whole_bytes():
    w = torch.tensor(0.2, requires_grad=True)
    assert sp._ready_bits(plif_multistep(torch.randn(4, 16, requires_grad=True), w)) is None
    with sp.pack_saved_spikes():
        assert sp._ready_bits(plif_multistep(torch.randn(4, 13, requires_grad=True), w)) is None  # 13 per step
    with torch.no_grad(), sp.pack_saved_spikes():
        assert sp._ready_bits(plif_multistep(torch.randn(4, 16), w)) is None


@needs_packing
@needs_kernels
def test_bits_of_spikes_changed_in_place_are_not_used():
    with sp.pack_saved_spikes():
        s = plif_multistep(torch.randn(4, 16, requires_grad=True) * 3, torch.tensor(0.0, requires_grad=True))
    assert sp._ready_bits(s) is not None
    s.detach()[0] = 1.0 - s.detach()[0]  # through an alias: the spike tensor's version changes
    assert sp._ready_bits(s) is None
    assert torch.equal(sp.unpack(sp.pack(s)), s.detach())


@needs_packing
@needs_kernels
def test_a_training_forward_packs_once_per_spike_tensor(monkeypatch):
    """The fused forward's bits are used for every saved spike tensor but the local path's channels-last copy."""
    stats = _counting_pack(monkeypatch)
    calls = []
    real = sp._pack_bits
    monkeypatch.setattr(sp, "_pack_bits", lambda t: calls.append(t.shape) or real(t))
    model = create_model("svformer_tiny").train()
    model(torch.randn(2, *model.config.input_shape)).sum().backward()
    assert stats["packed"] == sum(isinstance(m, PLIF) for m in model.modules())
    assert len(calls) == 1 and calls[0][1] == model.config.embed_dims[2]  # (T*B, C3, H, W), channels-last


# ---- another torch: the private internals checked at import, and the public path when one differs ----

def test_this_torch_has_every_internal_packing_uses():
    """Packing is on wherever torch has its internals; torch 2.4 lacks the hook-stack query (measured on 2.4.1,
    docs/install.md), and there packing must be off for exactly that reason."""
    if torch.torch_version.TorchVersion(torch.__version__) < (2, 5):
        assert sp.internals_problem() == sp.INTERNALS_PROBLEM == (
            "torch._C._autograd._top_saved_tensors_default_hooks is missing")
    else:
        assert sp.internals_problem() is None and sp.INTERNALS_PROBLEM is None


@needs_packing
@pytest.mark.parametrize("break_it, problem", [
    (lambda mp: mp.delattr(torch._C._autograd, "_top_saved_tensors_default_hooks"),
     "_top_saved_tensors_default_hooks is missing"),
    (lambda mp: mp.setattr(torch._C._autograd, "_top_saved_tensors_default_hooks", lambda ignore_tracing: None),
     "does not return the active hooks"),
    (lambda mp: mp.delattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing"), "is_fx_symbolic_tracing is missing"),
    (lambda mp: mp.setitem(sp._VIEW_PROBES, "ViewBackward9", lambda s: s.view(-1)), "not 'ViewBackward9'"),
    (lambda mp: mp.setattr(torch.autograd.function.FunctionMeta, "__init__", type.__init__), "_backward_cls is missing"),
], ids=["hook stack missing", "hook stack different", "fx query missing", "node renamed", "no backward class"])
def test_a_missing_or_different_internal_is_named(break_it, problem, monkeypatch):
    break_it(monkeypatch)
    found = sp.internals_problem()
    assert found is not None and problem in found


def test_without_the_internals_packing_is_off_and_gradients_are_the_same(monkeypatch):
    model = create_model("svformer_tiny").train()
    x, y = torch.randn(2, *model.config.input_shape), torch.tensor([1, 7])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    logits, grads = _step(model, x, y, packing=True)
    model.load_state_dict(state)
    stats = _counting_pack(monkeypatch)
    monkeypatch.setattr(sp, "INTERNALS_PROBLEM", "torch._C._autograd._top_saved_tensors_default_hooks is missing")
    assert not sp.packing_applies() and not sp.packing_now()
    with sp.pack_saved_spikes() as on:
        assert not on and torch.autograd.graph.saved_tensors_hooks  # the public path: autograd saves floats
    logits_off, grads_off = _step(model, x, y, packing=True)
    assert stats["packed"] == 0 and stats["bytes_in"] == 0  # the pack hook never ran
    assert torch.equal(logits, logits_off)
    for name, g in grads.items():
        assert torch.equal(g, grads_off[name]), name


def test_at_import_one_warning_line_names_the_missing_internal():
    import subprocess
    import sys

    code = ("import warnings, torch\n"
            "if hasattr(torch._C._autograd, '_top_saved_tensors_default_hooks'):  # torch 2.4 has none\n"
            "    del torch._C._autograd._top_saved_tensors_default_hooks\n"
            "from svformer_deploy.models import create_model, spike_packing as sp\n"
            "print(repr(sp.INTERNALS_PROBLEM), sp.packing_applies())\n"
            "m = create_model('svformer_tiny').train(); m(torch.randn(2, *m.config.input_shape)).sum().backward()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["'torch._C._autograd._top_saved_tensors_default_hooks is missing' False"]
    lines = [ln for ln in res.stderr.splitlines() if "spike packing" in ln]
    assert len(lines) == 1 and "spike packing is off on torch" in lines[0] and "same gradients" in lines[0], res.stderr
