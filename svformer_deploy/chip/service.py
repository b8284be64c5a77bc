"""From an export bundle to a chip: mapping, figures from real spikes or from stated rates, and their records.

:func:`mapping_from_bundle` reads a NIR or Lava bundle: its manifest's plan and which neurons its neuromorphic
partitions hold (NIR: every neuron of a partition; Lava: every neuron a chain computes, not the chain's source
neuron, which the host computes), the source checkpoint (its SHA-256 checked by
:func:`~svformer_deploy.exporters.source_checkpoint`) for the weights, lowered again and compared with the
manifest's plan. :func:`chip_figures` runs validation videos through the mapped network and prices each one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor, nn

from svformer_deploy.chip.arch import ChipSpec
from svformer_deploy.chip.cost import StepCosts, VideoFigures, step_costs, video_figures
from svformer_deploy.chip.edges import INPUT_PREFIX
from svformer_deploy.chip.events import CoreEvents, events_from_rates, events_from_run
from svformer_deploy.chip.mapping import Mapping, build_mapping
from svformer_deploy.chip.run import ChipRun, run_chip
from svformer_deploy.errors import BundleFormatError, ConfigError
from svformer_deploy.exporters.plan import Neuron, Plan, lower

__all__ = [
    "MAPPABLE_TARGETS",
    "ChipFigures",
    "chip_figures",
    "float_reference",
    "host_energy",
    "mapped_tiles",
    "mapping_from_bundle",
    "mapping_from_model",
    "rate_figures",
]

MAPPABLE_TARGETS = ("nir", "lava")
"""Bundle targets whose partitions are neuromorphic (ONNX bundles hold the whole model as one host graph)."""

DEFAULT_FPS = 25.0
"""Frame rate of the real-time factor when none is given: UCF101's and HMDB51's 25 frames per second."""


def on_chip_neurons(plan: Plan, partitions_modules: Iterable[list[str]]) -> list[str]:
    covered = {m for mods in partitions_modules for m in mods}
    return [n.name for n in plan.nodes if isinstance(n, Neuron) and n.name in covered]


def mapping_from_model(model: nn.Module, chip: ChipSpec, *, host_fallback: bool = False,
                       approximate_bn: bool = False, on_chip: Iterable[str] | None = None) -> Mapping:
    """Map a model as its NIR export would put it on a chip (every neuron on the chip)."""
    plan = lower(model.eval(), approximate_bn=approximate_bn)
    neurons = list(on_chip) if on_chip is not None else [n.name for n in plan.nodes if isinstance(n, Neuron)]
    return build_mapping(plan, neurons, chip, host_fallback=host_fallback)


def mapping_from_bundle(bundle: str | os.PathLike, chip: ChipSpec, *, checkpoint: str | os.PathLike | None = None,
                        host_fallback: bool = False) -> tuple[Mapping, nn.Module, dict[str, Any], Any]:
    """(mapping, source model, checkpoint meta, manifest) of a NIR or Lava bundle (see the module docstring)."""
    from svformer_deploy.exporters import read_bundle, source_checkpoint
    from svformer_deploy.exporters.bundle import json_differences

    manifest = read_bundle(bundle)
    if manifest.target not in MAPPABLE_TARGETS:
        raise BundleFormatError(f"{bundle} was exported --to {manifest.target}, which holds no neuromorphic "
                                f"partition; map a bundle exported with --to {' or --to '.join(MAPPABLE_TARGETS)}")
    model, meta = source_checkpoint(bundle, checkpoint)
    plan = lower(model.eval(), approximate_bn=manifest.plan.bn_fold == "time_average")
    diff = json_differences(manifest.plan.to_dict(), plan.to_dict(), "plan")
    if diff:
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise BundleFormatError(f"{bundle}: manifest field(s) {', '.join(diff[:3])}{more} differ from the plan "
                                f"lowered from its checkpoint {checkpoint or manifest.checkpoint_path}; "
                                "re-export the bundle with `svformer-deploy export` instead of editing it")
    neurons = on_chip_neurons(plan, (p.modules for p in manifest.partitions))
    return build_mapping(plan, neurons, chip, host_fallback=host_fallback), model, meta, manifest


def float_reference(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """clips -> logits (on the CPU) of ``model`` in eval mode, run on the device its parameters are on: the
    reference :func:`chip_figures` compares the integer chip model with."""
    device = next(model.parameters()).device

    def logits(clips: Tensor) -> Tensor:
        return model.eval()(clips.to(device)).cpu()

    return logits


def mapped_tiles(mapping: Mapping) -> int:
    _, _, _, X, Y = mapping.fabric.locate(mapping.placement.core)
    return len(set(zip(X.tolist(), Y.tolist())))


def host_energy(counts: dict[str, float], profile) -> float:
    """Joules of the host's counted work under an energy profile (pJ per op class)."""
    return float(sum(v * profile.pj(k) for k, v in counts.items())) * 1e-12


@dataclass
class ChipFigures:
    """Chip figures of a mapping over ``videos`` videos (or expected from rates). ``steps`` holds, per timestep,
    the mean over the videos of each video's energy by kind and time (so the per-timestep table and every
    per-video figure, :attr:`video`, come from the same numbers); ``per_video`` keeps each video's own figures."""

    source: str                       # "spikes" (N videos) or "rates"
    videos: int
    per_video: list[VideoFigures]
    steps: StepCosts                  # mean over videos, per timestep
    events: CoreEvents                # mean counts per step and core
    traffic: dict[str, np.ndarray]    # (T,) host <-> chip traffic per step, mean over videos
    host_counts: dict[str, float]     # op class -> mean count per video of the host's work
    host_energy_j: float
    host_profile: str
    accuracy: float | None = None
    reference_accuracy: float | None = None
    """Top-1 of the reference (the checkpoint's float model) on the same videos, when one was given."""
    prediction_agreement: float | None = None
    """Share of the videos on which the integer chip model and the reference predict the same class."""
    layer_rates: dict[str, float] = field(default_factory=dict)
    state_max: dict[str, int] = field(default_factory=dict)
    clipped_host_currents: dict[str, int] = field(default_factory=dict)
    video: VideoFigures | None = None  # the figures of the mean per-timestep table (see the class docstring)


def _traffic(mapping: Mapping, run: ChipRun, video: int) -> dict[str, np.ndarray]:
    """Host <-> chip traffic of one video per step: spikes the chip sends the host, spikes the host sends the chip
    (its neurons' spikes into input groups), currents the host writes (non-zero values)."""
    T = next(iter(run.layers.values())).spikes.shape[0]
    out = {"chip_to_host_spikes": np.zeros(T), "host_to_chip_spikes": np.zeros(T),
           "host_to_chip_values": np.zeros(T)}
    for name in mapping.host.chip_spikes_read:
        out["chip_to_host_spikes"] += run.layers[name].spikes[:, video].reshape(T, -1).sum(1)
    for g in mapping.groups:
        if g.startswith(INPUT_PREFIX):
            out["host_to_chip_spikes"] += run.host_spikes[g[len(INPUT_PREFIX):]][:, video].reshape(T, -1).sum(1)
    for a in run.layers.values():
        if a.host_current is not None:
            out["host_to_chip_values"] += (a.host_current[:, video].reshape(T, -1) != 0).sum(1)
    return out


def _mean_steps(scs: list[StepCosts]) -> StepCosts:
    """Per timestep, the mean over videos of energy by kind and time parts; the critical core of a step is the
    one most often critical across the videos (ties: the lowest block)."""
    crit = np.stack([s.critical_block for s in scs])
    mode = np.array([np.bincount(c).argmax() for c in crit.T])
    parts = [max(set(p), key=[s.critical_part[t] for s in scs].count)
             for t, p in enumerate(zip(*[s.critical_part for s in scs]))]
    ic = None if scs[0].inter_chip_energy is None else np.mean([s.inter_chip_energy for s in scs], axis=0)
    return StepCosts({k: np.mean([s.energy[k] for s in scs], axis=0) for k in scs[0].energy},
                     np.mean([s.compute for s in scs], axis=0), np.mean([s.routing for s in scs], axis=0),
                     scs[0].sync, mode, parts, ic)


def _mean_events(evs: list[CoreEvents]) -> CoreEvents:
    total = evs[0]
    for e in evs[1:]:
        total = total + e
    return total.scaled(1.0 / len(evs))


def host_nodes(mapping: Mapping) -> frozenset[str]:
    h = mapping.host
    return frozenset(h.host_ops) | frozenset(h.host_synapses) | frozenset(h.host_neurons)


def chip_figures(mapping: Mapping, batches: Iterable[tuple[Tensor, Tensor]], *, fps: float = DEFAULT_FPS,
                 profile: str = "45nm-fp32", config: dict | None = None,
                 on_run: Callable[[ChipRun, Tensor], None] | None = None,
                 reference: Callable[[Tensor], Tensor] | None = None) -> ChipFigures:
    """Run ``batches`` of (clips, labels) through the mapping and price every video (see :mod:`.cost`).
    With ``reference`` (clips -> logits: the float model the bundle was exported from), the same clips also go
    through it: its top-1 and the share of videos whose top-1 class both models agree on are recorded."""
    import torch

    from svformer_deploy.energy.profiles import get_profile

    prof = get_profile(profile)
    tiles = mapped_tiles(mapping)
    depth = max(mapping.depth.values(), default=1)
    fmt = mapping.chip.number_format
    nodes = host_nodes(mapping)
    per_video, evs, traffic, counts, scs = [], [], [], [], []
    correct = total = ref_correct = agree = 0
    state: dict[str, int] = {}
    clipped: dict[str, int] = {}
    spikes_sum: dict[str, float] = {}
    n_el: dict[str, float] = {}
    for clips, labels in batches:
        run = run_chip(mapping.network, mapping.fixed, fmt, clips, config, nodes)
        if on_run is not None:
            on_run(run, labels)
        pred = run.logits.argmax(1)
        correct += int((pred == labels).sum())
        total += len(labels)
        if reference is not None:
            with torch.no_grad():
                ref = reference(clips).argmax(1)
            ref_correct += int((ref == labels).sum())
            agree += int((ref == pred).sum())
        for name, a in run.layers.items():
            state[name] = max(state.get(name, 0), a.v_max)
            clipped[name] = clipped.get(name, 0) + a.clipped_host
            spikes_sum[name] = spikes_sum.get(name, 0.0) + float(a.spikes.sum())
            n_el[name] = n_el.get(name, 0.0) + float(a.spikes.size)
        for b in range(len(labels)):
            ev = events_from_run(mapping, run.layers, run.host_spikes, b)
            sc = step_costs(ev, mapping.chip, tiles)
            per_video.append(video_figures(sc, depth, fps))
            scs.append(sc)
            evs.append(ev)
            traffic.append(_traffic(mapping, run, b))
            counts.append({k: float(v[b]) if np.ndim(v) else float(v) for k, v in run.host_counts.items()})
    if not evs:
        raise ConfigError("no validation videos to run through the chip mapping")
    mean_ev = _mean_events(evs)
    mean_counts = {k: float(np.mean([c.get(k, 0.0) for c in counts])) for k in sorted({k for c in counts
                                                                                       for k in c})}
    steps = _mean_steps(scs)
    return ChipFigures("spikes", len(evs), per_video, steps, mean_ev,
                       {k: np.mean([t[k] for t in traffic], axis=0) for k in traffic[0]}, mean_counts,
                       host_energy(mean_counts, prof), prof.name, correct / total if total else None,
                       ref_correct / total if reference is not None and total else None,
                       agree / total if reference is not None and total else None,
                       {k: spikes_sum[k] / n_el[k] for k in spikes_sum}, state, clipped,
                       video_figures(steps, depth, fps))


def expected_host_counts(mapping: Mapping, rates: dict[str, float], timesteps: int) -> dict[str, float]:
    """The host's work per video expected from stated rates, by the op classes and rules of
    :mod:`svformer_deploy.chip.run`, with independent spikes of each layer's rate: a spike-fed convolution
    ``rate x connections`` ``ac`` per step, a real-fed one ``connections`` ``mac`` (a host-term partial result
    that several layers share, once); the attention product per head (N tokens, d channels)
    ``d (d N r_k r_v + N r_q d (1 - (1 - r_k r_v)^N))`` ``spike_product`` pairs and one ``scale_mul`` per output;
    the temporal head ``rate x connections`` ``ac`` and its classifier's weights as ``mac``; a host join one
    ``residual_add`` per element; a host neuron a ``neuron_mul`` and a ``neuron_add``."""
    import torch

    from svformer_deploy.chip.run import _connections
    from svformer_deploy.exporters.plan import Add, HostOp, Synapse

    plan = mapping.network.plan
    T = float(timesteps)
    out: dict[str, float] = {}

    def add(k: str, v: float) -> None:
        out[k] = out.get(k, 0.0) + float(v)

    def conv(w: np.ndarray, in_shape: tuple, stride: int, padding: int, source: str) -> None:
        n = _connections(torch.as_tensor(w, dtype=torch.float64), tuple(in_shape), stride, padding)
        node = plan.node(source) if source in {x.name for x in plan.nodes} else None
        if isinstance(node, Neuron):
            add("ac", T * rates[source] * n)
        else:
            add("mac", T * n)

    computed: set[tuple] = set()  # host-term partial results shared by several layers: counted once
    for layer in mapping.network.layers:
        for h in layer.host_terms:
            src, shape = h.source, plan.node(h.source).shape
            for op, key in zip(h.ops, h.prefixes()):
                if not op.routing and key not in computed:
                    conv(op.weight, shape, op.stride, op.padding, src)
                computed.add(key)
                c_in, hh, ww = shape
                k = op.kernel
                shape = (op.weight.shape[0], (hh + 2 * op.padding - k) // op.stride + 1,
                         (ww + 2 * op.padding - k) // op.stride + 1)
                src = ""
    host = set(mapping.host.host_ops) | set(mapping.host.host_synapses) | set(mapping.host.host_neurons)
    for n in plan.nodes:
        if n.name not in host:
            continue
        if isinstance(n, Synapse):
            conv(plan.params[f"{n.name}.weight"], plan.node(n.inputs[0]).shape, n.stride, n.padding, n.inputs[0])
        elif isinstance(n, Add):
            add("residual_add", T * np.prod(n.shape))
        elif isinstance(n, Neuron):
            add("neuron_mul", T * np.prod(n.shape))
            add("neuron_add", T * np.prod(n.shape))
        elif isinstance(n, HostOp) and n.op == "spike_attention_product":
            rq, rk, rv = (rates[i] for i in n.inputs)
            heads = int(n.attrs["num_heads"])
            C, H, W = n.shape
            d, N = C // heads, H * W
            p = rk * rv
            add("spike_product", T * heads * d * (d * N * p + N * rq * d * (1 - (1 - p) ** N)))
            add("scale_mul", T * C * H * W)
        elif isinstance(n, HostOp) and n.op == "temporal_head":
            w3 = plan.params[f"{n.name}.conv3d_weight"]
            add("ac", rates[n.inputs[0]] * float(np.count_nonzero(w3)))
            add("mac", float(plan.params[f"{n.name}.fc_weight"].size))
    return out


def rate_figures(mapping: Mapping, rates: dict[str, float], timesteps: int, *, fps: float = DEFAULT_FPS,
                 profile: str = "45nm-fp32") -> ChipFigures:
    """Expected figures of one video when each group fires at its stated mean rate (see :mod:`.events`), the
    host's work expected the same way (:func:`expected_host_counts`) and priced under ``profile``."""
    from svformer_deploy.energy.profiles import get_profile
    missing = [g for g in mapping.groups if (g.removeprefix(INPUT_PREFIX))
               not in rates]
    if missing:
        raise ConfigError(f"no firing rate for {len(missing)} chip layer(s), e.g. {missing[0]}; the rates file "
                          "must give every neuron layer's output rate (name,rate)")
    ev = events_from_rates(mapping, rates, timesteps)
    sc = step_costs(ev, mapping.chip, mapped_tiles(mapping))
    vf = video_figures(sc, max(mapping.depth.values(), default=1), fps)
    prof = get_profile(profile)
    counts = expected_host_counts(mapping, rates, timesteps)
    return ChipFigures("rates", 1, [vf], sc, ev, {}, counts, host_energy(counts, prof), prof.name,
                       layer_rates=dict(rates), video=vf)


def neuron_rates(plan: Plan, layer_rates: dict[str, float]) -> dict[str, float]:
    """Output firing rate of every neuron layer from stated rates: a synaptic layer's *input* rate (the rates
    files of ``energy price``) is the rate of the neuron that feeds it; a neuron layer may be named directly."""
    neurons = {n.name for n in plan.nodes if isinstance(n, Neuron)}
    out: dict[str, float] = {}
    for name, rate in layer_rates.items():
        if name in neurons:
            feeders = [name]
        else:
            feeders = [i for n in plan.nodes if name in n.modules or n.name == name for i in n.inputs if i in neurons]
        for f in dict.fromkeys(feeders):
            if f in out and abs(out[f] - rate) > 1e-12:
                raise ConfigError(f"stated rates disagree on neuron layer {f}: {out[f]} and {rate} ({name})")
            out[f] = float(rate)
    return out
