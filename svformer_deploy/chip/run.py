"""Run a mapped network on real clips: the chip layers in their fixed-point dynamics, the host in float.

The interpreter walks the plan once per batch, whole clips at a time (T, B, ...): the input frames, the host's
synapses, joins and host operations (the registry of :mod:`svformer_deploy.exporters.host_ops`) in float32, the
host's neurons with the model's own :func:`~svformer_deploy.models.neurons.plif_step`, and every chip layer as
integers (:mod:`svformer_deploy.chip.quantize`): its input current is the sum of its spike terms (integer
convolutions of the source spikes), its host currents (the host's float value, scaled and rounded) and its bias.

What it records per chip layer and timestep, per neuron, is what the chip's event counts need: the spikes, the
synaptic events arriving (active presynaptic neurons connected to it, i.e. non-zero integer weights), whether it
was *updated* in SANA-FE's sense (potential, input or bias non-zero), and the largest |v| and |u| (state range).

It also counts the host's arithmetic per video, by the energy module's op classes and conventions
(:mod:`svformer_deploy.energy.rules`): a host synapse on spikes books one ``ac`` per spike and connection, on real
values one ``mac`` per connection (non-zero weight x in-bounds position: a depthwise kernel counts its own taps),
once per batch for a partial result that several chip layers' host terms share (the same source through the same
ops, :meth:`~svformer_deploy.chip.network.HostTerm.prefixes`: ``svformer_tiny``'s frame convolution feeds three
layers and is computed once);
a residual join one ``residual_add`` per element; the spike-attention product ``spike_product`` pairs
``sum_i (sum_l (K^T V)_il + nnz(Q_:i) nnz((K^T V)_i))`` per head and a ``scale_mul`` per output element; the
temporal head one ``ac`` per spike and connection of its Conv3d and one ``mac`` per weight of its classifier; a
host neuron one ``neuron_mul`` and one ``neuron_add`` per neuron and step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from svformer_deploy.chip.arch import NumberFormat
from svformer_deploy.chip.network import ChipNetwork
from svformer_deploy.chip.quantize import FixedLayer
from svformer_deploy.exporters.host_ops import HostContext, run_host_op
from svformer_deploy.exporters.plan import Add, HostOp, Input, Neuron, Synapse

__all__ = ["ChipRun", "LayerActivity", "iter_chip_runs", "run_chip"]


@dataclass
class LayerActivity:
    """One chip layer over a batch: (T, B, C, H, W) arrays."""

    spikes: np.ndarray        # int8 {0, 1}
    events: np.ndarray        # int32: synaptic events arriving at each neuron
    updated: np.ndarray       # bool: SANA-FE's "updated" (|v| > 0 before the step, input arrived, or bias != 0)
    host_current: np.ndarray | None  # int64 host current per compartment and step (None: no host terms)
    v_max: int = 0            # largest |v| reached (in v units, x64)
    clipped_host: int = 0     # host currents clipped to the bias range


@dataclass
class ChipRun:
    """A batch through the mapped network: logits, the activity of every chip layer, host neuron spikes."""

    logits: Tensor
    layers: dict[str, LayerActivity]
    host_spikes: dict[str, np.ndarray] = field(default_factory=dict)  # host neurons read by chip layers
    host_values: dict[str, int] = field(default_factory=dict)  # host-term values sent per batch (non-zero count)
    host_counts: dict[str, np.ndarray] = field(default_factory=dict)  # op class -> (B,) counts of the host's work


def _rtz_decay(x: Tensor, decay: int, bits: int) -> Tensor:
    p = x * ((1 << bits) - decay)
    return torch.sign(p) * (p.abs() >> bits)


def _conv_int(s: Tensor, w: np.ndarray, stride: int, padding: int) -> Tensor:
    """Integer convolution of {0,1} spikes (N, C, H, W) with integer weights, exact in float64 (|sum| < 2^53)."""
    out = F.conv2d(s.to(torch.float64), torch.as_tensor(w, dtype=torch.float64), stride=stride, padding=padding)
    return out.round().to(torch.int64)


def _lif_fixed(current: Tensor, fixed: FixedLayer, fmt: NumberFormat) -> tuple[Tensor, Tensor, int]:
    """Integer dynamics over T (see :mod:`svformer_deploy.chip.quantize`): current (T, B, C, H, W) int64 including
    bias and host currents -> spikes (T, ...) int8, v before each step (T, ...) int64, max |v|."""
    T = current.shape[0]
    v = torch.zeros_like(current[0])
    spikes = torch.empty(current.shape, dtype=torch.int8)
    v_before = torch.empty_like(current)
    vth = fixed.vth << 6
    vmax = 0
    for t in range(T):
        v_before[t] = v
        v = _rtz_decay(v, fixed.v_decay, fmt.decay_bits) + (current[t] << 6)
        vmax = max(vmax, int(v.abs().max()))
        fired = v > vth
        spikes[t] = fired.to(torch.int8)
        v = v.masked_fill(fired, 0)
    return spikes, v_before, vmax


def _connections(w: Tensor, in_shape: tuple[int, ...], stride: int, padding: int) -> float:
    """Non-zero weights x in-bounds positions: the MACs of one application of the convolution."""
    ones = torch.ones((1, *in_shape), dtype=torch.float64)
    return float(F.conv2d(ones, (w != 0).to(torch.float64), stride=stride, padding=padding).sum())


def _events_per_video(s: Tensor, w: Tensor, stride: int, padding: int, T: int, B: int) -> np.ndarray:
    """(B,) spikes x connections of ``s`` (T*B, C, H, W) through weights ``w``."""
    ev = F.conv2d(s.to(torch.float64), (w != 0).to(torch.float64), stride=stride, padding=padding)
    return ev.reshape(T, B, -1).sum((0, 2)).numpy()


class _HostCounts:
    def __init__(self, B: int, shared: frozenset[tuple] = frozenset()) -> None:
        self.B = B
        self.counts: dict[str, np.ndarray] = {}
        self.shared = shared
        """Keys (:meth:`HostTerm.prefixes`) of the host-term partial results that more than one term uses."""
        self.partial: dict[tuple, Tensor] = {}
        """The shared partial results computed so far: computed and counted once, kept for the run."""

    def add(self, op_class: str, value: np.ndarray | float) -> None:
        self.counts[op_class] = self.counts.get(op_class, np.zeros(self.B)) + value

    def synapse(self, x: Tensor, w: Tensor, stride: int, padding: int, spikes: bool, T: int) -> None:
        """``x`` (T*B, C, H, W) through conv weights ``w``: ``ac`` per spike x connection, or ``mac`` per
        connection."""
        if spikes:
            self.add("ac", _events_per_video(x, w, stride, padding, T, self.B))
        else:
            self.add("mac", T * _connections(w, tuple(x.shape[1:]), stride, padding))


def _attention_pairs(q: Tensor, k: Tensor, v: Tensor, heads: int, T: int, B: int) -> np.ndarray:
    """(B,) spike_product pairs of Q (K^T V) per head (the energy module's closed form)."""
    N, C = q.shape[0], q.shape[1]
    d = C // heads

    def tok(x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, heads, tokens, d)
        return x.reshape(N, heads, d, -1).transpose(-2, -1).to(torch.float64)

    kv = tok(k).transpose(-2, -1) @ tok(v)
    row = kv.sum(-1)
    nnz = (kv != 0).sum(-1).to(torch.float64)
    pairs = (row + tok(q).sum(-2) * nnz).reshape(T, B, -1).sum((0, 2))
    return pairs.numpy()


def shared_partials(network: ChipNetwork) -> frozenset[tuple]:
    """Keys of the host-term partial results (:meth:`HostTerm.prefixes`) that more than one host term uses."""
    from collections import Counter

    uses = Counter(k for layer in network.layers for h in layer.host_terms for k in h.prefixes())
    return frozenset(k for k, n in uses.items() if n > 1)


def run_chip(network: ChipNetwork, fixed: dict[str, FixedLayer], fmt: NumberFormat, clips: Tensor,
             config: dict | None = None, host_nodes: frozenset[str] = frozenset()) -> ChipRun:
    """``clips`` (B, C, T, H, W) through the mapped network (see the module docstring); the work of the plan nodes
    in ``host_nodes`` (what the host evaluates) and of the host currents is counted."""
    from svformer_deploy.models.neurons import PLIFParameters, plif_step

    plan = network.plan
    chip = {layer.name: layer for layer in network.layers}
    wanted_host = set(network.host_spike_sources)
    x = clips.permute(2, 0, 1, 3, 4).to(torch.float32)
    T, B = x.shape[:2]
    values: dict[str, Tensor] = {}
    acts: dict[str, LayerActivity] = {}
    host_spikes: dict[str, np.ndarray] = {}
    host_values: dict[str, int] = {}
    ctx = HostContext(config=config or {})
    counts = _HostCounts(B, shared_partials(network))

    def flat(v: Tensor) -> Tensor:
        return v.reshape(T * B, *v.shape[2:])

    def unflat(v: Tensor) -> Tensor:
        return v.reshape(T, B, *v.shape[1:])

    with torch.no_grad():
        for node in plan.nodes:
            if isinstance(node, Input):
                values[node.name] = x
            elif isinstance(node, Synapse):
                w = torch.as_tensor(plan.params[f"{node.name}.weight"], dtype=torch.float32)
                b = torch.as_tensor(plan.params[f"{node.name}.bias"], dtype=torch.float32)
                xin = flat(values[node.inputs[0]])
                values[node.name] = unflat(F.conv2d(xin, w, b, stride=node.stride, padding=node.padding))
                if node.name in host_nodes:
                    counts.synapse(xin, w, node.stride, node.padding,
                                   isinstance(plan.node(node.inputs[0]), Neuron), T)
            elif isinstance(node, Add):
                values[node.name] = values[node.inputs[0]] + values[node.inputs[1]]
                if node.name in host_nodes:
                    counts.add("residual_add", float(T * np.prod(node.shape)))
            elif isinstance(node, HostOp):
                params = {p[len(node.name) + 1:]: torch.as_tensor(plan.params[p], dtype=torch.float32)
                          for p in node.params}
                ins = [values[i] for i in node.inputs]
                if node.name in host_nodes:
                    _count_host_op(counts, node, ins, params, T, B)
                if node.time == "per_clip" or node.output_time == "per_clip":
                    (out,) = run_host_op(node.op, ins, node.attrs, params, ctx)
                    values[node.name] = out
                else:
                    (out,) = run_host_op(node.op, [flat(v) for v in ins], node.attrs, params, ctx)
                    values[node.name] = unflat(out)
            elif isinstance(node, Neuron):
                if node.name in chip:
                    acts[node.name] = _chip_layer(chip[node.name], fixed[node.name], fmt, values, T, B, counts,
                                                  plan)
                    values[node.name] = torch.as_tensor(acts[node.name].spikes, dtype=torch.float32)
                else:
                    counts.add("neuron_mul", float(T * np.prod(node.shape)))
                    counts.add("neuron_add", float(T * np.prod(node.shape)))
                    p = PLIFParameters(inv_tau=1.0 / node.tau, v_threshold=node.v_threshold)
                    state, outs = None, []
                    for t in range(T):
                        s, state = plif_step(values[node.inputs[0]][t], state, p)
                        outs.append(s)
                    values[node.name] = torch.stack(outs)
                    if node.name in wanted_host:
                        host_spikes[node.name] = values[node.name].to(torch.int8).numpy()
    for layer in network.layers:
        if acts[layer.name].host_current is not None:
            host_values[layer.name] = int(np.count_nonzero(acts[layer.name].host_current))
    return ChipRun(values[plan.output], acts, host_spikes, host_values, counts.counts)


def _count_host_op(counts: _HostCounts, node: HostOp, ins: list[Tensor], params: dict[str, Tensor], T: int,
                   B: int) -> None:
    if node.op == "spike_attention_product":
        q, k, v = (x.reshape(T * B, *x.shape[2:]) for x in ins)
        counts.add("spike_product", _attention_pairs(q, k, v, int(node.attrs["num_heads"]), T, B))
        counts.add("scale_mul", float(T * np.prod(node.shape)))
    elif node.op == "temporal_head":
        (s,) = ins
        w3 = params["conv3d_weight"]
        x = s.permute(1, 2, 0, 3, 4).to(torch.float64)
        ev = F.conv3d(x, (w3 != 0).to(torch.float64), groups=int(node.attrs["groups"]))
        counts.add("ac", ev.reshape(B, -1).sum(1).numpy())
        counts.add("mac", float(params["fc_weight"].numel()))


def host_currents(x: Tensor, fmt: NumberFormat) -> tuple[Tensor, int]:
    """Host currents (T*B, C, H, W) in integer weight units -> what the host writes: per step and video one bias
    exponent ``be`` (the smallest in [0, bias_exponent_max] at which the largest value fits the bias mantissa),
    each current ``round(x / 2^be) 2^be``; values still outside the range are clipped (and counted)."""
    lo, hi = fmt.bias_range
    peak = x.abs().flatten(1).amax(1)
    be = torch.ceil(torch.log2(torch.clamp(peak / hi, min=1.0))).clamp(0, fmt.bias_exponent_max)
    step = (2.0 ** be).view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    mant = torch.round(x / step)
    clipped = int(((mant < lo) | (mant > hi)).sum())
    return (mant.clamp(lo, hi) * step).to(torch.int64), clipped


def _chip_layer(layer, fixed: FixedLayer, fmt: NumberFormat, values: dict[str, Tensor], T: int, B: int,
                counts: _HostCounts, plan) -> LayerActivity:
    C, H, W = layer.shape
    current = torch.zeros((T * B, C, H, W), dtype=torch.int64)
    events = torch.zeros((T * B, C, H, W), dtype=torch.int64)
    for term, w in zip(layer.terms, fixed.weights):
        s = values[term.source].reshape(T * B, *term.in_shape)
        current += _conv_int(s, w, term.stride, term.padding)
        events += _conv_int(s, (w != 0).astype(np.int64), term.stride, term.padding)
    host_int = None
    clipped = 0
    if layer.host_terms:
        hv = torch.zeros((T * B, C, H, W), dtype=torch.float64)
        for ht in layer.host_terms:
            x = values[ht.source].reshape(T * B, *values[ht.source].shape[2:]).to(torch.float64)
            spikes = isinstance(plan.node(ht.source), Neuron)
            for op, key in zip(ht.ops, ht.prefixes()):
                if key in counts.partial:
                    x = counts.partial[key]
                else:
                    if not op.routing:
                        counts.synapse(x, torch.as_tensor(op.weight, dtype=torch.float64), op.stride, op.padding,
                                       spikes, T)
                    x = op.apply(x)
                    if key in counts.shared:
                        counts.partial[key] = x
                spikes = False
            hv += x
        host_int, clipped = host_currents(hv * fixed.host_scale, fmt)
    bias = torch.as_tensor(fixed.bias, dtype=torch.int64)
    drive = current + bias + (host_int if host_int is not None else 0)
    spikes, v_before, vmax = _lif_fixed(drive.reshape(T, B, C, H, W), fixed, fmt)
    bias_t = bias + (host_int if host_int is not None else 0)
    updated = (v_before.reshape(T * B, C, H, W) != 0) | (events > 0) | (bias_t != 0)
    shape = (T, B, C, H, W)
    return LayerActivity(spikes.numpy(), events.reshape(shape).to(torch.int32).numpy(),
                         updated.reshape(shape).numpy(),
                         None if host_int is None else host_int.reshape(shape).numpy(), vmax, clipped)


def iter_chip_runs(network: ChipNetwork, fixed: dict[str, FixedLayer], fmt: NumberFormat,
                   batches: Iterable[tuple[Tensor, Tensor]], config: dict | None = None
                   ) -> Iterator[tuple[ChipRun, Tensor]]:
    """``(run, labels)`` for each batch of (clips, labels)."""
    for clips, labels in batches:
        yield run_chip(network, fixed, fmt, clips, config), labels
