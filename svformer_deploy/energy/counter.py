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

Counting plans (what makes the second and later counts of a model cheap, e.g. one count per video in a report):
the first count of a model at an input shape and options runs as above and records a plan: the bookings of every
*static* rule (one whose counts depend only on shapes, modules and options; ``register_rule(static=True)``) and
of every op outside the covered modules, and the sequence of covered module calls. A later count replays the
plan only when its key is the same: the same model object with the same modules, the same public attributes of
every module (a stride, a padding, a flag its forward reads), the same hooks and parameter storages, the same
input shape, dtype and device, options and rule table. The replay runs the model with the covered modules'
forwards wrapped for that one forward, re-runs only the non-static (value-dependent) rules, and adds the
recorded static bookings. A module rule may also make a call *replayable* (:meth:`OpCounter.replayable`): a
convolution or linear layer whose input is spikes by construction is then replayed by its one matrix-vector
product (a sum when every input has the same fan-out), written into a row of a buffer the plan keeps, and one
whose input is real (dense counts) by a check that it still is; everything else that call books is part of the
plan, and an input of another kind than the plan's makes the replay count in full. The replay's module calls are
checked against the plan's, and a module with a rule that the plan never saw called trips the check; on any
difference the count is redone in full. A model whose code outside the covered modules reads a tensor value
into Python (``.item()``, ``if tensor:``, which may branch on data) or whose ops outside them need a
value-dependent rule is never planned. What a plan cannot see is Python state outside the model's modules (a
global variable) or in their private attributes that changes the ops between layers: count such a model with
``count_ops(..., plan=False)``, which always counts in full. Every module is counted in eval mode, and each
module's own mode is given back afterwards. A count patches the model's modules for its forward and a replay
writes into its plan's buffer: count one model from one thread at a time.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from svformer_deploy.energy.rules import _EXACT_F32, OP_CLASSES, Rule, module_rule, op_rule, table_version
from svformer_deploy.errors import EnergyError
from svformer_deploy.models.norm import TemporalBatchNorm

__all__ = ["OpCounts", "count_ops", "OpCounter", "COLUMNS", "MEMORY_COLUMNS"]

try:  # private: a module rule takes the counting mode off the dispatch stack while its module runs (faster)
    from torch._C import _pop_torch_dispatch_stack, _push_on_torch_dispatch_stack
except ImportError:  # another torch: the mode stays on and sees the covered ops too (same counts, slower)
    _pop_torch_dispatch_stack = _push_on_torch_dispatch_stack = None
    warnings.warn(f"svformer-deploy: torch {torch.__version__} lacks torch._C._push_on_torch_dispatch_stack; "
                  "energy counting intercepts the ops inside neuron layers too (same counts, slower)",
                  RuntimeWarning, stacklevel=2)

aten = torch.ops.aten
COLUMNS = ["layer", "timestep", "op_class", "count"]
MEMORY_COLUMNS = ["layer", "weight_values", "weight_reads", "weight_uses", "real_act_values", "binary_act_values",
                  "real_out_values", "binary_out_values", "state_values", "passes"]
"""Memory facts per layer (:attr:`OpCounts.memory`), summed over the batch: ``weight_values`` = numel of the
weights the layer uses (its footprint); ``weight_reads`` = weight values read when weights are stationary (each
weight once per image it is applied to: once per timestep per view for time-folded layers, once per view for the
head Conv3d whose kernel spans all T); ``weight_uses`` = synaptic ops with a weight operand (one weight fetch each
when weights are fetched per event); ``real/binary_act_values`` = input activation values read;
``real/binary_out_values`` = output values written (spikes are binary); ``state_values`` = membrane-potential
values read and written (2 per neuron update); ``passes`` = images per batch the weights are applied to."""


_META_OPS = {
    aten.is_contiguous, aten.is_strides_like_format, aten.is_non_overlapping_and_dense, aten.size,
    aten.sym_size, aten.stride, aten.sym_stride, aten.storage_offset, aten.sym_storage_offset, aten.numel,
    aten.sym_numel, aten.dim, torch.ops.prim.layout, torch.ops.prim.device,
}


# ops that read a tensor value into Python: code outside the covered modules that runs one may branch on data
_VALUE_OPS = {aten._local_scalar_dense, aten.is_nonzero, aten.item, aten.equal, aten.nonzero, aten.nonzero_static,
              aten.masked_select, aten._unique, aten._unique2, aten.unique_dim, aten.unique_consecutive}


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

    :func:`count_ops` hands over its counts as arrays and the two tables (``df``, ``memory``) are made from them
    on first access (pandas frames cost more than the arrays they hold; a report that only needs totals, or
    that sums counts over many videos first, never pays for them); ``totals()`` is summed from the arrays.
    """

    def __init__(self, df: pd.DataFrame | None = None, num_steps: int | None = None, batch: int = 1,
                 input_shape: tuple[int, ...] = (), mode: str = "exact",
                 uncounted: dict[str, dict[str, int]] | None = None, internal: dict[str, int] | None = None,
                 memory: pd.DataFrame | None = None, rules_used: tuple[str, ...] = (), *,
                 tables: Callable[[], tuple[pd.DataFrame, pd.DataFrame]] | None = None,
                 totals: dict[str, int] | None = None) -> None:
        if (df is None) == (tables is None):
            raise TypeError("OpCounts takes df (and memory) or tables, not both or neither")
        self._df = df
        self._memory = memory if memory is not None or tables is not None \
            else pd.DataFrame(columns=MEMORY_COLUMNS)
        self._tables = tables
        self._totals = totals
        self.num_steps = num_steps
        self.batch = batch
        self.input_shape = input_shape
        self.mode = mode
        self.uncounted = {} if uncounted is None else uncounted
        self.internal = {} if internal is None else internal
        self.rules_used = rules_used

    def _make_tables(self) -> None:
        assert self._tables is not None
        self._df, self._memory = self._tables()
        self._tables = None

    @property
    def df(self) -> pd.DataFrame:
        if self._df is None:
            self._make_tables()
        return self._df

    @property
    def memory(self) -> pd.DataFrame:
        if self._memory is None:
            self._make_tables()
        return self._memory

    def __repr__(self) -> str:
        return (f"OpCounts(mode={self.mode!r}, num_steps={self.num_steps}, batch={self.batch}, "
                f"input_shape={self.input_shape}, totals={self.totals()})")

    def totals(self) -> dict[str, int]:
        """Total count per op class (every class of :data:`OP_CLASSES`, zeros included)."""
        if self._totals is not None:
            return dict(self._totals)
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
    (read as Python numbers: cheaper than tensor ops; for a non-contiguous tensor, the first 8 of its last axis),
    then a 256-element prefix of a contiguous tensor are checked first; only tensors that pass are checked in
    full (one pass, one synchronisation). x (x - 1) is 0 exactly where x is 0 or 1 (no overflow or underflow
    reaches 0); NaN != 0 and NaN != 1, so NaN is not binary.
    """
    if x.dtype == torch.bool:
        return True
    if x.numel() == 0:
        return True
    if x.is_contiguous():
        if any(v != 0 and v != 1 for v in x.view(-1)[:8].tolist()):
            return False
        head = x.view(-1)[:256]
        if bool((head * (head - 1)).any()):
            return False
    else:
        row = x
        while row.dim() > 1:
            row = row[0]
        if any(v != 0 and v != 1 for v in row.reshape(-1)[:8].tolist()):
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
                 fold_bn: bool = False, skip_zero_macs: bool = False, *, plan: _Plan | None = None) -> None:
        self.model = model
        self.T = num_steps
        self.B = batch
        self.dense = dense
        self.fold_bn = fold_bn
        self.skip_zero_macs = skip_zero_macs and not dense
        if plan is None:
            self.names = {m: n for n, m in model.named_modules()}
            self._module_rules = {m: r for m in self.names if (r := module_rule(m)) is not None}
            self.weights = {_storage_key(p) for m in self.names
                            for p in (*m._parameters.values(), *m._buffers.values()) if p is not None}
            self.weights -= {-1, 0}
        else:  # replaying a plan: its wrappers know the covered modules; the weights are the plan's (same storages)
            self.names, self._module_rules, self.weights = {}, {}, plan.weights
        self.stack: list[tuple[str, nn.Module]] = []
        self.counts: dict[tuple[str, str], list[Any]] = defaultdict(list)  # (layer, class) -> per-t vectors
        self.order: dict[str, int] = {}
        self.uncounted: dict[str, dict[str, int]] = defaultdict(lambda: {"calls": 0, "elements": 0})
        self.internal: dict[str, int] = defaultdict(int)
        self.mem: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(MEMORY_COLUMNS[1:], 0))
        self._seen_weights: set[tuple[str, int]] = set()
        self._static_seen: set[tuple[str, int]] = set()  # of them, those whose footprint a plan books
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
        # recording a counting plan: bookings of static rules and of ops outside covered modules are also kept
        # apart (they are what a plan replays); _plannable turns False when this forward cannot be replayed
        self.recording = False
        self._static_now = False
        self._plannable = True
        self._static_counts: dict[tuple[str, str], list[Any]] = defaultdict(list)
        self._static_mem: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(MEMORY_COLUMNS[1:], 0))
        self._static_uses: list[tuple[str, Tensor]] = []
        self._calls: list[nn.Module] = []  # covered modules, in the order they returned
        self._call_rules: dict[nn.Module, tuple[str, Rule]] = {}
        self._spiking_calls: set[nn.Module] = set()
        self._called: set[nn.Module] = set()  # every module called while recording
        self._fast: dict[nn.Module, dict[tuple, tuple]] = {}  # see replayable()
        self._fast_calls: list[tuple] = []  # its binary calls, in the order they returned
        self._fast_done: list[int] = []  # replaying: the binary calls booked by their product so far
        self._plan = plan
        self._base: tuple[list[tuple[str, str]], np.ndarray] | None = None  # a replayed plan's static bookings
        self._mem_base: tuple[list[str], np.ndarray] | None = None  # and its static memory facts
        self._memo: dict[Any, Any] = {}  # see memo(); a plan shares it with the counts that replay it
        self._cell_cache: dict[tuple, Any] = {}  # see _cells() and result(); shared likewise
        if plan is not None:  # start from the plan's static bookings (see _replay)
            self._base = (plan.keys, plan.counts)
            self._mem_base = (plan.mem_layers, plan.mem)
            self._memo, self._cell_cache = plan.memo, plan.cells
            self._uses = list(plan.uses)
            self.order = dict(plan.order)
            self.uncounted.update({k: dict(v) for k, v in plan.uncounted.items()})
            self.internal.update(plan.internal)
            self.rules_used = dict(plan.rules_used)
            self._seen_weights = set(plan.seen)

    # ---------------------------------------------------------------- module tracking
    def _pre(self, module: nn.Module, args: tuple) -> None:
        name = self.names.get(module)
        if name is None:
            return
        self.stack.append((name, module))
        if self.recording:
            self._called.add(module)
        if self._covered:
            return
        rule = self._module_rules.get(module)
        if rule is None or not args or not isinstance(args[0], Tensor) \
                or (rule.accepts is not None and not rule.accepts(module, args)):
            return
        self._covered.append((module, rule))
        if not rule.after:
            self._rule = rule.name
            self._static_now = self.recording and rule.static
            try:
                rule.fn(self, name or "model", module, args[0])
            finally:
                self._static_now = False
        if not self.trace_covered and self._mode is not None and not self._paused \
                and _pop_torch_dispatch_stack is not None:
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
                self._static_now = self.recording and rule.static
                try:
                    rule.fn(self, self.layer, module, args, out)
                finally:
                    self._in_rule = False
                    self._static_now = False
            covered.pop()
            if self.recording:
                self._calls.append(module)
                self._call_rules[module] = (self.layer, rule)
        if self._spiking and module in self._spiking and isinstance(out, Tensor):
            self._spiking.discard(module)
            self._spike_outputs[_storage_key(out)] = weakref.ref(out)
            if self.recording:
                self._spiking_calls.add(module)
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

    def book(self, op_class: str, per_t: Any, layer: str | None = None, static: bool = False) -> None:
        """Book counts: ``per_t`` is an int (no time axis), or a (T,) tensor / list of ints (one per timestep).
        ``static``: part of a call that a replay books by :meth:`replayable`'s product (a plan keeps it)."""
        layer = self.layer if layer is None else layer
        self.order.setdefault(layer, len(self.order))
        self.counts[(layer, op_class)].append(per_t)
        if self._static_now or static:
            self._static_counts[(layer, op_class)].append(per_t)
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
        key = _storage_key(t)
        if key in self.weights:
            return "weight"
        if self.dense:
            return "real"
        if self._live_spikes(key):  # a view of a live neuron output: spikes by construction
            return "binary"
        return "binary" if _is_binary(t) else "real"

    def spikes_by_construction(self, x: Tensor) -> bool:
        """True when ``x`` views the live output of a neuron module whose output is spikes (no value check)."""
        return self._live_spikes(_storage_key(x))

    def _live_spikes(self, storage: int) -> bool:
        ref = self._spike_outputs.get(storage)
        return ref is not None and ref() is not None

    def replayable(self, module: nn.Module, x: Tensor, kind: str, op_class: str | None = None,
                   per_input: Tensor | None = None) -> bool:
        """Whether a plan's replay may book this module call without running its rule (``after=True`` rules;
        ``x`` is the module's input, of :meth:`kind` ``kind``). Two cases:

        * ``kind == "binary"`` with ``per_input``: the rule books ``torch.mv(x.reshape(T, -1), per_input)`` as
          the call's ``op_class`` count and as its weight uses, and ``x`` is spikes by construction; a replay
          books that one product, for a later input of the same shape and dtype that is again spikes by
          construction;
        * ``kind == "real"`` without ``per_input``: every booking of the call depends on shapes only (dense
          counts); a replay books nothing more, for a later input of the same shape and dtype that is again
          real.

        When a plan is being recorded and the case applies, this registers the call and returns True: the rule
        must then book everything else (everything, for a real input) with ``static=True`` (a plan keeps it).
        Otherwise it returns False. A replay whose input is of another kind than the plan's counts in full."""
        if not (self.recording and self._in_rule and self.T):
            return False
        if per_input is not None and not (kind == "binary" and not self.dense and self.spikes_by_construction(x)):
            return False
        if per_input is None and (kind != "real" or self.skip_zero_macs):
            return False
        if per_input is not None and self._fast_calls and per_input.device != self._fast_calls[0][2].device:
            return False  # a replay writes the products of all such calls into one buffer
        layer = self.layer
        spec = None if per_input is None else ((layer, op_class), layer, per_input)
        self._fast.setdefault(module, {})[(x.shape, x.dtype)] = spec
        if spec is not None:
            self._fast_calls.append(spec)
        return True

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per ``key`` for this counter and the counts that replay its plan: for a
        rule's facts that depend only on shapes, kinds and options (the key must hold all it depends on)."""
        v = self._memo.get(key)
        if v is None:
            v = self._memo[key] = make()
        return v

    @staticmethod
    def synapse_facts(weight: Tensor | None, act: Tensor, kind: str, out: Tensor | None,
                      passes: int) -> dict[str, int]:
        """A synaptic op's memory facts but ``weight_values`` and ``weight_uses`` (see :data:`MEMORY_COLUMNS`):
        weights read ``passes`` times when stationary, input values read, output values written."""
        d: dict[str, int] = {}
        if weight is not None:
            d["weight_reads"] = weight.numel() * passes
            d["passes"] = passes
        d["binary_act_values" if kind == "binary" else "real_act_values"] = act.numel()
        if out is not None:
            d["real_out_values"] = out.numel()
        return d

    def read_synapse(self, weight: Tensor | None, act: Tensor, kind: str, out: Tensor | None, passes: int,
                     weight_uses: Any) -> None:
        """Record a synaptic op's memory facts (see :data:`MEMORY_COLUMNS`)."""
        self.read_facts(weight, self.synapse_facts(weight, act, kind, out, passes), weight_uses)

    @staticmethod
    def storage_key(t: Tensor) -> int:
        """Identity of the memory behind ``t`` (what :meth:`kind` and :meth:`read_facts` compare)."""
        return _storage_key(t)

    def read_facts(self, weight: Tensor | None, facts: dict[str, int], weight_uses: Any,
                   weight_key: int | None = None, static: bool = False) -> None:
        """Record :meth:`synapse_facts`, plus the weight's footprint the first time this layer reads it in this
        forward, and ``weight_uses`` (an int, a list per timestep or a tensor of counts) when there is a weight
        (``weight_key``: its :meth:`storage_key`, when the caller has it). ``static``: part of a call that a
        replay books by :meth:`replayable` (uses given as a tensor are that call's product: never static)."""
        layer = self.layer
        if weight is not None:
            key = (layer, _storage_key(weight) if weight_key is None else weight_key)
            if key not in self._seen_weights:
                self._seen_weights.add(key)
                if static or self._static_now:  # a replay starts with it seen (booked from the plan)
                    self._static_seen.add(key)
                self._add_mem(layer, {"weight_values": weight.numel()}, static)
            if isinstance(weight_uses, Tensor):
                self._uses.append((layer, weight_uses))  # summed once for all layers in result()
                if self._static_now:
                    self._static_uses.append((layer, weight_uses))
            else:
                self._add_mem(layer, {"weight_uses": sum(weight_uses) if isinstance(weight_uses, list)
                                      else weight_uses}, static)
        self._add_mem(layer, facts, static)

    def _add_mem(self, layer: str, d: dict[str, Any], static: bool = False) -> None:
        for m in (self.mem[layer], self._static_mem[layer]) if self._static_now or static else (self.mem[layer],):
            for k, v in d.items():
                m[k] += v

    def read_neuron(self, layer: str, updates: int, stateful: bool, spikes: bool) -> None:
        """Record a neuron layer's memory facts: ``updates`` element-steps; the state V read and written per
        update when ``stateful``; outputs written as spikes (1 bit) or real values."""
        self.order.setdefault(layer, len(self.order))
        if spikes and self._covered:
            self._spiking.add(self._covered[-1][0])
        self._add_mem(layer, {"state_values": 2 * updates if stateful else 0,
                              "binary_out_values" if spikes else "real_out_values": updates})

    # ---------------------------------------------------------------- dispatch
    def handle(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        packet = func._overloadpacket
        if self._in_rule:
            return
        if self._covered:
            self.internal[str(packet)] += 1
            return
        if packet in _VALUE_OPS:
            self._plannable = False
        rule = op_rule(packet)
        if rule is None:
            n = sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, Tensor))
            self.uncounted[str(packet)]["calls"] += 1
            self.uncounted[str(packet)]["elements"] += int(n)
            return
        self._rule = rule.name
        if not rule.static:
            self._plannable = False
            rule.fn(self, args, kwargs, out)
            return
        self._static_now = self.recording
        try:
            rule.fn(self, args, kwargs, out)
        finally:
            self._static_now = False

    # ---------------------------------------------------------------- result
    def _accumulate(self, counts: dict[tuple[str, str], list[Any]], index: dict[tuple[str, str], int],
                    mat: np.ndarray) -> None:
        """Add bookings to ``mat`` (one row per key of ``index``): columns 0..T-1 the per-timestep sums, column T
        the parts without a time axis (each rounded on its own, as booked); every value is an integer held
        exactly in float64."""
        steps = self.T or 1
        rows_t, vecs, rows_l, lists = [], [], [], []  # per-timestep tensors / lists, added in one pass each
        for k, parts in counts.items():
            i = index[k]
            for p in parts:
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
        cells = mat[:, :steps]  # a view: np.add.at writes into mat
        if vecs:
            np.add.at(cells, rows_t, torch.stack(vecs).to("cpu", torch.float64).numpy())
        if lists:
            np.add.at(cells, rows_l, np.array(lists, dtype=np.float64))

    def static_matrix(self) -> tuple[list[tuple[str, str]], np.ndarray]:
        """The recorded static bookings as (keys, matrix) (see :meth:`_accumulate`)."""
        keys = list(self._static_counts)
        mat = np.zeros((len(keys), (self.T or 1) + 1), dtype=np.float64)
        self._accumulate(self._static_counts, {k: i for i, k in enumerate(keys)}, mat)
        return keys, mat

    def _cells(self, keys: list[tuple[str, str]], steps: int) -> tuple[np.ndarray, ...]:
        """Every (key, timestep) cell of the count matrix in the table's order (layers in execution order, then
        timestep, then op class): (layer, timestep, op class, flat cell index), each an array (the strings as
        pandas arrays), and the index in :data:`OP_CLASSES` of each key's class; kept per key list (a replayed
        plan books the same keys every time)."""
        cache_key = (tuple(keys), steps)
        cells = self._cell_cache.get(cache_key)
        if cells is None:
            class_rank = {c: i for i, c in enumerate(OP_CLASSES)}
            n = len(keys)
            layer_rank = np.repeat(np.array([self.order[k[0]] for k in keys], dtype=np.int64), steps + 1)
            op_rank = np.repeat(np.array([class_rank[k[1]] for k in keys], dtype=np.int64), steps + 1)
            timestep = np.tile(np.where(np.arange(steps + 1) == steps, -1, np.arange(steps + 1)), n).astype(np.int64)
            cell = np.lexsort((op_rank, timestep, layer_rank))
            layer_of = np.repeat(np.array([k[0] for k in keys], dtype=object), steps + 1)
            class_of = np.repeat(np.array([k[1] for k in keys], dtype=object), steps + 1)
            # pandas arrays of the default dtype for strings, so that a table takes its rows without re-checking
            # every string
            cells = self._cell_cache[cache_key] = (pd.Series(layer_of[cell]).array, timestep[cell],
                                                   pd.Series(class_of[cell]).array, cell,
                                                   np.array([class_rank[k[1]] for k in keys], dtype=np.int64))
        return cells

    def _layout(self, steps: int) -> tuple:
        """Where this count's bookings go: (count keys, row of each, :meth:`_cells`, memory layers, row of each,
        the memory table's row order, its layers in that order); kept with the plan, per the keys and layers
        booked beyond the plan's (a replay books the same ones every time)."""
        base_keys = self._base[0] if self._base is not None else []
        base_layers = self._mem_base[0] if self._mem_base is not None else []
        cache_key = ("layout", len(base_keys), len(base_layers), tuple(self.counts), tuple(self.mem), steps)
        got = self._cell_cache.get(cache_key)
        if got is None:
            keys, index = _rows(base_keys, self.counts)
            layers, row = _rows(base_layers, self.mem)
            perm = sorted(range(len(layers)), key=lambda i: self.order.get(layers[i], 1 << 30))
            got = self._cell_cache[cache_key] = (keys, index, self._cells(keys, steps), layers, row, perm,
                                                 [layers[i] for i in perm])
        return got

    def result(self, input_shape: tuple[int, ...]) -> OpCounts:
        # the bookings of this forward, plus, when a plan was replayed, its static bookings as one matrix
        steps = self.T or 1
        keys, index, cells, layers, row, perm, mem_layers = self._layout(steps)
        base = self._base[1] if self._base is not None else None
        mat = np.zeros((len(keys), steps + 1), dtype=np.float64)
        if base is not None:
            mat[:len(base)] = base
        self._accumulate(self.counts, index, mat)
        plan = self._plan
        if plan is not None and plan.fast_calls:  # a replay's products, one row per binary call (_replay)
            assert len(self._fast_done) == len(plan.fast_calls) and plan.fast_out is not None
            products = plan.fast_out.to("cpu", torch.float64).numpy()
            products *= plan.fast_multiplier
            np.add.at(mat[:, :steps], plan.fast_rows, products)
        counts = np.rint(mat).astype(np.int64)
        layer_of, timestep, class_of, cell, class_index = cells
        per_class = np.zeros(len(OP_CLASSES), dtype=np.int64)
        np.add.at(per_class, class_index, counts.sum(1))
        counts = counts.reshape(-1)[cell]
        cols = MEMORY_COLUMNS[1:]
        base_facts = self._mem_base[1] if self._mem_base is not None else None
        facts = np.zeros((len(layers), len(cols)), dtype=np.float64)
        if base_facts is not None:
            facts[:len(base_facts)] = base_facts
        if self.mem:
            facts[[row[layer] for layer in self.mem]] += _fact_matrix(self.mem)
        if self._uses:  # weight uses booked as tensors of counts: one segmented sum for all of them
            parts = [t.reshape(-1) for _, t in self._uses]
            sizes = np.array([t.numel() for t in parts], dtype=np.int64)
            flat = np.append(torch.cat(parts).to("cpu", torch.float64).numpy(), 0.0)
            sums = np.where(sizes > 0, np.add.reduceat(flat, np.cumsum(sizes) - sizes), 0.0)
            np.add.at(facts[:, cols.index("weight_uses")], [row[layer] for layer, _ in self._uses], sums)
        if plan is not None and plan.fast_calls:  # each product is also its call's weight uses
            np.add.at(facts[:, cols.index("weight_uses")], plan.fast_mem_rows, products.sum(1))
        values = np.rint(facts[perm]).astype(np.int64).reshape(len(layers), len(cols))

        def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
            nz = counts != 0
            df = pd.DataFrame({"layer": layer_of[nz], "timestep": timestep[nz], "op_class": class_of[nz],
                               "count": counts[nz]})
            mem = pd.DataFrame(values, columns=cols)  # one block for the counts
            mem.insert(0, "layer", pd.Series(mem_layers, dtype=object if not mem_layers else None).array)
            return df, mem

        mode = "dense" if self.dense else "sparse" if self.skip_zero_macs else "exact"
        return OpCounts(tables=tables, totals=dict(zip(OP_CLASSES, per_class.tolist())), num_steps=self.T,
                        batch=self.B, input_shape=tuple(input_shape), mode=mode,
                        uncounted={k: dict(v) for k, v in sorted(self.uncounted.items())},
                        internal=dict(sorted(self.internal.items())), rules_used=tuple(self.rules_used))


def _fact_matrix(mem: dict[str, dict[str, Any]]) -> np.ndarray:
    """Memory facts per layer as a (layers, :data:`MEMORY_COLUMNS` but ``layer``) float64 matrix, rows in the
    order of ``mem``."""
    cols = MEMORY_COLUMNS[1:]
    return np.array([[d[c] for c in cols] for d in mem.values()], dtype=np.float64).reshape(len(mem), len(cols))


def _rows(base: list[Any], new: Any) -> tuple[list[Any], dict[Any, int]]:
    """Table rows: those of ``base``, then each of ``new`` not among them; and the row of each."""
    rows = list(base)
    index = {k: i for i, k in enumerate(rows)}
    for k in new:
        if k not in index:
            index[k] = len(rows)
            rows.append(k)
    return rows, index


@dataclass
class _Plan:
    """What a later count of the same model, input shape and options replays (see the module docstring): the
    bookings of static rules and of ops outside covered modules, the covered module calls in the order they
    returned, each with its layer name and rule, the modules whose outputs are spikes by construction, and the
    storage identities of the weights."""

    keys: list[tuple[str, str]]
    counts: np.ndarray
    mem_layers: list[str]
    mem: np.ndarray
    uses: list[tuple[str, Tensor]]
    order: dict[str, int]
    uncounted: dict[str, dict[str, int]]
    internal: dict[str, int]
    rules_used: dict[str, None]
    calls: list[nn.Module]
    rules: dict[nn.Module, tuple[str, Rule]]
    spiking: frozenset[nn.Module]
    unused: list[nn.Module]
    weights: set[int]
    memo: dict[Any, Any]
    cells: dict[tuple, Any]
    fast: dict[nn.Module, dict[tuple, tuple]]
    seen: set[tuple[str, int]]
    fast_calls: list[tuple]  # the binary calls a replay books by their product, in order (OpCounter.replayable)
    fast_out: Tensor | None  # (calls, T) float32: a replay writes each call's product into its row
    fast_views: list[Tensor]  # those rows
    fast_rows: np.ndarray  # the count row (of ``keys``) of each
    fast_scale: np.ndarray  # its fan-out when that is the same for every input (then the row holds its nnz)
    fast_mem_rows: np.ndarray  # and its layer's row of ``mem_layers`` (its weight uses)

    @functools.cached_property
    def fast_uniform(self) -> list[bool]:
        """Whether each binary call's fan-out is the same for every input (its row then holds its nnz)."""
        return (self.fast_scale > 0).tolist()

    @functools.cached_property
    def fast_multiplier(self) -> np.ndarray:
        """(calls, 1): what each row is multiplied by to give the call's count (its fan-out, or 1 for a product)."""
        return np.where(self.fast_scale > 0, self.fast_scale, 1.0)[:, None]

    @classmethod
    def of(cls, c: OpCounter) -> _Plan:
        static_keys, static = c.static_matrix()
        keys, index = _rows(static_keys, [spec[0] for spec in c._fast_calls])
        mat = np.zeros((len(keys), static.shape[1]), dtype=np.float64)
        mat[:len(static)] = static
        mem_layers = list(c._static_mem)  # a binary call's static facts put its layer there
        mem_row = {layer: i for i, layer in enumerate(mem_layers)}
        fast = c._fast_calls
        out = torch.empty((len(fast), c.T or 1), dtype=torch.float32, device=fast[0][2].device) if fast else None
        return cls(keys=keys, counts=mat,
                   mem_layers=mem_layers,
                   mem=_fact_matrix(c._static_mem),
                   fast_calls=list(fast),
                   fast_out=out, fast_views=[] if out is None else list(out.unbind(0)),
                   fast_rows=np.array([index[spec[0]] for spec in fast], dtype=np.int64),
                   fast_scale=np.array([_uniform(spec[2]) for spec in fast], dtype=np.float64),
                   fast_mem_rows=np.array([mem_row[spec[1]] for spec in fast], dtype=np.int64),
                   uses=list(c._static_uses),
                   order=dict(c.order), uncounted={k: dict(v) for k, v in c.uncounted.items()},
                   internal=dict(c.internal), rules_used=dict(c.rules_used), calls=list(c._calls),
                   rules=dict(c._call_rules), spiking=frozenset(c._spiking_calls),
                   unused=[m for m in c._module_rules if m not in c._called], weights=c.weights,
                   memo=c._memo, cells=c._cell_cache, fast=c._fast, seen=set(c._static_seen))


_PLANS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, _Plan]] = weakref.WeakKeyDictionary()
_PLANS_PER_MODEL = 4


_CONFIG_TYPES = (bool, int, float, str, type(None), torch.dtype, torch.device)
_PLAIN = frozenset(_CONFIG_TYPES)  # exact types taken as they are without a call


def _config(value: Any) -> Any:
    """A module attribute as part of a plan key: primitives and tuples/lists of them as they are, anything else
    (tensors, modules, callables, containers) by identity."""
    if isinstance(value, _CONFIG_TYPES):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, _CONFIG_TYPES) for v in value):
        return tuple(value)
    return id(value)


def _uniform(per_input: Tensor) -> float:
    """The value of every element of ``per_input`` when they are all the same, else 0 (see ``_Plan``): a count
    sum(x * per_input) is then that value times sum(x), and a sum reads the input faster than a product."""
    first = per_input.reshape(-1)[:1]
    return float(first) if per_input.numel() and bool((per_input == first).all()) else 0.0


def _plan_key(modules: list[nn.Module], clips: Tensor, options: tuple) -> tuple:
    """Identity of a count (see the module docstring): every module object, its configuration (its public
    attributes: stride, padding, a flag its forward reads...), its hooks, the storage of every parameter and
    buffer (so a replaced module or weight, a changed stride or flag, an added hook, or a model moved to another
    device or dtype, gets a new plan), the global module hooks, the input's shape, dtype and device, the options
    and the rule table's version."""
    g = nn.modules.module
    ids: list[Any] = [len(g._global_forward_hooks), len(g._global_forward_pre_hooks)]
    add, plain = ids.append, _PLAIN
    for m in modules:
        d = m.__dict__
        add(id(m))
        for k, v in d.items():
            if k[0] != "_":
                add(k)
                t = type(v)
                add(v if t in plain or (t is tuple and plain.issuperset(map(type, v))) else _config(v))
        if d["_forward_hooks"] or d["_forward_pre_hooks"]:
            add((tuple(d["_forward_hooks"]), tuple(d["_forward_pre_hooks"])))
        for t in d["_parameters"].values():
            add(0 if t is None else (t.data_ptr() or id(t)))
        for t in d["_buffers"].values():
            add(0 if t is None else (t.data_ptr() or id(t)))
    return (tuple(ids), tuple(clips.shape), clips.dtype, clips.device, options, table_version())


def _all_modules(model: nn.Module) -> list[nn.Module]:
    """Every module of ``model`` once, depth first (``model.modules()`` without building the dotted names)."""
    out: list[nn.Module] = []
    todo, seen = [model], set()
    while todo:
        m = todo.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        out.append(m)
        todo.extend(c for c in m._modules.values() if c is not None)
    return out


def _replay(plan: _Plan, model: nn.Module, clips: Tensor, counter: OpCounter) -> bool:
    """Run ``model(clips)`` re-running only the non-static rules of the covered modules, into ``counter`` (made
    with ``plan=plan``: it starts from the plan's static bookings). Returns False (``counter`` then holds nothing
    usable) when the module calls differ from the plan's."""
    spike_outputs = counter._spike_outputs
    seen: list[nn.Module] = []
    append = seen.append

    def wrap(module: nn.Module, name: str, rule: Rule, spiking: bool) -> Callable[..., Any]:
        """``module.forward`` plus the guard (the call is recorded), the rule when it is not static, and the
        registration of an output that is spikes by construction. (A rule's ``accepts`` is not asked again: it
        depends on the module and the argument shapes only, which the plan fixes.)"""
        forward = module.forward
        if rule.static and not spiking:
            def counted_forward(*args: Any, **kwargs: Any) -> Any:
                out = forward(*args, **kwargs)
                append(module)
                return out
        elif rule.static:
            def counted_forward(*args: Any, **kwargs: Any) -> Any:
                out = forward(*args, **kwargs)
                append(module)
                if isinstance(out, Tensor):
                    spike_outputs[_storage_key(out)] = weakref.ref(out)
                return out
        elif module in plan.fast and rule.after:
            specs, calls, done, T = plan.fast[module], plan.fast_calls, counter._fast_done, counter.T
            rows, uniform = plan.fast_views, plan.fast_uniform

            def counted_forward(*args: Any, **kwargs: Any) -> Any:
                out = forward(*args, **kwargs)
                append(module)
                x = args[0]
                shape = (x.shape, x.dtype)
                if shape not in specs:
                    _run(counter, name, module, rule, (args, out))
                elif (spec := specs[shape]) is None:  # a real input: every booking is the plan's
                    if counter.kind(x) != "real":
                        append(None)  # the plan's call had a real input here: count in full
                elif counter.spikes_by_construction(x) and len(done) < len(calls) and calls[len(done)] is spec:
                    # booked as the plan's call was: its product into its row (the rest of it is static)
                    i = len(done)
                    if uniform[i]:  # the same fan-out for every input: nnz, scaled in result()
                        torch.sum(x.reshape(T, -1), 1, out=rows[i])
                    else:
                        torch.mv(x.reshape(T, -1), spec[2], out=rows[i])
                    done.append(i)
                else:  # the plan's call had spikes here and booked its other parts as static: count in full
                    append(None)
                if spiking and isinstance(out, Tensor):
                    spike_outputs[_storage_key(out)] = weakref.ref(out)
                return out
        else:
            def counted_forward(*args: Any, **kwargs: Any) -> Any:
                if not rule.after:
                    _run(counter, name, module, rule, (args[0],))
                out = forward(*args, **kwargs)
                append(module)
                if rule.after:
                    _run(counter, name, module, rule, (args, out))
                if spiking and isinstance(out, Tensor):
                    spike_outputs[_storage_key(out)] = weakref.ref(out)
                return out
        return counted_forward

    # the covered modules' forwards are wrapped for the duration of this forward (module hooks would take
    # torch's slow call path on every covered module, about 1 ms per forward of svformer_tiny)
    def tripwire(module: nn.Module) -> Callable[..., Any]:
        """``module.forward`` of a module with a rule that the plan never saw called: a call is a difference."""
        forward = module.forward

        def unplanned_forward(*args: Any, **kwargs: Any) -> Any:
            append(None)
            return forward(*args, **kwargs)

        return unplanned_forward

    wrapped = [*plan.rules, *plan.unused]
    own = {m: m.__dict__["forward"] for m in wrapped if "forward" in m.__dict__}
    try:
        for module, (name, rule) in plan.rules.items():
            object.__setattr__(module, "forward", wrap(module, name, rule, module in plan.spiking))
        for module in plan.unused:
            object.__setattr__(module, "forward", tripwire(module))
        with torch.no_grad():
            model(clips)
    finally:
        for module in wrapped:
            if module in own:
                object.__setattr__(module, "forward", own[module])
            else:
                module.__dict__.pop("forward", None)
    return seen == plan.calls


def _run(counter: OpCounter, name: str, module: nn.Module, rule: Rule, args: tuple) -> None:
    """Call a module rule as the counter does (its module innermost on the stack)."""
    counter.stack = [(name, module)]
    counter._rule = rule.name
    try:
        rule.fn(counter, name, module, *args)
    finally:
        counter.stack = []


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
              trace_neurons: bool = False, skip_zero_macs: bool = False, plan: bool = True) -> OpCounts:
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
        plan: record a counting plan on the first count and replay it on later counts of the same model, input
            shape and options (see the module docstring; the counts are the same). ``False`` counts in full.

    Returns:
        :class:`OpCounts`.
    """
    if not isinstance(clips, Tensor):
        raise EnergyError(f"clips must be a tensor, got {type(clips).__name__}; pass a (B, C, T, H, W) batch")
    T = _infer_steps(model, clips) if num_steps == "auto" else num_steps
    B = int(clips.shape[0] if batch is None else batch)
    modules = _all_modules(model)
    training = [m.training for m in modules]  # every module counted in eval mode, each mode restored after
    switched = any(training)
    if switched:
        model.eval()
    try:
        key = _plan_key(modules, clips, (T, B, dense, fold_bn, skip_zero_macs)) if plan and not trace_neurons \
            else None
        plans = _PLANS.get(model) if key is not None else None
        recorded = plans.get(key) if plans else None
        if recorded is not None:
            counter = OpCounter(model, T, B, dense=dense, fold_bn=fold_bn, skip_zero_macs=skip_zero_macs,
                                plan=recorded)
            if _replay(recorded, model, clips, counter):
                return counter.result(tuple(clips.shape))
            del plans[key]  # the model ran other modules than when the plan was made: count in full
        counter = OpCounter(model, T, B, dense=dense, fold_bn=fold_bn, skip_zero_macs=skip_zero_macs)
        counter.trace_covered = trace_neurons
        counter.recording = key is not None
        with torch.no_grad(), counter:
            model(clips)
        if key is not None and counter._plannable:
            plans = _PLANS.setdefault(model, {})
            while len(plans) >= _PLANS_PER_MODEL:
                del plans[next(iter(plans))]
            plans[key] = _Plan.of(counter)
    finally:
        if switched:
            for m, was in zip(modules, training):
                m.training = was
    return counter.result(tuple(clips.shape))
