"""Energy, time and power of a mapped network from its event counts, under the chip file's per-event figures.

Per timestep ``t`` (SANA-FE's energy model and its ``simple`` timing model, plus routing):

* energy, by event kind: ``E_access * neurons + E_update * updated + E_spike * spikes`` (soma; input neurons cost
  nothing), ``(E_synapse + E_dendrite) * synaptic events``, ``E_msg_out * messages out + E_msg_in * messages in``,
  ``E_hop`` per hop and direction; inter-chip hops are priced only when the chip file gives a per-hop figure;
* time: for every core ``c``
  ``gen_c = sum_neurons (L_access + L_update [updated] + L_spike [fired]) + L_msg_out * messages out`` and
  ``proc_c = L_msg_in * messages in + (L_synapse + L_dendrite) * synaptic events``; the step takes
  ``max_c max(gen_c, proc_c)`` (the **critical core**) ``+ routing + sync``, where routing is the latency of the
  longest route a message took that step (hops x hop latency: the network delay SANA-FE's ``detailed`` model
  gives an uncongested message) and sync the barrier-sync latency of the chip's table for the mapped tiles.

Per video (T frames, one per timestep, frames streamed through the layer-synchronous pipeline): energy ``sum_t E_t``;
latency ``sum_t time_t + (D - 1) * mean time`` where D is the pipeline depth (the fill before the first frame's
result; see :attr:`~svformer_deploy.chip.mapping.Mapping.depth`); throughput ``1 / sum_t time_t`` videos per
second (the next video enters as the last frame leaves the first layer); average power ``energy / sum_t time_t``;
real-time factor ``(1 / fps) / mean time`` (>= 1: the chip keeps up with video at ``fps`` frames per second).
Not modelled: static (leakage) power, the host, the host <-> chip link.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svformer_deploy.chip.arch import ChipSpec
from svformer_deploy.chip.events import CoreEvents

__all__ = ["ENERGY_KINDS", "StepCosts", "VideoFigures", "step_costs", "video_figures"]

ENERGY_KINDS = ("soma_access", "soma_update", "soma_spike", "synapse", "dendrite", "message_out", "message_in",
                "hops")


@dataclass
class StepCosts:
    """(T,) arrays: energy by kind (J), the time parts (s) and the critical core of each step."""

    energy: dict[str, np.ndarray]
    compute: np.ndarray     # max_c max(gen_c, proc_c)
    routing: np.ndarray
    sync: float
    critical_block: np.ndarray
    critical_part: list[str]  # "sending" (neuron updates and messages out) or "receiving" (messages in, synapses)
    inter_chip_energy: np.ndarray | None

    @property
    def time(self) -> np.ndarray:
        return self.compute + self.routing + self.sync

    @property
    def total_energy(self) -> np.ndarray:
        e = sum(self.energy.values())
        return e + (self.inter_chip_energy if self.inter_chip_energy is not None else 0.0)


def core_times(ev: CoreEvents, chip: ChipSpec) -> tuple[np.ndarray, np.ndarray]:
    """(gen, proc): (T, n_blocks) seconds, as in SANA-FE's ``simple`` timing model."""
    c = chip.costs
    chipside = (~ev.is_input).astype(np.float64)
    gen = chipside * (ev.neurons * c.access_neuron[1]) + chipside * (ev.updated * c.update_neuron[1]
                                                                      + ev.fired * c.spike_out[1])
    gen = gen + ev.messages_out * c.message_out[1]
    proc = ev.messages_in * c.message_in[1] + ev.synaptic_events * (c.synapse[1] + c.dendrite[1])
    return gen, proc


def step_costs(ev: CoreEvents, chip: ChipSpec, mapped_tiles: int) -> StepCosts:
    c = chip.costs
    chipside = (~ev.is_input).astype(np.float64)
    T = ev.timesteps
    energy = {
        "soma_access": np.full(T, float((ev.neurons * chipside).sum() * c.access_neuron[0])),
        "soma_update": (ev.updated * chipside).sum(1) * c.update_neuron[0],
        "soma_spike": (ev.fired * chipside).sum(1) * c.spike_out[0],
        "synapse": ev.synaptic_events.sum(1) * c.synapse[0],
        "dendrite": ev.synaptic_events.sum(1) * c.dendrite[0],
        "message_out": ev.messages_out.sum(1) * c.message_out[0],
        "message_in": ev.messages_in.sum(1) * c.message_in[0],
        "hops": (ev.hops_east.sum(1) * c.hop_east[0] + ev.hops_west.sum(1) * c.hop_west[0]
                 + ev.hops_north.sum(1) * c.hop_north[0] + ev.hops_south.sum(1) * c.hop_south[0]),
    }
    gen, proc = core_times(ev, chip)
    worst = np.maximum(gen, proc)
    crit = worst.argmax(axis=1)
    parts = ["sending" if gen[t, crit[t]] >= proc[t, crit[t]] else "receiving" for t in range(T)]
    e_ic = chip.inter_chip_hop[0]
    return StepCosts(energy, worst.max(axis=1), ev.max_route_latency.astype(np.float64),
                     chip.costs.sync_latency(mapped_tiles), crit, parts,
                     None if e_ic is None else ev.inter_chip_hops.sum(1) * float(e_ic))


@dataclass(frozen=True)
class VideoFigures:
    """One video's figures on the chip (see the module docstring)."""

    energy_j: float
    time_per_step_s: float      # mean
    max_time_per_step_s: float
    latency_s: float
    throughput_videos_per_s: float
    power_w: float
    real_time_factor: float
    fps: float

    def to_dict(self) -> dict[str, float]:
        return {"energy_per_video_mJ": self.energy_j * 1e3, "time_per_timestep_us": self.time_per_step_s * 1e6,
                "max_time_per_timestep_us": self.max_time_per_step_s * 1e6, "latency_per_video_ms": self.latency_s * 1e3,
                "videos_per_second": self.throughput_videos_per_s, "average_power_mW": self.power_w * 1e3,
                "real_time_factor": self.real_time_factor, "fps": self.fps}


def video_figures(sc: StepCosts, depth: int, fps: float) -> VideoFigures:
    t = sc.time
    busy = float(t.sum())
    energy = float(sc.total_energy.sum())
    mean = float(t.mean())
    return VideoFigures(energy, mean, float(t.max()), busy + max(depth - 1, 0) * mean,
                        1.0 / busy if busy > 0 else float("inf"), energy / busy if busy > 0 else 0.0,
                        (1.0 / fps) / mean if mean > 0 else float("inf"), fps)
