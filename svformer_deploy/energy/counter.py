"""Exact operation counts of one forward pass, per layer x timestep x op class, at the aten level.

:func:`count_ops` runs the model under a ``TorchDispatchMode`` (as ``torch.utils.flop_counter.FlopCounterMode``
does), so every executed aten op is seen, including functional matmuls (the attention product) and Conv3d.
A module stack kept by forward pre/post hooks names the innermost module running each op by its dotted name
from ``model.named_modules()`` (``ModuleTracker`` only keeps an unordered set of type-based names). The
counting rules are the rule table of :mod:`svformer_deploy.energy.rules` (one rule per aten op or module type);
this module is their bookkeeping context.

Recovering the timestep of an op (the model folds T into the batch):

* the counter knows T (``model.config.num_frames``) and the batch size B (input axis 0);
* an operand of shape (T, B, ...) is time-major (residual adds, scalings);
* an operand whose leading dim is a multiple of T*B is time-major folded ((T*B, C, H, W) for convolutions,
  (T*B*N, C) for linears, (T*B*heads, N, d) for the attention bmm): timestep = leading index // (size / T);
* a 5-D operand (B, C, T, H, W) (the head's Conv3d) has time on axis 2;
* inside a per-timestep :class:`~svformer_deploy.models.TemporalBatchNorm` the aten op sees (B, T*C, ...):
  timestep = channel // C;
* any other operand has no time axis (after the head collapses time): its counts get timestep -1.

A synaptic op's count is attributed to the timestep of its *input* element (for the Conv3d whose kernel spans
all T frames, each input spike's fan-out is booked at the spike's timestep).
"""

from __future__ import annotations

import functools
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch._C import _pop_torch_dispatch_stack, _push_on_torch_dispatch_stack
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from svformer_deploy.energy.rules import OP_CLASSES, module_rule, op_rule
from svformer_deploy.errors import EnergyError
from svformer_deploy.models.norm import TemporalBatchNorm

__all__ = ["OpCounts", "count_ops", "OpCounter", "COLUMNS", "MEMORY_COLUMNS"]

aten = torch.ops.aten
COLUMNS = ["layer", "timestep", "op_class", "count"]
MEMORY_COLUMNS = ["layer", "weight_values", "weight_reads", "weight_uses", "real_act_values", "binary_act_values",
                  "real_out_values", "binary_out_values", "state_values", "passes"]
"""Memory facts per layer (:attr:`OpCounts.memory`), summed over the batch: ``weight_values`` = numel of the
weights the layer uses (its footprint); ``weight_reads`` = weight values read when weights are stationary (each
weight once per image it is applied to: once per timestep per clip for time-folded layers, once per clip for the
head Conv3d whose kernel spans all T); ``weight_uses`` = synaptic ops with a weight operand (one weight fetch each
when weights are fetched per event); ``real/binary_act_values`` = input activation values read;
``real/binary_out_values`` = output values written (spikes are binary); ``state_values`` = membrane-potential
values read and written (2 per neuron update); ``passes`` = images per batch the weights are applied to."""

_EXACT_F32 = 1 << 24  # every integer up to 2**24 is exact in float32

_META_OPS = {
    aten.is_contiguous, aten.is_strides_like_format, aten.is_non_overlapping_and_dense, aten.size,
    aten.sym_size, aten.stride, aten.sym_stride, aten.storage_offset, aten.sym_storage_offset, aten.numel,
    aten.sym_numel, aten.dim, torch.ops.prim.layout, torch.ops.prim.device,
}


@dataclass
class OpCounts:
    """The result of :func:`count_ops`.

    Attributes:
        df: tidy table with columns ``layer, timestep, op_class, count`` (one row per non-zero count), sorted
            by execution order of the layers, then timestep, then op class. ``timestep`` is -1 for ops that
            act after time has been collapsed (or for models counted without a time axis). Counts are summed
            over the batch (all views of a video).
        num_steps: T used to split counts (None when counted without a time axis).
        batch: number of clips in the counted batch (views).
        input_shape: shape of the counted input.
        mode: ``"exact"`` (spike-aware), ``"dense"`` (every operand treated as real), ``"sparse"`` (exact,
            and MACs of real activations x weights skip zero activations: NeuroBench's effective MACs) or
            ``"expected"`` (built from stated rates by :func:`svformer_deploy.energy.conventions.expected_counts`).
        uncounted: aten op (or module) name -> {"calls", "elements"} for executed ops without a rule.
        internal: aten op name -> calls executed inside modules counted by a module rule.
        rules_used: names of the rules that counted something (see :func:`svformer_deploy.energy.rules_markdown`).
        memory: per layer memory facts (:data:`MEMORY_COLUMNS`); bytes and energy are applied by
            :mod:`svformer_deploy.energy.memory`.
    """

    df: pd.DataFrame
    num_steps: int | None
    batch: int
    input_shape: tuple[int, ...]
    mode: str
    uncounted: dict[str, dict[str, int]] = field(default_factory=dict)
    internal: dict[str, int] = field(default_factory=dict)
    memory: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MEMORY_COLUMNS))
    rules_used: tuple[str, ...] = ()

    def totals(self) -> dict[str, int]:
        """Total count per op class (every class of :data:`OP_CLASSES`, zeros included)."""
        s = self.df.groupby("op_class")["count"].sum()
        return {c: int(s.get(c, 0)) for c in OP_CLASSES}

    def per_layer(self) -> pd.DataFrame:
        """Counts per layer x op class (layers in execution order, op classes as columns)."""
        order = list(dict.fromkeys(self.df["layer"]))
        t = self.df.pivot_table(index="layer", columns="op_class", values="count", aggfunc="sum", fill_value=0)
        return t.reindex(order)

    def per_timestep(self) -> pd.DataFrame:
        """Counts per timestep x op class."""
        return self.df.pivot_table(index="timestep", columns="op_class", values="count", aggfunc="sum", fill_value=0)

    @property
    def dense_macs(self) -> int:
        """Sum of ``mac`` counts (the dense count when ``mode == "dense"``)."""
        return self.totals()["mac"]


def _storage_key(t: Tensor) -> int:
    """Identity of the memory behind ``t``: its storage address; on the meta device (no storage) the identity of
    the tensor it views (so ``W.t()`` of a meta parameter is still that parameter)."""
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return -1
    return ptr if ptr else id(t._base if t._base is not None else t)


@functools.lru_cache(maxsize=None)
def _not_intercepted(cls: type) -> str:
    return f"{cls.__name__} (not intercepted)"


def _is_binary(x: Tensor) -> bool:
    """True when every element of ``x`` is exactly 0 or 1.

    A real tensor almost always shows a non-binary value among its first elements, so its first 8 elements
    (read as Python numbers: cheaper than tensor ops), then a 256-element prefix are checked first; only tensors
    that pass both are checked in full (one pass, one synchronisation).
    """
    if x.dtype == torch.bool:
        return True
    if x.numel() == 0:
        return True
    if x.is_contiguous():  # x (x - 1) is 0 exactly where x is 0 or 1 (no overflow or underflow reaches 0)
        if any(v != 0 and v != 1 for v in x.view(-1)[:8].tolist()):  # NaN != 0 and NaN != 1: not binary
            return False
        head = x.view(-1)[:256]
        if bool((head * (head - 1)).any()):
            return False
    return not bool((x * (x - 1)).any())


class OpCounter:
    """Context manager that counts the ops of the forwards run inside it, by the rule table. Use
    :func:`count_ops` normally; rules call the public methods below.

    Args:
        model: the model; its parameters and buffers are the "weights", its dotted module names name layers.
        num_steps: T, or None to count without a time axis.
        batch: B of the input (needed to recognise time-folded layouts).
        dense: treat every operand as real (dense MACs; the ANN convention).
        fold_bn: count time-invariant BatchNorms as folded into the preceding layer (``bn_folded``).
        skip_zero_macs: real activation x weight MACs skip zero activations (sparsity-aware ANN).
    """

    def __init__(self, model: nn.Module, num_steps: int | None, batch: int, dense: bool = False,
                 fold_bn: bool = False, skip_zero_macs: bool = False) -> None:
        self.model = model
        self.T = num_steps
        self.B = batch
        self.dense = dense
        self.fold_bn = fold_bn
        self.skip_zero_macs = skip_zero_macs and not dense
        self.names = {m: n for n, m in model.named_modules()}
        self._module_rules = {m: r for m in self.names if (r := module_rule(m)) is not None}
        self.weights = {_storage_key(p) for m in self.names for p in (*m._parameters.values(), *m._buffers.values())
                        if p is not None}
        self.weights -= {-1, 0}
        self.stack: list[tuple[str, nn.Module]] = []
        self.counts: dict[tuple[str, str], list[Any]] = defaultdict(list)  # (layer, class) -> per-t vectors
        self.order: dict[str, int] = {}
        self.uncounted: dict[str, dict[str, int]] = defaultdict(lambda: {"calls": 0, "elements": 0})
        self.internal: dict[str, int] = defaultdict(int)
        self.mem: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(MEMORY_COLUMNS[1:], 0))
        self._seen_weights: set[tuple[str, int]] = set()
        self._spiking: set[nn.Module] = set()  # covered modules whose output is spikes by construction
        self._spike_outputs: dict[int, weakref.ref] = {}  # storage -> live spike tensor (no binary check needed)
        self.rules_used: dict[str, None] = {}
        self._rule: str | None = None
        self._handles: list[Any] = []
        self._mode: _CountingMode | None = None
        self._paused: nn.Module | None = None
        self._covered: list[tuple[nn.Module, Any]] = []  # (module, its module rule) running, innermost last
        self._in_rule = False
        self._uses: list[tuple[str, Tensor]] = []  # (layer, weight uses as a tensor of counts)
        self.trace_covered = False

    # ---------------------------------------------------------------- module tracking
    def _pre(self, module: nn.Module, args: tuple) -> None:
        name = self.names.get(module)
        if name is None:
            return
        self.stack.append((name, module))
        if self._covered:
            return
        rule = self._module_rules.get(module)
        if rule is None or not args or not isinstance(args[0], Tensor) \
                or (rule.accepts is not None and not rule.accepts(module, args)):
            return
        self._covered.append((module, rule))
        if not rule.after:
            self._rule = rule.name
            rule.fn(self, name or "model", module, args[0])
        if not self.trace_covered and self._mode is not None and not self._paused:
            # the module rule covers its ops: stop intercepting them (the mode stays entered; only the dispatch
            # stack entry is taken off and put back in _post, which is cheaper than leaving the mode)
            _pop_torch_dispatch_stack(None)
            self._paused = module

    def _post(self, module: nn.Module, args: tuple, out: Any) -> None:
        covered = self._covered
        if covered and covered[-1][0] is module:
            rule = covered[-1][1]
            if rule.after:
                self._rule = rule.name
                self._in_rule = True  # with trace_covered, the rule's own tensor ops are not the model's
                try:
                    rule.fn(self, self.layer, module, args, out)
                finally:
                    self._in_rule = False
            covered.pop()
        if self._spiking and module in self._spiking and isinstance(out, Tensor):
            self._spiking.discard(module)
            self._spike_outputs[_storage_key(out)] = weakref.ref(out)
        if self._paused is module and self._mode is not None:
            _push_on_torch_dispatch_stack(self._mode)
            self._paused = None
            self.internal[_not_intercepted(type(module))] += 1
        stack = self.stack
        if stack and stack[-1][1] is module:
            stack.pop()

    def __enter__(self) -> "OpCounter":
        self._handles = [nn.modules.module.register_module_forward_pre_hook(self._pre),
                         nn.modules.module.register_module_forward_hook(self._post)]
        self._mode = _CountingMode(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._mode is not None
        if self._paused is not None:  # an error inside a covered module left the mode off the dispatch stack
            _push_on_torch_dispatch_stack(self._mode)
        self._mode.__exit__(*exc)
        self._mode = None
        self._paused = None
        self._covered.clear()
        for h in self._handles:
            h.remove()
        self._handles = []
        self.stack.clear()

    # ---------------------------------------------------------------- the rules' interface
    @property
    def layer(self) -> str:
        """Dotted name of the innermost running module (``"model"`` for the top level)."""
        return (self.stack[-1][0] or "model") if self.stack else "model"

    @property
    def module(self) -> nn.Module | None:
        """The innermost running module."""
        return self.stack[-1][1] if self.stack else None

    def using(self, rule_name: str) -> None:
        """Attribute the following bookings to the rule named ``rule_name`` (a module rule applying an aten
        rule lists that rule in ``OpCounts.rules_used``)."""
        self._rule = rule_name

    def book(self, op_class: str, per_t: Any, layer: str | None = None) -> None:
        """Book counts: ``per_t`` is an int (no time axis), or a (T,) tensor / list of ints (one per timestep)."""
        layer = self.layer if layer is None else layer
        self.order.setdefault(layer, len(self.order))
        self.counts[(layer, op_class)].append(per_t)
        if self._rule is not None:
            self.rules_used.setdefault(self._rule, None)

    def layout(self, x: Tensor) -> tuple[str, int] | None:
        """How to split an operand's elements over time (see the module docstring)."""
        T, B = self.T, self.B
        if T is None or x.dim() == 0:
            return None
        mod = self.module
        if isinstance(mod, TemporalBatchNorm) and mod.mode == "per_timestep" and x.dim() >= 2 \
                and x.shape[1] == T * mod.num_features:
            return ("channel", 1)
        if x.shape[0] % (T * B) == 0 or (x.dim() >= 2 and x.shape[0] == T and x.shape[1] == B):
            return ("lead", 0)
        if x.dim() == 5 and x.shape[0] == B and x.shape[2] == T:
            return ("axis", 2)
        return None

    def split(self, v: Tensor, layout: tuple[str, int] | None, bound: int | None = None) -> Tensor:
        """Sum a per-element count tensor ``v`` (shaped like the operand) per timestep, in float64.

        ``bound`` (optional) is an upper bound of ``v``'s elements, which are non-negative integers: when
        bound x (elements summed per timestep) < 2**24, a float32 ``v`` is summed in float32, which is then
        exact (every partial sum is an integer below 2**24), and only the (T,) result is cast to float64.
        """
        T = self.T
        n = v.numel() if layout is None or T is None else v.numel() // T
        dtype = None if bound is not None and v.dtype == torch.float32 and bound * n < _EXACT_F32 \
            else torch.float64
        if layout is None:
            s = v.sum(dtype=dtype)
        else:
            kind, axis = layout
            assert T is not None
            if kind == "lead":
                s = v.reshape(T, -1).sum(1, dtype=dtype)
            elif kind == "axis":
                s = v.movedim(axis, 0).reshape(T, -1).sum(1, dtype=dtype)
            else:  # channel: (B, T*C, ...)
                s = v.reshape(v.shape[0], T, -1).sum((0, 2), dtype=dtype)
        return s if dtype is not None else s.to(torch.float64)

    def even(self, total: int, layout: tuple[str, int] | None) -> Any:
        """A count spread evenly over the timesteps of a uniform layout (dense counts)."""
        if layout is None:
            return int(total)
        assert self.T is not None and total % self.T == 0
        return [int(total // self.T)] * self.T

    def is_weight(self, t: Tensor) -> bool:
        """True when ``t`` shares storage with a parameter or buffer of the model (no value check)."""
        return _storage_key(t) in self.weights

    def kind(self, t: Tensor) -> str:
        """``"weight"``, ``"binary"`` or ``"real"`` (see :mod:`svformer_deploy.energy.rules`)."""
        if _storage_key(t) in self.weights:
            return "weight"
        if self.dense:
            return "real"
        ref = self._spike_outputs.get(_storage_key(t))
        if ref is not None and ref() is not None:  # a view of a live neuron output: spikes by construction
            return "binary"
        return "binary" if _is_binary(t) else "real"

    def read_synapse(self, weight: Tensor | None, act: Tensor, kind: str, out: Tensor | None, passes: int,
                     weight_uses: Any) -> None:
        """Record a synaptic op's memory facts (see :data:`MEMORY_COLUMNS`)."""
        layer = self.layer
        m = self.mem[layer]
        if weight is not None:
            key = (layer, _storage_key(weight))
            if key not in self._seen_weights:
                self._seen_weights.add(key)
                m["weight_values"] += weight.numel()
            m["weight_reads"] += weight.numel() * passes
            m["passes"] += passes
            if isinstance(weight_uses, Tensor):
                self._uses.append((layer, weight_uses))  # summed once for all layers in result()
            else:
                m["weight_uses"] += sum(weight_uses) if isinstance(weight_uses, list) else weight_uses
        m["binary_act_values" if kind == "binary" else "real_act_values"] += act.numel()
        if out is not None:
            m["real_out_values"] += out.numel()

    def read_neuron(self, layer: str, updates: int, stateful: bool, spikes: bool) -> None:
        """Record a neuron layer's memory facts: ``updates`` element-steps; the state V read and written per
        update when ``stateful``; outputs written as spikes (1 bit) or real values."""
        m = self.mem[layer]
        self.order.setdefault(layer, len(self.order))
        if spikes and self._covered:
            self._spiking.add(self._covered[-1][0])
        m["state_values"] += 2 * updates if stateful else 0
        m["binary_out_values" if spikes else "real_out_values"] += updates

    # ---------------------------------------------------------------- dispatch
    def handle(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        packet = func._overloadpacket
        if self._in_rule:
            return
        if self._covered:
            self.internal[str(packet)] += 1
            return
        rule = op_rule(packet)
        if rule is None:
            n = sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, Tensor))
            self.uncounted[str(packet)]["calls"] += 1
            self.uncounted[str(packet)]["elements"] += int(n)
            return
        self._rule = rule.name
        rule.fn(self, args, kwargs, out)

    # ---------------------------------------------------------------- result
    def result(self, input_shape: tuple[int, ...]) -> OpCounts:
        # one row per (layer, op class): columns 0..T-1 the per-timestep sums, column T the parts without a
        # time axis (each rounded on its own, as booked); every value is an integer held exactly in float64
        keys = list(self.counts)
        steps = self.T or 1
        mat = np.zeros((len(keys), steps + 1), dtype=np.float64)
        rows_t, vecs, rows_l, lists = [], [], [], []  # per-timestep tensors / lists, added in one pass each
        for i, k in enumerate(keys):
            for p in self.counts[k]:
                if isinstance(p, Tensor) and p.dim() == 1:
                    rows_t.append(i)
                    vecs.append(p)
                elif isinstance(p, list) and len(p) == steps:
                    rows_l.append(i)
                    lists.append(p)
                elif isinstance(p, list):
                    mat[i, :steps] += p
                else:
                    mat[i, steps] += round(float(p))
        cols = np.arange(steps)[None, :]
        if vecs:
            np.add.at(mat, (np.asarray(rows_t)[:, None], cols), torch.stack(vecs).to(torch.float64).numpy())
        if lists:
            np.add.at(mat, (np.asarray(rows_l)[:, None], cols), np.asarray(lists, dtype=np.float64))
        counts = np.rint(mat).astype(np.int64)
        ki, ti = np.nonzero(counts)
        layer_of = np.array([k[0] for k in keys] or [""], dtype=object)
        class_of = np.array([k[1] for k in keys] or [""], dtype=object)
        class_rank = {c: i for i, c in enumerate(OP_CLASSES)}
        layer_rank = np.array([self.order[k[0]] for k in keys] or [0], dtype=np.int64)
        op_rank = np.array([class_rank[k[1]] for k in keys] or [0], dtype=np.int64)
        timestep = np.where(ti == steps, -1, ti).astype(np.int64)
        idx = np.lexsort((op_rank[ki], timestep, layer_rank[ki]))
        ki, timestep = ki[idx], timestep[idx]
        df = pd.DataFrame({"layer": pd.Series(layer_of[ki], dtype=object), "timestep": timestep,
                           "op_class": pd.Series(class_of[ki], dtype=object), "count": counts[ki, ti[idx]]})
        mem_layers = sorted(self.mem, key=lambda layer: self.order.get(layer, 1 << 30))
        uses = dict.fromkeys(mem_layers, 0.0)
        if self._uses:
            flat = torch.cat([t.reshape(-1) for _, t in self._uses]).to(torch.float64).numpy()
            part = np.repeat(np.arange(len(self._uses)), [t.numel() for _, t in self._uses])
            for (layer, _), v in zip(self._uses, np.bincount(part, weights=flat, minlength=len(self._uses))):
                uses[layer] += v
        mem_cols: dict[str, Any] = {"layer": np.array(mem_layers, dtype=object)}
        for c in MEMORY_COLUMNS[1:]:
            vals = [self.mem[layer][c] for layer in mem_layers]
            if c == "weight_uses":
                vals = [round(float(v) + uses[layer]) for v, layer in zip(vals, mem_layers)]
            mem_cols[c] = np.array(vals, dtype=np.int64)
        mem = pd.DataFrame(mem_cols)
        mode = "dense" if self.dense else "sparse" if self.skip_zero_macs else "exact"
        return OpCounts(df=df, memory=mem, num_steps=self.T, batch=self.B, input_shape=tuple(input_shape), mode=mode,
                        uncounted={k: dict(v) for k, v in sorted(self.uncounted.items())},
                        internal=dict(sorted(self.internal.items())), rules_used=tuple(self.rules_used))


class _CountingMode(TorchDispatchMode):
    def __init__(self, counter: OpCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func._overloadpacket in _META_OPS:
            return NotImplemented
        out = func(*args, **kwargs)
        self.counter.handle(func, args, kwargs, out)
        return out


def _infer_steps(model: nn.Module, x: Tensor) -> int | None:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "num_frames"):
        return int(cfg.num_frames)
    return None


def count_ops(model: nn.Module, clips: Tensor, *, dense: bool = False, fold_bn: bool = False,
              num_steps: int | None | str = "auto", batch: int | None = None,
              trace_neurons: bool = False, skip_zero_macs: bool = False) -> OpCounts:
    """Count the operations of ``model(clips)`` per layer x timestep x op class (rules: :mod:`.rules`).

    Args:
        model: any ``nn.Module`` (run in eval mode, without gradients).
        clips: the input batch; for SVFormer (B, C, T, H, W). Counts are summed over the batch.
        dense: count every synaptic op as a dense MAC (the ANN / fvcore-style convention).
        fold_bn: book time-invariant BatchNorms (``bn="shared"`` or BatchNorm3d) as ``bn_folded`` (no cost).
        num_steps: T for the per-timestep split; ``"auto"`` = ``model.config.num_frames`` when the model has
            such a config (SVFormer), else no time axis; ``None`` = no time axis.
        batch: B, used to recognise time-folded layouts; default ``clips.shape[0]`` (pass it for time-major
            (T, B, ...) inputs).
        trace_neurons: also intercept the aten ops executed inside modules counted by a module rule (neurons)
            and list them in ``OpCounts.internal`` (slower; their cost is given by the module rule either way).
        skip_zero_macs: MACs of a real activation x weight skip the activation's zeros (NeuroBench's effective
            MACs; the sparsity-aware ANN). Ignored with ``dense``.

    Returns:
        :class:`OpCounts`.
    """
    if not isinstance(clips, Tensor):
        raise EnergyError(f"clips must be a tensor, got {type(clips).__name__}; pass a (B, C, T, H, W) batch")
    T = _infer_steps(model, clips) if num_steps == "auto" else num_steps
    was_training = model.training
    if was_training:
        model.eval()
    counter = OpCounter(model, T, int(clips.shape[0] if batch is None else batch), dense=dense, fold_bn=fold_bn,
                        skip_zero_macs=skip_zero_macs)
    counter.trace_covered = trace_neurons
    try:
        with torch.no_grad(), counter:
            model(clips)
    finally:
        if was_training:
            model.train()
    return counter.result(tuple(clips.shape))
