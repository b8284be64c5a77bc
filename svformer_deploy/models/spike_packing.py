"""Spike tensors saved for the backward pass kept as bits: lossless, about 32x smaller than float32.

Autograd saves the inputs of a layer for its weight gradient; after a PLIF layer those inputs are spikes,
float tensors of exact 0.0 / 1.0 (4 bytes per element carrying 1 bit). Inside :func:`pack_saved_spikes` every
tensor autograd saves is checked once, when it is saved:

* It is *spike-valued* when it is a PLIF layer's output, or was made from one by ops that only move or copy
  elements (views such as reshape / permute / transpose / slice, ``clone`` / ``contiguous``, and casts to another
  float dtype, e.g. autocast's float16 copy): its grad_fn chain through such ops ends at a PLIF node. Values are
  never scanned: a tensor that merely happens to hold 0/1 is saved as it is.
* A spike-valued tensor whose elements fill one block of its storage (dense, non-overlapping, any strides) is
  saved as ``ceil(n / 8)`` bytes, ``bit i of byte j = (element 8 j + i != 0)`` in memory order, together with its
  dtype, shape, strides and storage offset (one pass of the C++ kernels of ``csrc/plif.cpp`` on CPU, torch
  operations elsewhere). Unpacking (in the backward) rebuilds a tensor of the same dtype,
  shape, strides and storage offset with the same 0.0 / 1.0 values, so every backward kernel computes exactly
  what it computed before: gradients are bit-identical, and the forward is not touched at all.
* Everything else (real-valued activations, overlapping or gappy views of spikes) is saved as it is.

Once its consumers have saved it as bits, nothing holds a float spike tensor any more and it is freed during
the forward. With hooks, autograd no longer checks saved tensors against later in-place changes: the backward
uses the values as they were saved, which are the values the forward used.

Private torch internals this relies on, checked once at import (:func:`internals_problem`) by using each on a tiny
graph: the saved-tensor hook stack (``torch._C._autograd._saved_tensors_hooks_is_enabled`` and
``_top_saved_tensors_default_hooks``, which tell whether someone else's hooks are active),
``torch.fx._symbolic_trace.is_fx_symbolic_tracing``, the backward node class of an autograd Function
(``_backward_cls``) and the names of the backward nodes of element-moving ops (``ViewBackward0``, ...). Where one
is missing or behaves differently (another torch release), packing is off for the process, with one warning
naming what differs: autograd then saves spikes as float tensors (the public path; same gradients, more memory).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Iterator, NamedTuple

import torch
from torch import Tensor

from svformer_deploy.models._plif_ext import fused_plif_available

__all__ = ["PackedSpikes", "pack_saved_spikes", "packing_applies", "packing_now", "is_spike_valued", "pack", "unpack",
           "attach_bits", "internals_problem", "INTERNALS_PROBLEM"]

_BITS = "_svformer_spike_bits"  # attribute of a PLIF output that carries its bits: (bits, version when written)
_local = threading.local()  # .hooks: the (pack, unpack) pair pack_saved_spikes installed on this thread

_PLIF_NODES = frozenset({"_PLIFFusedBackward", "_PLIFMultiStepBackward"})
# backward nodes of the PLIF autograd functions of .neurons, by name: neurons calls into this module, so this
# module does not import neurons (a test holds the names equal to the classes')
# backward nodes of ops whose every output element is an element of their one input (in any float dtype)
_VALUE_MOVING = frozenset({
    "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "AliasBackward0",
    "TBackward0", "TransposeBackward0", "PermuteBackward0", "ExpandBackward0", "SelectBackward0", "SliceBackward0",
    "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2", "UnsqueezeBackward0", "CloneBackward0",
    "ToCopyBackward0",
})


_VIEW_PROBES = {  # an element-moving op -> the name of its backward node that is_spike_valued looks for
    "ViewBackward0": lambda s: s.view(-1), "PermuteBackward0": lambda s: s.permute(1, 0),
    "TransposeBackward0": lambda s: s.transpose(0, 1), "SelectBackward0": lambda s: s[0],
    "SliceBackward0": lambda s: s[:, :1], "UnsqueezeBackward0": lambda s: s.unsqueeze(0),
    "CloneBackward0": lambda s: s.clone(), "ToCopyBackward0": lambda s: s.to(torch.float64),
    "ExpandBackward0": lambda s: s.unsqueeze(0).expand(2, -1, -1),
}


def internals_problem() -> str | None:
    """What of the private torch internals spike packing uses is missing or different on this torch (see the
    module docstring), or None when each works as packing expects. Each is used on a tiny graph, not only looked
    up."""
    hooks = getattr(torch._C, "_autograd", None)
    for name in ("_saved_tensors_hooks_is_enabled", "_top_saved_tensors_default_hooks"):
        if not callable(getattr(hooks, name, None)):
            return f"torch._C._autograd.{name} is missing"
    fx_trace = getattr(getattr(torch.fx, "_symbolic_trace", None), "is_fx_symbolic_tracing", None)
    if not callable(fx_trace):
        return "torch.fx._symbolic_trace.is_fx_symbolic_tracing is missing"
    class _Probe(torch.autograd.Function):  # stands for the PLIF functions, found by their backward node's name
        @staticmethod
        def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
            return x * 1.0

        @staticmethod
        def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
            return g

    if not isinstance(vars(_Probe).get("_backward_cls"), type):  # its own, not one inherited from Function
        return "torch.autograd.Function._backward_cls is missing"
    pair = (lambda t: t, lambda t: t)
    try:
        with torch.enable_grad():
            with torch.autograd.graph.saved_tensors_hooks(*pair):
                if not hooks._saved_tensors_hooks_is_enabled() or hooks._top_saved_tensors_default_hooks(False) != pair:
                    return "torch._C._autograd._top_saved_tensors_default_hooks does not return the active hooks"
            if hooks._top_saved_tensors_default_hooks(False) is not None:
                return "torch._C._autograd._top_saved_tensors_default_hooks reports hooks where none are active"
            spikes = _Probe.apply(torch.ones(2, 3, requires_grad=True))
            if not isinstance(spikes.grad_fn, _Probe._backward_cls) or spikes.grad_fn.name() != "_ProbeBackward":
                return "the backward node of an autograd Function is not its _backward_cls named <Function>Backward"
            for expected, op in _VIEW_PROBES.items():
                node = op(spikes).grad_fn
                if node is None or node.name() != expected:
                    return f"the backward node of an element-moving op is {node and node.name()!r}, not {expected!r}"
    except (AttributeError, RuntimeError, TypeError) as err:
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return None


INTERNALS_PROBLEM = internals_problem()
"""Why spike packing is off on this torch (None: it works here); checked once at import."""
if INTERNALS_PROBLEM is not None:
    warnings.warn(f"svformer-deploy: spike packing is off on torch {torch.__version__} ({INTERNALS_PROBLEM}); "
                  "spikes are saved as float tensors (same gradients, more memory)", RuntimeWarning, stacklevel=2)


class PackedSpikes(NamedTuple):
    """A saved spike tensor as bits: ``bits`` (uint8, ``ceil(numel / 8)``) and the geometry to rebuild it."""

    bits: Tensor
    dtype: torch.dtype
    shape: torch.Size
    stride: tuple[int, ...]
    storage_offset: int


def is_spike_valued(t: Tensor) -> bool:
    """True when ``t`` is a PLIF layer's output or was derived from one only by element-moving ops (views,
    copies, float casts; see the module docstring): then every element of ``t`` is exactly 0 or 1."""
    node = t.grad_fn
    while node is not None and node.name() not in _PLIF_NODES:
        if node.name() not in _VALUE_MOVING:
            return False
        node = node.next_functions[0][0]
    return node is not None


def _fills_one_block(t: Tensor) -> bool:
    """True when the elements of ``t`` occupy exactly ``storage[offset : offset + numel]``: sorted by stride, every
    dimension of size > 1 strides by the product of the sizes of the dimensions before it."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _kernels(device: torch.device) -> bool:
    """Whether the C++ pack / unpack kernels (``csrc/plif.cpp``, built with the fused PLIF) serve ``device``; else
    the same packing in torch operations (CUDA, or no compiler)."""
    return device.type == "cpu" and fused_plif_available()


def _shifts(device: torch.device) -> Tensor:
    return torch.arange(8, dtype=torch.uint8, device=device)


def attach_bits(spikes: Tensor, bits: Tensor) -> Tensor:
    """Hand ``bits`` (``spikes`` packed as :func:`pack` packs them, written by the fused PLIF forward in the same
    pass) to :func:`pack`, which uses them instead of packing ``spikes`` or a view of all of it again, unless the
    spikes were changed in place since. Returns ``spikes``."""
    spikes.__dict__[_BITS] = (bits, spikes._version)
    return spikes


def _ready_bits(t: Tensor) -> Tensor | None:
    """The bits attached to the tensor ``t`` views, if ``t`` covers all of it, in its memory order, unchanged."""
    root = t if t._base is None else t._base
    ready = root.__dict__.get(_BITS)
    if ready is None or ready[1] != root._version or t.dtype != root.dtype or t.storage_offset() != 0 \
            or t.numel() != root.numel() or not root.is_contiguous():
        return None
    return ready[0]


def _pack_bits(t: Tensor) -> Tensor:
    """The bits of the spike tensor ``t``, which fills one block of its storage, in its memory order."""
    n = t.numel()
    flat = t.as_strided((n,), (1,), t.storage_offset())
    if _kernels(t.device):
        return torch.ops.svformer_deploy.pack_spikes(flat)
    fired = flat.ne(0)
    if n % 8:
        fired = torch.cat((fired, fired.new_zeros(8 - n % 8)))
    return (fired.view(-1, 8).view(torch.uint8) << _shifts(t.device)).sum(-1, dtype=torch.uint8)


def pack(t: Tensor) -> Tensor | PackedSpikes:
    """The saved-tensor pack hook: a spike-valued tensor that fills one block of its storage becomes
    :class:`PackedSpikes` (with the bits the PLIF forward attached, when they fit); any other tensor is returned
    unchanged."""
    if not t.is_floating_point() or not is_spike_valued(t) or t.numel() == 0 or not _fills_one_block(t):
        return t
    bits = _ready_bits(t)
    if bits is None:
        bits = _pack_bits(t)
    return PackedSpikes(bits, t.dtype, t.shape, t.stride(), t.storage_offset())


def unpack(saved: Tensor | PackedSpikes) -> Tensor:
    """The saved-tensor unpack hook: :class:`PackedSpikes` back to a tensor of its dtype, shape, strides and storage
    offset holding the same 0.0 / 1.0 values; any other tensor is returned unchanged."""
    if not isinstance(saved, PackedSpikes):
        return saved
    n, offset = saved.shape.numel(), saved.storage_offset
    if _kernels(saved.bits.device):
        values = torch.ops.svformer_deploy.unpack_spikes(saved.bits, n, saved.dtype, offset)
    else:
        values = ((saved.bits.unsqueeze(-1) >> _shifts(saved.bits.device)) & 1).view(-1)[:n].to(saved.dtype)
        if offset:
            values = torch.cat((values.new_zeros(offset), values))
    return values.as_strided(saved.shape, saved.stride, saved.storage_offset)


def packing_applies() -> bool:
    """Whether :func:`pack_saved_spikes` installs its hooks here: only in a grad-enabled eager forward, never while
    TorchScript traces (the ONNX export), fx traces or ``torch.compile`` / ``torch.export`` capture the model, never
    where saved-tensor hooks are disabled, and never over hooks someone else installed (activation checkpointing,
    CPU offloading keep theirs), and never on a torch whose internals differ (:data:`INTERNALS_PROBLEM`)."""
    return (INTERNALS_PROBLEM is None and torch.is_grad_enabled()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.compiler.is_compiling() and not torch.fx._symbolic_trace.is_fx_symbolic_tracing()
            and torch._C._autograd._saved_tensors_hooks_is_enabled()
            and torch._C._autograd._top_saved_tensors_default_hooks(False) is None)


def packing_now() -> bool:
    """Whether tensors saved right now go through :func:`pack` (the hooks of :func:`pack_saved_spikes` are the
    active ones on this thread, in grad mode): then the fused PLIF forward writes the bits of its spikes too."""
    return (INTERNALS_PROBLEM is None and torch.is_grad_enabled() and getattr(_local, "hooks", None) is not None
            and torch._C._autograd._top_saved_tensors_default_hooks(False) == _local.hooks)


def pack_saved_spikes() -> contextlib.AbstractContextManager[bool]:
    """Save spike tensors as bits (:func:`pack` / :func:`unpack`) for the autograd graph built inside the block,
    where :func:`packing_applies`; elsewhere a no-op (``nullcontext``: what ``torch.compile`` traces, which
    dynamo < 2.5 can, unlike a generator context manager). Yields whether it packs."""
    return _packing() if packing_applies() else contextlib.nullcontext(False)


@contextlib.contextmanager
def _packing() -> Iterator[bool]:
    hooks, outer = (pack, unpack), getattr(_local, "hooks", None)
    _local.hooks = hooks
    try:
        with torch.autograd.graph.saved_tensors_hooks(*hooks):
            yield True
    finally:
        _local.hooks = outer
