"""Exact operation counts of one forward pass, per layer x timestep x op class, at the aten level.

:func:`count_ops` runs the model once under a ``TorchDispatchMode`` with a module stack kept by global forward
pre/post hooks, as ``torch.utils.flop_counter.FlopCounterMode`` does with ``torch.utils.module_tracker``: every
executed aten op is seen, including functional matmuls (the attention product) and Conv3d, and is booked under the
dotted name (from ``model.named_modules()``) of the innermost module running it (``ModuleTracker`` keeps only an
unordered set of type-based names). The counting rules are the rule table of :mod:`svformer_deploy.energy.rules`:
an *aten rule* counts an op after it ran; a *module rule* counts a whole module call from its input, weights and
output, and the aten ops executed inside that call are passed through uncounted (listed in
``OpCounts.internal`` with ``trace_neurons``). This module is the rules' bookkeeping context.

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

Every module is counted in eval mode, and each module's own mode is given back afterwards. The hooks and the
mode are global while a count runs: count one model from one thread at a time.
"""

from __future__ import annotations

import functools
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from svformer_deploy.energy.rules import _EXACT_F32, OP_CLASSES, Rule, module_rule, op_rule
from svformer_deploy.errors import EnergyError
from svformer_deploy.models.norm import TemporalBatchNorm

__all__ = ["OpCounts", "count_ops", "OpCounter", "COLUMNS", "MEMORY_COLUMNS"]

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


# tensor metadata queries: not operations
_META_OPS = {
    aten.is_contiguous, aten.is_strides_like_format, aten.is_non_overlapping_and_dense, aten.size,
    aten.sym_size, aten.stride, aten.sym_stride, aten.storage_offset, aten.sym_storage_offset, aten.numel,
    aten.sym_numel, aten.dim, torch.ops.prim.layout, torch.ops.prim.device,
}


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
        internal: ``"<module type> (module rule)"`` -> calls of that type counted by its module rule; with
            ``trace_neurons``, aten op name -> calls executed inside those calls instead.
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
def _by_module_rule(cls: type) -> str:
    """The ``OpCounts.internal`` entry of the calls of a module type counted by its module rule."""
    return f"{cls.__name__} (module rule)"


def _elements(out: Any) -> int:
    """Number of elements of the tensors an aten op returned (a tensor, or a tuple or list of them)."""
    if isinstance(out, Tensor):
        return out.numel()
    if isinstance(out, (tuple, list)):
        return sum(_elements(o) for o in out)
    return 0


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
        trace_neurons: list the aten ops executed inside modules counted by a module rule in ``internal``.
    """

    def __init__(self, model: nn.Module, num_steps: int | None, batch: int, dense: bool = False,
                 fold_bn: bool = False, skip_zero_macs: bool = False, trace_neurons: bool = False) -> None:
        self.model = model
        self.T = num_steps
        self.B = batch
        self.dense = dense
        self.fold_bn = fold_bn
        self.skip_zero_macs = skip_zero_macs and not dense
        self.trace_neurons = trace_neurons
        self.names = {m: n for n, m in model.named_modules()}
        self._module_rules = {m: r for m in self.names if (r := module_rule(m)) is not None}
        self.weights = {_storage_key(p) for m in self.names
                        for p in (*m._parameters.values(), *m._buffers.values()) if p is not None} - {-1, 0}
        self.stack: list[tuple[str, nn.Module]] = []  # running modules of the model, innermost last
        self.counts: dict[tuple[str, str], list[Any]] = defaultdict(list)  # (layer, class) -> per-t vectors
        self.order: dict[str, int] = {}
        self.uncounted: dict[str, dict[str, int]] = defaultdict(lambda: {"calls": 0, "elements": 0})
        self.internal: dict[str, int] = defaultdict(int)
        self.mem: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(MEMORY_COLUMNS[1:], 0))
        self.rules_used: dict[str, None] = {}
        self._rule: str | None = None
        self._in_rule = False
        self._covering: tuple[nn.Module, Rule] | None = None  # the module-rule call running (its ops not counted)
        self._seen_weights: set[tuple[str, int]] = set()
        self._spiking: set[nn.Module] = set()  # covered modules whose output is spikes by construction
        self._spike_outputs: dict[int, weakref.ref] = {}  # storage -> live spike tensor (no binary check needed)
        self._uses: list[tuple[str, Tensor]] = []  # (layer, weight uses as a tensor of counts)
        self._handles: list[Any] = []
        self._mode: _CountingMode | None = None

    # ---------------------------------------------------------------- module tracking
    def _pre(self, module: nn.Module, args: tuple) -> None:
        name = self.names.get(module)
        if name is None:
            return
        self.stack.append((name, module))
        if self._covering is not None:  # inside a module-rule call: its rule covers this module too
            return
        rule = self._module_rules.get(module)
        if rule is None or not args or not isinstance(args[0], Tensor) \
                or (rule.accepts is not None and not rule.accepts(module, args)):
            return
        self._covering = (module, rule)
        if not rule.after:
            self._run(rule, module, (args[0],))

    def _post(self, module: nn.Module, args: tuple, out: Any) -> None:
        covering = self._covering
        if covering is not None and covering[0] is module:
            rule = covering[1]
            if rule.after:
                self._run(rule, module, (args, out))
            self._covering = None
            if not self.trace_neurons:
                self.internal[_by_module_rule(type(module))] += 1
        if module in self._spiking and isinstance(out, Tensor):
            self._spiking.discard(module)
            self._spike_outputs[_storage_key(out)] = weakref.ref(out)
        stack = self.stack
        if stack and stack[-1][1] is module:
            stack.pop()

    def _run(self, rule: Rule, module: nn.Module, args: tuple) -> None:
        """Call a module rule (its own tensor ops are not the model's: the dispatch mode passes them through)."""
        self._rule = rule.name
        self._in_rule = True
        try:
            rule.fn(self, self.layer, module, *args)
        finally:
            self._in_rule = False

    def __enter__(self) -> "OpCounter":
        self._handles = [nn.modules.module.register_module_forward_pre_hook(self._pre),
                         nn.modules.module.register_module_forward_hook(self._post)]
        self._mode = _CountingMode(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._mode is not None:
                self._mode.__exit__(*exc)
        finally:
            self._mode = None
            for h in self._handles:
                h.remove()
            self._handles = []
            self._covering = None
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
        """``"weight"``, ``"binary"`` or ``"real"`` (see :mod:`svformer_deploy.energy.rules`). A view of the live
        output of a neuron whose output is spikes by construction is binary without a value check."""
        key = _storage_key(t)
        if key in self.weights:
            return "weight"
        if self.dense:
            return "real"
        ref = self._spike_outputs.get(key)
        if ref is not None and ref() is not None:
            return "binary"
        return "binary" if _is_binary(t) else "real"

    @staticmethod
    def storage_key(t: Tensor) -> int:
        """Identity of the memory behind ``t`` (what :meth:`kind` and :meth:`read_facts` compare)."""
        return _storage_key(t)

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

    def read_facts(self, weight: Tensor | None, facts: dict[str, int], weight_uses: Any,
                   weight_key: int | None = None) -> None:
        """Record :meth:`synapse_facts`, plus the weight's footprint the first time this layer reads it in this
        forward, and ``weight_uses`` (an int, a list per timestep or a tensor of counts) when there is a weight
        (``weight_key``: its :meth:`storage_key`, when the caller has it)."""
        layer = self.layer
        mem = self.mem[layer]
        if weight is not None:
            key = (layer, _storage_key(weight) if weight_key is None else weight_key)
            if key not in self._seen_weights:
                self._seen_weights.add(key)
                mem["weight_values"] += weight.numel()
            if isinstance(weight_uses, Tensor):
                self._uses.append((layer, weight_uses))  # summed once for all layers in result()
            else:
                mem["weight_uses"] += sum(weight_uses) if isinstance(weight_uses, list) else weight_uses
        for k, v in facts.items():
            mem[k] += v

    def read_neuron(self, layer: str, updates: int, stateful: bool, spikes: bool) -> None:
        """Record a neuron layer's memory facts: ``updates`` element-steps; the state V read and written per
        update when ``stateful``; outputs written as spikes (1 bit) or real values. A module rule's ``spikes``
        makes its call's output spikes by construction for the synapses that read it."""
        self.order.setdefault(layer, len(self.order))
        if spikes and self._covering is not None:
            self._spiking.add(self._covering[0])
        mem = self.mem[layer]
        mem["state_values"] += 2 * updates if stateful else 0
        mem["binary_out_values" if spikes else "real_out_values"] += updates

    # ---------------------------------------------------------------- dispatch
    def handle(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """Count one executed aten op outside the module-rule calls by its rule, or list it as uncounted."""
        packet = func._overloadpacket
        rule = op_rule(packet)
        if rule is None:
            entry = self.uncounted[str(packet)]
            entry["calls"] += 1
            entry["elements"] += _elements(out)
            return
        self._rule = rule.name
        rule.fn(self, args, kwargs, out)

    # ---------------------------------------------------------------- result
    def _accumulate(self, index: dict[tuple[str, str], int], mat: np.ndarray) -> None:
        """Add the bookings to ``mat`` (one row per key of ``index``): columns 0..T-1 the per-timestep sums,
        column T the parts without a time axis (each rounded on its own, as booked); every value is an integer
        held exactly in float64."""
        steps = self.T or 1
        rows_t, vecs, rows_l, lists = [], [], [], []  # per-timestep tensors / lists, added in one pass each
        for k, parts in self.counts.items():
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

    def result(self, input_shape: tuple[int, ...]) -> OpCounts:
        """The counts of the forwards run so far, as :class:`OpCounts` (arrays now, tables on first access)."""
        steps = self.T or 1
        keys = list(self.counts)
        mat = np.zeros((len(keys), steps + 1), dtype=np.float64)
        self._accumulate({k: i for i, k in enumerate(keys)}, mat)
        counts = np.rint(mat).astype(np.int64)
        class_rank = {c: i for i, c in enumerate(OP_CLASSES)}
        class_index = np.array([class_rank[k[1]] for k in keys], dtype=np.int64)
        per_class = np.zeros(len(OP_CLASSES), dtype=np.int64)
        np.add.at(per_class, class_index, counts.sum(1))
        # table order: layers in execution order, then timestep (-1, the column without a time axis, first),
        # then op class
        layer_rank = np.repeat(np.array([self.order[k[0]] for k in keys], dtype=np.int64), steps + 1)
        op_rank = np.repeat(class_index, steps + 1)
        timestep = np.tile(np.where(np.arange(steps + 1) == steps, -1, np.arange(steps + 1)), len(keys)) \
            .astype(np.int64)
        cell = np.lexsort((op_rank, timestep, layer_rank))
        layer_of = pd.Series(np.repeat(np.array([k[0] for k in keys], dtype=object), steps + 1)[cell]).array
        class_of = pd.Series(np.repeat(np.array([k[1] for k in keys], dtype=object), steps + 1)[cell]).array
        timestep, counts = timestep[cell], counts.reshape(-1)[cell]

        cols = MEMORY_COLUMNS[1:]
        layers = list(self.mem)
        row = {layer: i for i, layer in enumerate(layers)}
        facts = _fact_matrix(self.mem)
        if self._uses:  # weight uses booked as tensors of counts: one segmented sum for all of them
            parts = [t.reshape(-1) for _, t in self._uses]
            sizes = np.array([t.numel() for t in parts], dtype=np.int64)
            flat = np.append(torch.cat(parts).to("cpu", torch.float64).numpy(), 0.0)
            sums = np.where(sizes > 0, np.add.reduceat(flat, np.cumsum(sizes) - sizes), 0.0)
            np.add.at(facts[:, cols.index("weight_uses")], [row[layer] for layer, _ in self._uses], sums)
        perm = sorted(range(len(layers)), key=lambda i: self.order.get(layers[i], 1 << 30))
        values = np.rint(facts[perm]).astype(np.int64).reshape(len(layers), len(cols))
        mem_layers = [layers[i] for i in perm]

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


class _CountingMode(TorchDispatchMode):
    """Every executed aten op: inside a module-rule call (the rule covers it) passed through, listed in
    ``internal`` with ``trace_neurons``; outside, counted by :meth:`OpCounter.handle`."""

    def __init__(self, counter: OpCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        c = self.counter
        if c._covering is not None:
            if c.trace_neurons and not c._in_rule:
                c.internal[str(func._overloadpacket)] += 1
        elif func._overloadpacket not in _META_OPS:
            c.handle(func, args, kwargs, out)
        return out


def _infer_steps(model: nn.Module) -> int | None:
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
        trace_neurons: also list the aten ops executed inside modules counted by a module rule (neurons) in
            ``OpCounts.internal`` (their cost is given by the module rule either way).
        skip_zero_macs: MACs of a real activation x weight skip the activation's zeros (NeuroBench's effective
            MACs; the sparsity-aware ANN). Ignored with ``dense``.

    Returns:
        :class:`OpCounts`.
    """
    if not isinstance(clips, Tensor):
        raise EnergyError(f"clips must be a tensor, got {type(clips).__name__}; pass a (B, C, T, H, W) batch")
    T = _infer_steps(model) if num_steps == "auto" else num_steps
    B = int(clips.shape[0] if batch is None else batch)
    modules = list(model.modules())
    training = [m.training for m in modules]  # every module counted in eval mode, each mode restored after
    if any(training):
        model.eval()
    counter = OpCounter(model, T, B, dense=dense, fold_bn=fold_bn, skip_zero_macs=skip_zero_macs,
                        trace_neurons=trace_neurons)
    try:
        with torch.no_grad(), counter:
            model(clips)
    finally:
        for m, was in zip(modules, training):
            m.training = was
    return counter.result(tuple(clips.shape))
