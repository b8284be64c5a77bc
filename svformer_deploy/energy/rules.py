"""The counting rules, as a table: one rule per aten op or module type, each stated once, in its docstring.

As ``torch.utils.flop_counter``'s ``flop_registry`` / ``register_flop_formula``, a rule is a function registered
for one or more keys with :func:`register_rule`:

* an **aten op** key (``torch.ops.aten.convolution``): called after the op ran, as
  ``rule(ctx, args, kwargs, out)``;
* a **module type** key (``PLIF``): called before the module runs, as ``rule(ctx, name, module, x)`` (or, when
  registered with ``after=True``, after it ran, as ``rule(ctx, name, module, args, out)``); the aten ops
  executed inside such a module are not counted (the module rule covers them), so a neuron is counted the
  same whatever kernel implements it. ``accepts(module, args)`` (optional) declines a call the module rule cannot
  state exactly (a subclass with its own ``forward``, a padding mode, training mode...): the aten rules count it.

The synaptic layers (``nn.Conv1d/2d/3d``, ``nn.Linear``, the BatchNorms, the attention product) have module
rules that apply the aten rule of the op they run to the module's input, weight and output (and book under that
rule's name, ``ctx.using(name)``, so reports list the rule that states the count): the same counts as the aten
rules (a test holds it), read from the module's own operands (a neuron's output is spikes by construction, so the
synapses reading it need no value check).

``ctx`` is the running :class:`~svformer_deploy.energy.counter.OpCounter` (its public methods: ``book``,
``using``, ``layer``, ``module``, ``layout``, ``split``, ``even``, ``kind``, ``is_weight``, ``storage_key``,
``read_synapse``, ``synapse_facts``, ``read_facts``, ``read_neuron``; its options ``T``, ``B``, ``dense``,
``fold_bn``, ``skip_zero_macs``). Users register rules for their own ops and modules the same way; the docstring
is required, and is what :func:`rules_markdown` prints in every report and in ``docs/energy.md``.

Operand kinds (decided per call, on the values actually passed), used by the rules below:

* **weight**: the tensor shares storage with a parameter or buffer of the counted model (weights are dense:
  a zero weight is still a synapse);
* **binary**: an activation whose every element is exactly 0 or 1 (spikes);
* **real**: any other activation, including integer-valued but non-binary ones such as spike sums {0, 1, 2} or
  ``K^T V`` counts (*non-binary integers are counted as real numbers*).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from svformer_deploy.errors import EnergyError
from svformer_deploy.models.neurons import PLIF, ReLUNeuron
from svformer_deploy.models.norm import TemporalBatchNorm
from svformer_deploy.models.svformer import SpikeAttentionProduct, TConv2d

__all__ = ["OP_CLASSES", "SYNAPTIC_CLASSES", "PRIMITIVE_OF", "Rule", "register_rule", "op_rule", "module_rule",
           "list_rules", "rules_markdown"]

aten = torch.ops.aten

#: Every op class a count can carry, with the primitive whose energy it costs.
PRIMITIVE_OF: dict[str, str] = {
    "mac": "mac",
    "ac": "ac",
    "spike_product": "ac",
    "neuron_mul": "mul",
    "neuron_add": "add",
    "bn_mul": "mul",
    "bn_add": "add",
    "bn_folded": "none",
    "bias_add": "add",
    "residual_add": "add",
    "scale_mul": "mul",
    "mul": "mul",
    "add": "add",
    "activation": "add",
}
OP_CLASSES: tuple[str, ...] = tuple(PRIMITIVE_OF)
SYNAPTIC_CLASSES: tuple[str, ...] = ("mac", "ac", "spike_product")


@dataclass(frozen=True)
class Rule:
    """One counting rule: its name, the keys it is registered for, and its statement (the docstring)."""

    name: str
    keys: tuple[Any, ...]
    doc: str
    fn: Callable[..., None]
    after: bool = False
    accepts: Callable[[nn.Module, tuple], bool] | None = None

    @property
    def applies_to(self) -> str:
        return ", ".join(k.__name__ if isinstance(k, type) else f"aten.{k.__name__}" for k in self.keys)


_OP_RULES: dict[Any, Rule] = {}
_MODULE_RULES: dict[type, Rule] = {}
_ORDER: list[Rule] = []


def _clean(doc: str) -> str:
    return " ".join(inspect.cleandoc(doc).split())


def register_rule(*keys: Any, name: str | None = None, after: bool = False,
                  accepts: Callable[[nn.Module, tuple], bool] | None = None
                  ) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: register ``fn`` as the counting rule of ``keys`` (aten op overload packets or module types).

    The rule's docstring is its statement (required). A later registration for the same key replaces the earlier
    one, so users can override a built-in rule. Module rules only: ``after`` calls the rule after the module ran
    (with its args and output); ``accepts(module, args)`` returning False leaves that call to the aten rules.
    """
    if not keys:
        raise EnergyError("register_rule needs at least one aten op or module type")

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        if not (fn.__doc__ or "").strip():
            raise EnergyError(f"counting rule {fn.__name__!r} has no docstring; state the rule in its docstring")
        rule = Rule(name or fn.__name__, tuple(keys), _clean(fn.__doc__ or ""), fn, after, accepts)
        for k in keys:
            if isinstance(k, type):
                if not issubclass(k, nn.Module):
                    raise EnergyError(f"module rule key {k.__name__} is not an nn.Module subclass")
                _MODULE_RULES[k] = rule
            else:
                _OP_RULES[getattr(k, "_overloadpacket", k)] = rule
        _ORDER[:] = [r for r in _ORDER if r.name != rule.name] + [rule]
        return fn

    return deco


def op_rule(packet: Any) -> Rule | None:
    """The rule registered for an aten op overload packet, or None (the op is then listed as uncounted)."""
    return _OP_RULES.get(packet)


def module_rule(module: nn.Module) -> Rule | None:
    """The rule registered for ``type(module)`` or its nearest base class, or None."""
    for cls in type(module).__mro__:
        rule = _MODULE_RULES.get(cls)
        if rule is not None:
            return rule
    return None


def list_rules() -> list[Rule]:
    """Every registered rule, in registration order."""
    live = set(map(id, _OP_RULES.values())) | set(map(id, _MODULE_RULES.values()))
    return [r for r in _ORDER if id(r) in live]


def rules_markdown(names: Iterable[str] | None = None) -> str:
    """A markdown table of the rules (all, or those named), generated from their docstrings."""
    wanted = None if names is None else set(names)
    lines = ["| rule | applies to | statement |", "|---|---|---|"]
    for r in list_rules():
        if wanted is None or r.name in wanted:
            lines.append(f"| `{r.name}` | {r.applies_to} | {r.doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- synaptic ops
_FANOUT_CACHE: dict[tuple, Tensor] = {}  # fan-out maps depend only on shapes: shared by all counters


def _fanout(x_shape: torch.Size, weight: Tensor, stride: Any, padding: Any, dilation: Any, transposed: bool,
            output_padding: Any, groups: int) -> Tensor:
    """In-bounds fan-out of every input position: ``conv_transpose(ones(out), ones(W))`` (closed form per axis
    for plain convolutions: out channels per group x the number of windows covering the position)."""
    key = (tuple(x_shape[1:]), tuple(weight.shape), tuple(stride), tuple(padding), tuple(dilation), transposed,
           tuple(output_padding), groups, str(weight.device))
    f = _FANOUT_CACHE.get(key)
    if f is not None:
        return f
    dev = weight.device
    nd = len(stride)
    if transposed:
        w = torch.ones(weight.shape, dtype=torch.float32, device=dev)
        probe = torch.zeros((1, *x_shape[1:]), dtype=torch.float32, device=dev)
        out_shape = aten.convolution(probe, w, None, stride, padding, dilation, True, output_padding, groups).shape
        f = aten.convolution(torch.ones(out_shape, dtype=torch.float32, device=dev), w, None, stride, padding,
                             dilation, False, [0] * nd, groups)
    else:
        f = torch.full((1,) * (nd + 2), float(weight.shape[0] // groups), dtype=torch.float32, device=dev)
        for d in range(nd):
            n_in, k = x_shape[2 + d], weight.shape[2 + d]
            n_out = (n_in + 2 * padding[d] - dilation[d] * (k - 1) - 1) // stride[d] + 1
            idx = (torch.arange(n_out, device=dev)[:, None] * stride[d] - padding[d]
                   + torch.arange(k, device=dev)[None, :] * dilation[d]).flatten()
            idx = idx[(idx >= 0) & (idx < n_in)]
            shape = [1] * (nd + 2)
            shape[2 + d] = n_in
            f = f * torch.bincount(idx, minlength=n_in).to(torch.float32).reshape(shape)
    _FANOUT_CACHE[key] = f
    return f


_SPATIAL64: dict[int, Tensor] = {}  # id of a cached fan-out map -> its spatial map, float64
_EXACT_F32 = 1 << 24  # every integer up to 2**24 is exact in float32


def _events(ctx: Any, mask: Tensor, fan: Tensor, layout: Any) -> Any:
    """Sum of fan-out over the non-zero elements of ``mask`` (0/1 float), per timestep when it has a time axis.

    (The convolution rule takes a faster path for a binary float32 time-folded input when it is exact: one
    float32 matrix-vector product of the (T, images x C x H x W) input with the spatial map repeated over images
    and channels, exact when (elements per timestep) x max(fan-out) < 2**24.) Here, when the fan-out map does not
    depend on the channel, ``mask`` is first summed over batch and channels (exact in float32 for fewer than
    2**24 terms), then weighted by the spatial map in float64.
    """
    if fan.shape[1] != 1:
        return ctx.split(mask * fan, layout)
    T = ctx.T
    f = _SPATIAL64.get(id(fan))
    if f is None:
        f = _SPATIAL64[id(fan)] = fan[0, 0].to(torch.float64)
    if layout is None:
        return mask.sum(dim=(0, 1)).to(torch.float64).reshape(-1) @ f.reshape(-1)
    if layout[0] == "lead":
        s = mask.reshape(T, -1, f.numel()).sum(1)  # (T, positions)
        return torch.mv(s.to(torch.float64), f.reshape(-1))
    s = mask.sum(dim=(0, 1))  # axis 2 of (B, C, T, ...): s is (T, ...), as is f
    return (s.to(torch.float64) * f).reshape(T, -1).sum(1)


def _mask(t: Tensor, kind: str) -> Tensor:
    return t if kind == "binary" and t.dtype == torch.float32 else (t != 0).to(torch.float32)


@register_rule(aten.convolution, aten._convolution, aten.conv1d, aten.conv2d, aten.conv3d)
def convolution(ctx: Any, args: tuple, kwargs: dict, out: Tensor) -> None:
    """Convolution (1-3 D, grouped, strided, dilated, transposed). Binary input -> `ac`: the in-bounds fan-out
    of every non-zero input element, with the fan-out map F = conv_transpose(ones(out), ones(W)), AC = sum(F *
    (x != 0)) (exact at borders, for stride, dilation, groups and Conv3d). Real input -> `mac`: dense
    out_elements x (C_in / groups) x prod(kernel), padding taps included (FlopCounterMode, fvcore); with
    zero-skipping (the sparsity-aware ANN) the binary rule's sum over non-zero inputs instead. Bias ->
    `bias_add`: 1 per output element. Booked at the timestep of the input element."""
    stride = args[3]
    _conv(ctx, args[0], args[1], args[2] if len(args) > 2 else None, stride, args[4], args[5],
          bool(args[6]) if len(args) > 6 else False, args[7] if len(args) > 7 else [0] * len(stride),
          int(args[8]) if len(args) > 8 else 1, out)


def _conv(ctx: Any, x: Tensor, w: Tensor, bias: Tensor | None, stride: Any, padding: Any, dilation: Any,
          transposed: bool, output_padding: Any, groups: int, out: Tensor) -> None:
    """The :func:`convolution` rule on one call (shared by the aten rule and the module rule). ``x`` is
    (N, C, ...), or (T, B, C, ...) from a time-folded module, taken as (T*B, C, ...) (``out`` likewise)."""
    kind = ctx.kind(x)
    shape = x.shape if x.dim() == w.dim() else torch.Size((x.shape[0] * x.shape[1], *x.shape[2:]))
    layout = ctx.layout(x)
    if kind == "binary" or (ctx.skip_zero_macs and kind == "real"):
        fan = _fanout(shape, w, tuple(stride), tuple(padding), tuple(dilation), transposed, tuple(output_padding),
                      groups)
        op_class = "ac" if kind == "binary" else "mac"
        flat = None
        if fan.shape[1] == 1 and layout is not None and layout[0] == "lead" and kind == "binary" \
                and x.dtype == torch.float32:
            flat = _flat_fanout(fan, x.numel() // ctx.T)
        if flat is not None:  # one float32 matrix-vector product of the (T, rest) input, exact
            count = torch.mv(x.reshape(ctx.T, -1), flat)
        else:
            count = _events(ctx, _mask(x.reshape(shape), kind), fan, layout)
    else:  # dense: shapes only
        cin = w.shape[0] if transposed else w.shape[1]
        total = (x.numel() * w.shape[1] if transposed else out.numel() * cin) * math.prod(w.shape[2:])
        op_class = "mac"
        count = ctx.even(total, layout if layout is not None and total % (ctx.T or 1) == 0 else None)
    ctx.book(op_class, count)
    # weight-stationary: the kernel is read once per image it slides over (shape[0]: T x B time-folded frames,
    # or B clips for a Conv3d whose kernel spans all T frames)
    ctx.read_facts(w, ctx.synapse_facts(w, x, kind, out, passes=int(shape[0])), count)
    if bias is not None:
        out_layout = ctx.layout(out)
        ctx.book("bias_add", ctx.even(out.numel(), out_layout) if out_layout is not None else out.numel())


@functools.lru_cache(maxsize=64)
def _flat_fanout(fan: Tensor, per_t: int) -> Tensor | None:
    """A fan-out map that does not depend on the channel (``fan`` of :func:`_fanout`, shape (1, 1, ...)) repeated
    over the ``per_t`` input elements of one timestep (images x channels x positions), so that one float32
    matrix-vector product of a binary (T, per_t) input gives its per-timestep count; None when that product
    would not be exact in float32 ((elements per timestep) x max(fan-out) >= 2**24)."""
    if per_t * float(fan.max()) >= _EXACT_F32:
        return None
    spatial = fan[0, 0].reshape(-1)
    return spatial.repeat(per_t // spatial.numel())


def _matmul(ctx: Any, a: Tensor, b: Tensor, out: Tensor, ka: str | None = None, kb: str | None = None) -> None:
    """The :func:`matmul` rule on one call; ``ka`` / ``kb``: the operands' kinds when the caller knows them (of
    the tensors they were reshaped from)."""
    ka = ctx.kind(a) if ka is None else ka
    kb = ctx.kind(b) if kb is None else kb
    layout = ctx.layout(a) if ka != "weight" else ctx.layout(out)
    has_w = "weight" in (ka, kb)
    act, act_kind = (b, kb) if ka == "weight" else (a, ka)
    if "binary" not in (ka, kb) and not (ctx.skip_zero_macs and has_w and act_kind == "real"):  # dense
        op_class = "mac"
        rows = a.shape[0] if a.dim() == 3 else 1
        count = ctx.even(rows * a.shape[-2] * a.shape[-1] * b.shape[-1], layout)
    elif ka == "weight":  # per output column (no time axis recovered)
        op_class = "ac" if kb == "binary" else "mac"
        na = torch.full(a.shape[-1:], float(a.shape[-2]), device=b.device)
        count = ctx.split(((_mask(b, kb).transpose(-2, -1) @ na.unsqueeze(-1)).squeeze(-1)), None)
    elif kb == "weight":
        op_class = "ac" if ka == "binary" else "mac"
        count = ctx.split(_mask(a, ka), layout, bound=1) * b.shape[-1]  # nnz(a) x N
    else:
        op_class = "spike_product"
        per_row = (_mask(a, ka) @ _mask(b, kb).sum(-1).unsqueeze(-1)).squeeze(-1)  # sum_k [a_mk != 0] nnz(b_k)
        count = ctx.split(per_row, layout, bound=a.shape[-1] * b.shape[-1])
    ctx.book(op_class, count)
    if has_w:
        w = a if ka == "weight" else b
        passes = ctx.T * ctx.B if ctx.T and layout is not None else ctx.B
        ctx.read_facts(w, ctx.synapse_facts(w, act, act_kind, out, passes), count)
    else:
        ctx.read_facts(None, ctx.synapse_facts(None, a, ka, out, 0), 0)
        ctx.read_facts(None, ctx.synapse_facts(None, b, kb, None, 0), 0)


@register_rule(aten.mm, aten.bmm)
def matmul(ctx: Any, args: tuple, kwargs: dict, out: Tensor) -> None:
    """Matrix product (M, K) x (K, N), batched or not. Neither operand binary -> `mac`: M x K x N (with
    zero-skipping, real activation x weight: nnz(activation) x fan-out instead). Binary activation x weight ->
    `ac`: nnz(x) x N. Activation x activation with at least one binary operand -> `spike_product`: one accumulate
    per coincident non-zero pair [A_mk != 0][B_kn != 0] (for the attention's K^T V the coincident 1-1 pairs over
    tokens; for Q (K^T V) each pair adds one integer of K^T V)."""
    _matmul(ctx, args[0], args[1], out)


@register_rule(aten.addmm)
def addmm(ctx: Any, args: tuple, kwargs: dict, out: Tensor) -> None:
    """Linear layer (bias + x W^T): the matmul rule for x W^T, plus `bias_add`: 1 per output element."""
    _matmul(ctx, args[1], args[2], out)
    if isinstance(args[0], Tensor):
        _elementwise(ctx, "bias_add", out)


# ---------------------------------------------------------------------------------------------- element-wise
def _elementwise(ctx: Any, op_class: str, out: Tensor) -> None:
    layout = ctx.layout(out)
    ctx.book(op_class, ctx.even(out.numel(), layout) if layout is not None else out.numel())


_BN_OPS = (aten.native_batch_norm, aten._native_batch_norm_legit_no_training, aten._native_batch_norm_legit,
           aten.batch_norm, aten.cudnn_batch_norm, aten.miopen_batch_norm)


@register_rule(*_BN_OPS)
def batch_norm(ctx: Any, args: tuple, kwargs: dict, out: Any) -> None:
    """Eval BatchNorm = per-element affine y = s x + b: `bn_mul` + `bn_add`, 1 each per element. With
    fold_bn, a time-invariant BN (shared statistics, BatchNorm3d) is folded into the preceding layer: `bn_folded`,
    costing nothing. A per-timestep BN (its own statistics per frame) is never folded."""
    _batch_norm(ctx, args[0])


def _batch_norm(ctx: Any, x: Tensor) -> None:
    """The :func:`batch_norm` rule on an input ``x`` (shared by the aten rule and the module rule)."""
    mod = ctx.module
    shared = not (isinstance(mod, TemporalBatchNorm) and mod.mode == "per_timestep")
    cnt = ctx.even(x.numel(), ctx.layout(x))
    if ctx.fold_bn and shared:
        ctx.book("bn_folded", cnt)
    else:
        ctx.book("bn_mul", cnt)
        ctx.book("bn_add", cnt)


def _sum_class(ctx: Any, args: tuple, same_shape_is_residual: bool) -> str:
    tensors = [t for t in args[:2] if isinstance(t, Tensor) and t.dim() > 0]
    if len(tensors) < 2:
        return "add"
    if any(ctx.is_weight(t) for t in tensors):
        return "bias_add"
    if same_shape_is_residual and tensors[0].shape == tensors[1].shape:
        return "residual_add"
    return "add"


@register_rule(aten.add, aten.add_)
def add(ctx: Any, args: tuple, kwargs: dict, out: Tensor) -> None:
    """Element-wise sum, 1 per output element: `bias_add` when an operand is a parameter, `residual_add` for the
    sum of two same-shape activations (the residual streams), `add` otherwise (including adding a scalar)."""
    _elementwise(ctx, _sum_class(ctx, args, True), out)


@register_rule(aten.sub, aten.sub_, aten.rsub)
def subtract(ctx: Any, args: tuple, kwargs: dict, out: Tensor) -> None:
    """Element-wise difference, 1 per output element: `bias_add` when an operand is a parameter, `add`
    otherwise."""
    _elementwise(ctx, _sum_class(ctx, args, False), out)


@register_rule(aten.mul, aten.mul_, aten.div, aten.div_)
def mul(ctx: Any, args: tuple, kwargs: dict, out: Tensor) -> None:
    """Element-wise product or quotient, 1 per output element: `scale_mul` by a scalar (the attention's
    x d^-0.5 = x0.125), `mul` otherwise."""
    tensors = [t for t in args[:2] if isinstance(t, Tensor) and t.dim() > 0]
    _elementwise(ctx, "scale_mul" if len(tensors) < 2 else "mul", out)


@register_rule(aten.relu, aten.relu_, aten.clamp_min, aten.clamp_min_, aten.threshold, aten.hardtanh,
               aten.hardtanh_)
def activation(ctx: Any, args: tuple, kwargs: dict, out: Tensor) -> None:
    """ReLU-like max(x, 0) (or a clamp): `activation`, one comparison per element."""
    _elementwise(ctx, "activation", out)


@register_rule(
    aten.view, aten._unsafe_view, aten.reshape, aten.permute, aten.transpose, aten.t, aten.expand, aten.select,
    aten.slice, aten.split, aten.split_with_sizes, aten.unbind, aten.squeeze, aten.unsqueeze, aten.flatten,
    aten.unflatten, aten.clone, aten.contiguous, aten.copy_, aten._to_copy, aten.to, aten.empty, aten.empty_like,
    aten.empty_strided, aten.zeros, aten.zeros_like, aten.ones, aten.ones_like, aten.full, aten.full_like,
    aten.fill_, aten.zero_, aten.detach, aten.alias, aten.cat, aten.stack, aten.lift_fresh, aten.lift_fresh_copy,
    aten.new_empty, aten.new_zeros, aten.new_ones, aten.as_strided, aten.index_select, aten.narrow, aten.movedim,
    aten.constant_pad_nd, aten.roll, aten.pad, aten.masked_fill, aten.where, aten.arange, aten.scalar_tensor,
    aten._local_scalar_dense, aten.repeat, aten.dropout, aten.native_dropout)
def data_movement(ctx: Any, args: tuple, kwargs: dict, out: Any) -> None:
    """Views, reshapes, permutes, copies, concatenation, dtype casts, allocation, selects: free (0 ops).
    Any executed aten op without a rule is listed as uncounted, with its calls and output elements."""


# ---------------------------------------------------------------------------------------------- neuron modules
@register_rule(PLIF)
def plif(ctx: Any, name: str, module: nn.Module, x: Tensor) -> None:
    """PLIF neuron, per element per timestep: H = V + (X - V) (1/tau) is 1 `neuron_mul` + 2 `neuron_add`, the
    threshold comparison H >= V_th 1 `neuron_add`; the hard reset is a select (free): 1 `neuron_mul` +
    3 `neuron_add`. Counted at the module level, whatever kernel runs inside; its state V is read and written
    once per element-step (memory model) and its output spikes are written at 1 bit each. Its output is spikes
    by construction: synapses reading it are counted as binary without checking the values."""
    steps, n, timed = _neuron_shape(ctx, x)
    for op_class, k in (("neuron_mul", 1), ("neuron_add", 3)):
        ctx.book(op_class, [k * n] * steps if timed else k * n * steps, name)
    ctx.read_neuron(name, x.numel(), stateful=True, spikes=True)


@register_rule(ReLUNeuron)
def relu_neuron(ctx: Any, name: str, module: nn.Module, x: Tensor) -> None:
    """ReLU neuron (the ANN twin's stand-in for PLIF): `activation`, 1 comparison per element; no state; its
    real-valued output is written at the profile's bytes per value."""
    steps, n, timed = _neuron_shape(ctx, x)
    ctx.book("activation", [n] * steps if timed else n * steps, name)
    ctx.read_neuron(name, x.numel(), stateful=False, spikes=False)


def _neuron_shape(ctx: Any, x: Tensor) -> tuple[int, int, bool]:
    """(steps, elements per step, whether steps is the counter's T) of a (T, B, ...) neuron input."""
    steps = x.shape[0] if x.dim() > 0 else 1
    return steps, x.numel() // max(steps, 1), ctx.T is not None and steps == ctx.T



# ---------------------------------------------------------------------------------------------- synaptic modules
# Each applies the aten rule of the op its module runs to the module's own input, weight and output, so the
# counter need not intercept the module's aten ops. ``accepts`` admits only modules whose forward is the stock
# one (a subclass with its own forward, an unusual padding mode or a training-mode BN is left to the aten rules).
_CONV_FORWARDS = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward}


def _stock_conv(module: nn.Module, args: tuple) -> bool:
    fwd = type(module).forward
    if not args or not isinstance(args[0], Tensor) or module.padding_mode != "zeros" \
            or isinstance(module.padding, str):
        return False
    nd = len(module.kernel_size)
    return (fwd in _CONV_FORWARDS and args[0].dim() == nd + 2) or (fwd is TConv2d.forward and args[0].dim() == 5)


@register_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d, after=True, accepts=_stock_conv)
def conv_module(ctx: Any, name: str, module: nn.Module, args: tuple, out: Tensor) -> None:
    """`nn.Conv1d/2d/3d` (and the time-folded `TConv2d`, its input (T, B, C, H, W) taken as (T*B, C, H, W)):
    the `convolution` rule applied to the module's input, weight, bias and output."""
    ctx.using("convolution")
    _conv(ctx, args[0], module.weight, module.bias, module.stride, module.padding, module.dilation, False,
          [0] * len(module.stride), module.groups, out)


def _stock_linear(module: nn.Module, args: tuple) -> bool:
    return type(module).forward is nn.Linear.forward and bool(args) and isinstance(args[0], Tensor) \
        and args[0].dim() >= 2


@register_rule(nn.Linear, after=True, accepts=_stock_linear)
def linear_module(ctx: Any, name: str, module: nn.Module, args: tuple, out: Tensor) -> None:
    """`nn.Linear` on (..., C_in): the `matmul` rule for x W^T with x flattened to (rows, C_in) as the aten
    op sees it, and with a bias the `addmm` rule (plus `bias_add`: 1 per output element)."""
    x2 = args[0].reshape(-1, module.in_features)
    out2 = out.reshape(-1, module.out_features)
    ctx.using("addmm" if module.bias is not None else "matmul")
    _matmul(ctx, x2, module.weight.t(), out2, kb="weight")
    if module.bias is not None:
        _elementwise(ctx, "bias_add", out2)


def _stock_bn(module: nn.Module, args: tuple) -> bool:
    fwd = type(module).forward
    return not module.training and bool(args) and isinstance(args[0], Tensor) \
        and (fwd is TemporalBatchNorm.forward or fwd is nn.modules.batchnorm._BatchNorm.forward)


@register_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, TemporalBatchNorm, after=True, accepts=_stock_bn)
def batch_norm_module(ctx: Any, name: str, module: nn.Module, args: tuple, out: Tensor) -> None:
    """Eval-mode `nn.BatchNorm1d/2d/3d` and `TemporalBatchNorm`: the `batch_norm` rule on the module's input
    (one element-wise affine per input element, split evenly over the timesteps)."""
    ctx.using("batch_norm")
    _batch_norm(ctx, args[0])


def _stock_product(module: nn.Module, args: tuple) -> bool:
    return type(module).forward is SpikeAttentionProduct.forward and len(args) == 3 \
        and all(isinstance(a, Tensor) and a.dim() >= 3 and a.shape == args[0].shape for a in args)


@register_rule(SpikeAttentionProduct, after=True, accepts=_stock_product)
def attention_product_module(ctx: Any, name: str, module: nn.Module, args: tuple, out: Tensor) -> None:
    """`SpikeAttentionProduct` Q (K^T V) x scale on (..., N, d): the `matmul` rule for K^T V and for Q (K^T V)
    (operands flattened to (heads x batch, ., .) as the aten ``bmm`` sees them; K^T V recomputed once to know
    its non-zeros), then the `mul` rule's `scale_mul`, 1 per output element."""
    q, k, v = args
    kinds = (ctx.kind(q), ctx.kind(k), ctx.kind(v))
    facts = _product_facts(ctx, q, out, kinds)
    if facts is None:
        _product_by_matmul(ctx, q, k, v, out, kinds)
        return
    binary_facts, real_facts, scale_count = facts
    # binary Q, K, V: the matmul rule's pair counts in closed form, per (time, batch, head) row:
    # K^T V: sum_i sum_j [K_ji] nnz(V_j) = sum_j nnz(K_j) nnz(V_j) (tokens j), which is also the sum of the
    # entries of K^T V (sum_il sum_j K_ji V_jl = sum_j (sum_i K_ji)(sum_l V_jl)); Q (K^T V): sum_m sum_i [Q_mi]
    # nnz((K^T V)_i) = sum_i nnz(Q_:i) nnz((K^T V)_i). Element counts are exact in float32, sums are float64.
    # Both products' pairs go to one count: sum_i (K^T V row sum_i + nnz(Q_:i) nnz((K^T V)_i)), one addcmul.
    kv = k.transpose(-2, -1) @ v  # (..., d, d) counts of coincident spikes
    row_sums = kv.sum(-1)  # (..., d): sum_l (K^T V)_il
    kv_binary = float(kv.max()) <= 1.0 if kv.numel() else True  # counts >= 0: binary iff none exceeds 1
    nnz_kv = row_sums if kv_binary else (kv != 0).sum(-1, dtype=torch.float32)
    pairs = torch.addcmul(row_sums, q.sum(-2), nnz_kv).reshape(ctx.T, -1).sum(1, dtype=torch.float64)
    ctx.using("matmul")
    ctx.book("spike_product", pairs)
    ctx.read_facts(None, binary_facts if kv_binary else real_facts, 0)
    ctx.using("mul")
    ctx.book("scale_mul", scale_count)


def _product_facts(ctx: Any, q: Tensor, out: Tensor, kinds: tuple[str, str, str]) -> tuple | None:
    """For binary float32 Q, K, V in a time-folded layout (and not dense): the memory facts of the two
    products (with K^T V binary, and real) and the `scale_mul` count; None for any other call (then the matmul
    rule is applied to each product as the aten ``bmm`` sees it)."""
    layout = ctx.layout(q)
    if ctx.dense or kinds != ("binary",) * 3 or q.dtype != torch.float32 or layout is None or layout[0] != "lead":
        return None
    n, d = q.shape[-2:]
    rows = q.numel() // (n * d)
    kv_shape = torch.Size((rows, d, d))
    kv = torch.empty(kv_shape, device="meta")
    facts_kv = [ctx.synapse_facts(None, q, "binary", kv, 0), ctx.synapse_facts(None, q, "binary", None, 0)]

    def both(kind_kv: str) -> dict[str, int]:  # the facts of both products, summed (one layer)
        total: dict[str, int] = {}
        second = [ctx.synapse_facts(None, q, "binary", out, 0), ctx.synapse_facts(None, kv, kind_kv, None, 0)]
        for f in (*facts_kv, *second):
            for k, v in f.items():
                total[k] = total.get(k, 0) + v
        return total

    return both("binary"), both("real"), ctx.even(out.numel(), ctx.layout(out))


def _product_by_matmul(ctx: Any, q: Tensor, k: Tensor, v: Tensor, out: Tensor, kinds: tuple[str, str, str]) -> None:
    """The matmul rule on K^T V and on Q (K^T V), operands flattened to (heads x batch, ., .) as the aten
    ``bmm`` sees them, then `scale_mul`."""
    kq, kk, kind_v = kinds
    n, d = q.shape[-2:]
    kt = k.transpose(-2, -1).reshape(-1, d, n)
    v3 = v.reshape(-1, n, d)
    kv = torch.bmm(kt, v3)
    ctx.using("matmul")
    _matmul(ctx, kt, v3, kv, kk, kind_v)
    # K^T V of binary K and V holds counts >= 0: it is binary exactly when no count exceeds 1 (one reduction)
    kind_kv = ("binary" if float(kv.max()) <= 1.0 else "real") if kk == kind_v == "binary" and kv.numel() \
        and not ctx.dense else ctx.kind(kv)
    _matmul(ctx, q.reshape(-1, n, d), kv, out.reshape(-1, n, d), kq, kind_kv)
    ctx.using("mul")
    _elementwise(ctx, "scale_mul", out)
