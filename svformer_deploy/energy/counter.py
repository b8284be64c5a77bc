"""Exact operation counts of one forward pass, per layer x timestep x op class, at the aten level.

:func:`count_ops` runs the model under a ``TorchDispatchMode`` (as ``torch.utils.flop_counter.FlopCounterMode``
does), so every executed aten op is seen, including functional matmuls (the attention product) and Conv3d.
A module stack kept by forward pre/post hooks names the innermost module running each op by its dotted name
from ``model.named_modules()`` (``ModuleTracker`` only keeps an unordered set of type-based names). The
counting rules are in :mod:`svformer_deploy.energy.rules`.

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

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from svformer_deploy.energy.rules import FREE_OPS, OP_CLASSES
from svformer_deploy.errors import EnergyError
from svformer_deploy.models.neurons import PLIF, ReLUNeuron, SpikingNeuron
from svformer_deploy.models.norm import TemporalBatchNorm

__all__ = ["OpCounts", "count_ops", "OpCounter", "COLUMNS"]

aten = torch.ops.aten
COLUMNS = ["layer", "timestep", "op_class", "count"]
_FANOUT_CACHE: dict[tuple, Tensor] = {}  # fan-out maps depend only on shapes: shared by all counters
MEMORY_COLUMNS = ["layer", "weight_values", "real_act_values", "binary_act_values"]

_META_OPS = {
    aten.is_contiguous, aten.is_strides_like_format, aten.is_non_overlapping_and_dense, aten.size,
    aten.sym_size, aten.stride, aten.sym_stride, aten.storage_offset, aten.sym_storage_offset, aten.numel,
    aten.sym_numel, aten.dim, torch.ops.prim.layout, torch.ops.prim.device,
}
_CONV_OPS = {aten.convolution, aten._convolution, aten.conv2d, aten.conv3d, aten.conv1d}
_BN_OPS = {aten.native_batch_norm, aten._native_batch_norm_legit_no_training, aten._native_batch_norm_legit,
           aten.batch_norm, aten.cudnn_batch_norm, aten.miopen_batch_norm}
_ADD_OPS = {aten.add, aten.add_, aten.sub, aten.sub_, aten.rsub}
_MUL_OPS = {aten.mul, aten.mul_, aten.div, aten.div_}
_ACT_OPS = {aten.relu, aten.relu_, aten.clamp_min, aten.clamp_min_, aten.threshold, aten.hardtanh, aten.hardtanh_}


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
        mode: ``"exact"`` (spike-aware) or ``"dense"`` (every operand treated as real).
        uncounted: aten op name -> {"calls", "elements"} for executed ops without a rule.
        internal: aten op name -> calls executed inside neuron layers (covered by the neuron rule).
        memory: per layer, values read by its synaptic ops (columns ``layer, weight_values, real_act_values,
            binary_act_values``): weights once per timestep per clip (numel(W) x T x B; once per clip without a
            time axis), every input activation once. Bytes and energy are applied by :func:`energy_of`.
    """

    df: pd.DataFrame
    num_steps: int | None
    batch: int
    input_shape: tuple[int, ...]
    mode: str
    uncounted: dict[str, dict[str, int]] = field(default_factory=dict)
    internal: dict[str, int] = field(default_factory=dict)
    memory: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MEMORY_COLUMNS))

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
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return -1


def _is_binary(x: Tensor) -> bool:
    """True when every element of ``x`` is exactly 0 or 1.

    A real tensor almost always shows a non-binary value among its first elements, so a 256-element prefix
    is checked first; only tensors that pass it are checked in full (one pass, one synchronisation).
    """
    if x.dtype == torch.bool:
        return True
    if x.numel() == 0:
        return True
    if x.is_contiguous():
        head = x.view(-1)[:256]
        if not bool(((head == 0) | (head == 1)).all()):
            return False
    return bool(((x == 0) | (x == 1)).all())


class OpCounter:
    """Context manager that counts the ops of the forwards run inside it. Use :func:`count_ops` normally.

    Args:
        model: the model; its parameters and buffers are the "weights", its dotted module names name layers.
        num_steps: T, or None to count without a time axis.
        batch: B of the input (needed to recognise time-folded layouts).
        dense: treat every operand as real (dense MACs; the ANN convention).
        fold_bn: count time-invariant BatchNorms as folded into the preceding layer (``bn_folded``).
    """

    def __init__(self, model: nn.Module, num_steps: int | None, batch: int, dense: bool = False,
                 fold_bn: bool = False) -> None:
        self.model = model
        self.T = num_steps
        self.B = batch
        self.dense = dense
        self.fold_bn = fold_bn
        self.names = {m: n for n, m in model.named_modules()}
        self.weights = {_storage_key(p) for p in list(model.parameters()) + list(model.buffers())}
        self.weights -= {-1, 0}  # 0: meta tensors have no storage
        self.stack: list[tuple[str, nn.Module]] = []
        self.counts: dict[tuple[str, str], list[Any]] = defaultdict(list)  # (layer, class) -> per-t vectors
        self.order: dict[str, int] = {}
        self.uncounted: dict[str, dict[str, int]] = defaultdict(lambda: {"calls": 0, "elements": 0})
        self.internal: dict[str, int] = defaultdict(int)
        self._fanout_cache = _FANOUT_CACHE
        self.mem: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        self._handles: list[Any] = []
        self._mode: _CountingMode | None = None
        self._paused: nn.Module | None = None
        self.fast_neurons = True

    # ---------------------------------------------------------------- module tracking
    def _pre(self, module: nn.Module, args: tuple) -> None:
        name = self.names.get(module)
        if name is None:
            return
        self.stack.append((name, module))
        if isinstance(module, SpikingNeuron) and args and isinstance(args[0], Tensor):
            self._count_neuron(name or "model", module, args[0])
            if self.fast_neurons and self._mode is not None and not self._paused:
                self._mode.__exit__(None, None, None)  # the neuron rule covers its ops: skip intercepting them
                self._paused = module

    def _post(self, module: nn.Module, args: tuple, out: Any) -> None:
        if self._paused is module and self._mode is not None:
            self._mode.__enter__()
            self._paused = None
            self.internal[f"{type(module).__name__} (not intercepted)"] += 1
        if module in self.names and self.stack and self.stack[-1][1] is module:
            self.stack.pop()

    def __enter__(self) -> "OpCounter":
        self._handles = [nn.modules.module.register_module_forward_pre_hook(self._pre),
                         nn.modules.module.register_module_forward_hook(self._post)]
        self._mode = _CountingMode(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._mode is not None
        if self._paused is None:  # an error inside a neuron layer leaves the mode already exited
            self._mode.__exit__(*exc)
        self._mode = None
        self._paused = None
        for h in self._handles:
            h.remove()
        self._handles = []
        self.stack.clear()

    # ---------------------------------------------------------------- bookkeeping
    @property
    def layer(self) -> str:
        return (self.stack[-1][0] or "model") if self.stack else "model"

    def _add(self, op_class: str, per_t: Any, layer: str | None = None) -> None:
        """Book counts: ``per_t`` is an int (no time axis), or a (T,) int64 tensor / list of ints."""
        layer = self.layer if layer is None else layer
        self.order.setdefault(layer, len(self.order))
        self.counts[(layer, op_class)].append(per_t)

    def _in_neuron(self) -> bool:
        return any(isinstance(m, SpikingNeuron) for _, m in self.stack)

    def _layout(self, x: Tensor) -> tuple[str, int] | None:
        """How to split an operand's elements over time (see the module docstring)."""
        T, B = self.T, self.B
        if T is None or x.dim() == 0:
            return None
        if self.stack:
            mod = self.stack[-1][1]
            if isinstance(mod, TemporalBatchNorm) and mod.mode == "per_timestep" and x.dim() >= 2 \
                    and x.shape[1] == T * mod.num_features:
                return ("channel", 1)
        if x.shape[0] % (T * B) == 0 or (x.dim() >= 2 and x.shape[0] == T and x.shape[1] == B):
            return ("lead", 0)
        if x.dim() == 5 and x.shape[0] == B and x.shape[2] == T:
            return ("axis", 2)
        return None

    def _split(self, v: Tensor, layout: tuple[str, int] | None) -> Any:
        """Sum a per-element count tensor ``v`` (shaped like the operand) per timestep."""
        if layout is None:
            return v.sum(dtype=torch.float64)
        kind, axis = layout
        T = self.T
        assert T is not None
        if kind == "lead":
            return v.reshape(T, -1).sum(1, dtype=torch.float64)
        if kind == "axis":
            return v.movedim(axis, 0).reshape(T, -1).sum(1, dtype=torch.float64)
        # channel: (B, T*C, ...)
        return v.reshape(v.shape[0], T, -1).sum((0, 2), dtype=torch.float64)

    def _even(self, total: int, layout: tuple[str, int] | None) -> Any:
        """A count spread evenly over the timesteps of a uniform layout (dense counts)."""
        if layout is None:
            return int(total)
        assert self.T is not None and total % self.T == 0
        return [int(total // self.T)] * self.T

    def _mem(self, weight: Tensor | None, act: Tensor, kind: str) -> None:
        m = self.mem[self.layer]
        if weight is not None:
            m[0] += weight.numel() * self.B * (self.T if self._layout(act) is not None and self.T else 1)
        m[2 if kind == "binary" else 1] += act.numel()

    # ---------------------------------------------------------------- rules
    def _count_neuron(self, name: str, module: SpikingNeuron, x: Tensor) -> None:
        """PLIF: per element per step 1 neuron_mul + 3 neuron_add; ReLU: 1 activation; T on axis 0."""
        steps = x.shape[0] if x.dim() > 0 else 1
        n = x.numel() // max(steps, 1)  # no tensor op here: this hook runs under the dispatch mode
        timed = self.T is not None and steps == self.T

        def book(op_class: str, k: int) -> None:
            self._add(op_class, [k * n] * steps if timed else k * n * steps, name)

        if isinstance(module, PLIF):
            book("neuron_mul", 1)
            book("neuron_add", 3)
        elif isinstance(module, ReLUNeuron):
            book("activation", 1)
        else:
            self.uncounted[f"neuron:{type(module).__name__}"]["calls"] += 1
            self.uncounted[f"neuron:{type(module).__name__}"]["elements"] += x.numel()

    def _kind(self, t: Tensor) -> str:
        if _storage_key(t) in self.weights:
            return "weight"
        if self.dense:
            return "real"
        return "binary" if _is_binary(t) else "real"

    def _fanout(self, x_shape: torch.Size, weight: Tensor, stride: Any, padding: Any, dilation: Any,
                transposed: bool, output_padding: Any, groups: int) -> Tensor:
        """Fan-out map: number of (weight, output) terms each input element enters, broadcastable to the input.

        With an all-ones kernel the map is ``d/dx sum(conv(x, ones(W)))``; for a plain convolution it separates
        into ``(C_out / groups) x prod_d n_d(i_d)`` with ``n_d(i)`` = number of (output o, tap k) pairs along
        spatial dim d with ``o * stride - pad + k * dilation = i`` (exact at borders, for any stride, dilation,
        groups). Transposed convolutions use the explicit convolution of ones. Cached per shape and parameters.
        """
        key = (tuple(x_shape[1:]), tuple(weight.shape), tuple(stride), tuple(padding), tuple(dilation),
               transposed, tuple(output_padding), groups, str(weight.device))
        f = self._fanout_cache.get(key)
        if f is not None:
            return f
        dev = weight.device
        nd = len(stride)
        if transposed:
            w = torch.ones(weight.shape, dtype=torch.float32, device=dev)
            probe = torch.zeros((1, *x_shape[1:]), dtype=torch.float32, device=dev)
            out_shape = torch.ops.aten.convolution(probe, w, None, stride, padding, dilation, True, output_padding,
                                                   groups).shape
            ones_out = torch.ones(out_shape, dtype=torch.float32, device=dev)
            f = torch.ops.aten.convolution(ones_out, w, None, stride, padding, dilation, False, [0] * nd, groups)
        else:
            f = torch.full((1,) * (nd + 2), float(weight.shape[0] // groups), dtype=torch.float32, device=dev)
            for d in range(nd):
                n_in, k = x_shape[2 + d], weight.shape[2 + d]
                n_out = (n_in + 2 * padding[d] - dilation[d] * (k - 1) - 1) // stride[d] + 1
                idx = (torch.arange(n_out, device=dev)[:, None] * stride[d] - padding[d]
                       + torch.arange(k, device=dev)[None, :] * dilation[d]).flatten()
                idx = idx[(idx >= 0) & (idx < n_in)]
                cnt = torch.bincount(idx, minlength=n_in).to(torch.float32)
                shape = [1] * (nd + 2)
                shape[2 + d] = n_in
                f = f * cnt.reshape(shape)
        self._fanout_cache[key] = f
        return f

    def _conv(self, args: tuple, out: Tensor) -> None:
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        stride, padding, dilation = args[3], args[4], args[5]
        transposed = bool(args[6]) if len(args) > 6 else False
        output_padding = args[7] if len(args) > 7 else [0] * len(stride)
        groups = int(args[8]) if len(args) > 8 else 1
        layout = self._layout(x)
        kind = self._kind(x)
        self._mem(w, x, kind)
        if kind == "binary":
            fan = self._fanout(x.shape, w, stride, padding, dilation, transposed, output_padding, groups)
            self._add("ac", self._conv_events(x, fan, layout))
        else:
            # dense MACs, as FlopCounterMode / fvcore: out elements x (C_in / groups) x prod(kernel) (padding taps
            # included); with a time axis spread evenly over T (exact for time-folded layouts and for a Conv3d
            # whose kernel spans all T frames without temporal padding)
            cin = w.shape[0] if transposed else w.shape[1]
            total = (x.numel() if transposed else out.numel()) * cin * math.prod(w.shape[2:])
            if transposed:
                total = x.numel() * w.shape[1] * math.prod(w.shape[2:])
            even_ok = layout is not None and total % (self.T or 1) == 0
            self._add("mac", self._even(total, layout if even_ok else None))
        if bias is not None:
            self._elementwise("bias_add", out, out)

    def _conv_events(self, x: Tensor, fan: Tensor, layout: tuple[str, int] | None) -> Any:
        """Sum of fan-out over the non-zero elements of a binary ``x`` (per timestep when it has a time axis).

        A binary tensor is its own non-zero mask. When the fan-out map does not depend on the channel (plain
        convolutions), ``x`` is first summed over batch and channels (one reduction pass, exact in float32 for
        fewer than 2**24 terms), then weighted by the spatial map in float64.
        """
        if fan.shape[1] != 1:
            return self._split((x != 0) * fan, layout)
        f = fan[0, 0].to(torch.float64)
        if layout is None:
            return (x.sum(dim=(0, 1)).to(torch.float64) * f).sum()
        T = self.T
        assert T is not None
        if layout[0] == "lead":
            s = x.reshape(T, -1, *x.shape[2:]).sum(1)
            return (s.to(torch.float64) * f).reshape(T, -1).sum(1)
        s = x.sum(dim=(0, 1))  # axis 2 of (B, C, T, ...): s is (T, ...), as is f
        return (s.to(torch.float64) * f).reshape(T, -1).sum(1)

    def _matmul(self, a: Tensor, b: Tensor, out: Tensor) -> None:
        """(..., M, K) @ (..., K, N) with 2-D or batched 3-D operands (aten.mm / bmm / addmm).

        Pairs are counted per output row of ``a``: ``pairs[m] = sum_k [a[m, k] != 0] * nnz(b[k, :])`` (a weight
        operand counts as all non-zero), one matrix-vector product per call.
        """
        ka, kb = self._kind(a), self._kind(b)
        layout = self._layout(a) if ka != "weight" else self._layout(out)
        if ka == "weight" or kb == "weight":
            self._mem(a if ka == "weight" else b, b if ka == "weight" else a, kb if ka == "weight" else ka)
        else:
            self._mem(None, a, ka)
            self._mem(None, b, kb)
        if "binary" not in (ka, kb):
            batch = a.shape[0] if a.dim() == 3 else 1
            total = batch * a.shape[-2] * a.shape[-1] * b.shape[-1]
            self._add("mac", self._even(total, layout))
            return
        op_class = "ac" if "weight" in (ka, kb) else "spike_product"
        if ka == "weight":  # weight @ activation: count per output column instead (no time axis recovered)
            na = torch.full(a.shape[-1:], float(a.shape[-2]), device=b.device)
            per_col = ((b != 0).to(torch.float32).transpose(-2, -1) @ na.unsqueeze(-1)).squeeze(-1)
            self._add(op_class, self._split(per_col, None))
            return
        # a binary operand is its own non-zero mask (float32 sums of 0/1 are exact below 2**24 terms)
        ma = a if ka == "binary" and a.dtype == torch.float32 else (a != 0).to(torch.float32)
        if kb == "weight":
            per_row = ma.sum(-1).to(torch.float64) * b.shape[-1]
        else:
            mb = b if kb == "binary" and b.dtype == torch.float32 else (b != 0).to(torch.float32)
            nb = mb.sum(-1)  # (..., K): non-zeros in each row of b
            per_row = (ma @ nb.unsqueeze(-1)).squeeze(-1)  # (..., M)
        self._add(op_class, self._split(per_row, layout))

    def _batch_norm(self, func: Any, args: tuple, out: Any) -> None:
        x = args[0]
        mod = self.stack[-1][1] if self.stack else None
        shared = not (isinstance(mod, TemporalBatchNorm) and mod.mode == "per_timestep")
        layout = self._layout(x)
        n = x.numel()
        cnt = self._even(n, layout)
        if self.fold_bn and shared:
            self._add("bn_folded", cnt)
        else:
            self._add("bn_mul", cnt)
            self._add("bn_add", cnt)

    def _elementwise(self, op_class: str, x: Tensor, out: Tensor) -> None:
        layout = self._layout(out)
        self._add(op_class, self._even(out.numel(), layout) if layout is not None else out.numel())

    def handle(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        packet = func._overloadpacket
        if self._in_neuron():
            self.internal[str(packet)] += 1
            return
        if packet in FREE_OPS:
            return
        if packet in _CONV_OPS:
            self._conv(args, out)
        elif packet is aten.addmm:
            self._matmul(args[1], args[2], out)
            if isinstance(args[0], Tensor):
                self._elementwise("bias_add", args[0], out)
        elif packet in (aten.mm, aten.bmm):
            self._matmul(args[0], args[1], out)
        elif packet in _BN_OPS:
            self._batch_norm(func, args, out)
        elif packet in _ADD_OPS or packet in _MUL_OPS:
            a, b = args[0], args[1] if len(args) > 1 else None
            tensors = [t for t in (a, b) if isinstance(t, Tensor) and t.dim() > 0]
            is_add = packet in _ADD_OPS
            if len(tensors) < 2:
                op_class = "add" if is_add else "scale_mul"
            elif any(_storage_key(t) in self.weights for t in tensors):
                op_class = "bias_add" if is_add else "mul"
            elif is_add and packet in (aten.add, aten.add_) and tensors[0].shape == tensors[1].shape:
                op_class = "residual_add"
            else:
                op_class = "add" if is_add else "mul"
            self._elementwise(op_class, tensors[0] if tensors else out, out)
        elif packet in _ACT_OPS:
            self._elementwise("activation", args[0], out)
        else:
            n = sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, Tensor))
            self.uncounted[str(packet)]["calls"] += 1
            self.uncounted[str(packet)]["elements"] += int(n)

    # ---------------------------------------------------------------- result
    def result(self, input_shape: tuple[int, ...]) -> OpCounts:
        rows = []
        T = self.T
        for (layer, op_class), parts in self.counts.items():
            scalar = 0
            vec = torch.zeros(T or 1, dtype=torch.float64)
            has_vec = False
            for p in parts:
                if isinstance(p, Tensor) and p.dim() == 1:
                    vec += p.detach().to("cpu", torch.float64)
                    has_vec = True
                elif isinstance(p, list):
                    vec += torch.tensor(p, dtype=torch.float64)
                    has_vec = True
                else:
                    scalar += int(round(float(p)))
            if has_vec:
                for t, c in enumerate(vec.round().to(torch.int64).tolist()):
                    if c:
                        rows.append((layer, t, op_class, int(c)))
            if scalar:
                rows.append((layer, -1, op_class, int(scalar)))
        class_rank = {c: i for i, c in enumerate(OP_CLASSES)}
        rows.sort(key=lambda r: (self.order[r[0]], r[1], class_rank[r[2]]))
        df = pd.DataFrame(rows, columns=COLUMNS).astype({"timestep": "int64", "count": "int64"})
        mem = pd.DataFrame([(k, *v) for k, v in sorted(self.mem.items(), key=lambda kv: self.order.get(kv[0], 1 << 30))],
                           columns=MEMORY_COLUMNS)
        return OpCounts(df=df, memory=mem, num_steps=T, batch=self.B, input_shape=tuple(input_shape),
                        mode="dense" if self.dense else "exact",
                        uncounted={k: dict(v) for k, v in sorted(self.uncounted.items())},
                        internal=dict(sorted(self.internal.items())))


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
              trace_neurons: bool = False) -> OpCounts:
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
        trace_neurons: also intercept the aten ops executed inside neuron layers and list them in
            ``OpCounts.internal`` (slower; their cost is given by the neuron rule either way).

    Returns:
        :class:`OpCounts`.
    """
    if not isinstance(clips, Tensor):
        raise EnergyError(f"clips must be a tensor, got {type(clips).__name__}; pass a (B, C, T, H, W) batch")
    T = _infer_steps(model, clips) if num_steps == "auto" else num_steps
    was_training = model.training
    model.eval()
    counter = OpCounter(model, T, int(clips.shape[0] if batch is None else batch), dense=dense, fold_bn=fold_bn)
    counter.fast_neurons = not trace_neurons
    try:
        with torch.no_grad(), counter:
            model(clips)
    finally:
        model.train(was_training)
    return counter.result(tuple(clips.shape))
