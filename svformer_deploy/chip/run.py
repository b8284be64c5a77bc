"""Run a mapped network on real clips: the chip layers in their fixed-point dynamics, the host in float.

The interpreter walks the plan once per batch, whole clips at a time (T, B, ...): the input frames, the host's
synapses, joins and host operations (the registry of :mod:`svformer_deploy.exporters.host_ops`) in float32, the
host's neurons with the model's own :func:`~svformer_deploy.models.neurons.plif_step`, and every chip layer as
integers (:mod:`svformer_deploy.chip.quantize`): its input current is the sum of its spike terms (integer
convolutions of the source spikes), its host currents (the host's float value, scaled and rounded) and its bias.

What it records per chip layer and timestep, per neuron, is what the chip's event counts need: the spikes, the
synaptic events arriving (active presynaptic neurons connected to it, i.e. non-zero integer weights), whether it
was *updated* in SANA-FE's sense (potential, input or bias non-zero), and the largest |v| and |u| (state range).
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


def run_chip(network: ChipNetwork, fixed: dict[str, FixedLayer], fmt: NumberFormat, clips: Tensor,
             config: dict | None = None) -> ChipRun:
    """``clips`` (B, C, T, H, W) through the mapped network (see the module docstring)."""
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
                values[node.name] = unflat(F.conv2d(flat(values[node.inputs[0]]), w, b, stride=node.stride,
                                                    padding=node.padding))
            elif isinstance(node, Add):
                values[node.name] = values[node.inputs[0]] + values[node.inputs[1]]
            elif isinstance(node, HostOp):
                params = {p[len(node.name) + 1:]: torch.as_tensor(plan.params[p], dtype=torch.float32)
                          for p in node.params}
                ins = [values[i] for i in node.inputs]
                if node.time == "per_clip" or node.output_time == "per_clip":
                    (out,) = run_host_op(node.op, ins, node.attrs, params, ctx)
                    values[node.name] = out
                else:
                    (out,) = run_host_op(node.op, [flat(v) for v in ins], node.attrs, params, ctx)
                    values[node.name] = unflat(out)
            elif isinstance(node, Neuron):
                if node.name in chip:
                    acts[node.name] = _chip_layer(chip[node.name], fixed[node.name], fmt, values, T, B)
                    values[node.name] = torch.as_tensor(acts[node.name].spikes, dtype=torch.float32)
                else:
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
    return ChipRun(values[plan.output], acts, host_spikes, host_values)


def _chip_layer(layer, fixed: FixedLayer, fmt: NumberFormat, values: dict[str, Tensor], T: int, B: int
                ) -> LayerActivity:
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
            hv += ht.apply(values[ht.source].reshape(T * B, *values[ht.source].shape[2:]).to(torch.float64))
        q = torch.round(hv * fixed.host_scale)
        lo, hi = fmt.bias_range
        clipped = int(((q < lo) | (q > hi)).sum())
        host_int = q.clamp(lo, hi).to(torch.int64)
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
