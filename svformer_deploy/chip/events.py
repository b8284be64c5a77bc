"""Event counts per core and timestep: from a batch of real spikes, or expected from stated firing rates.

Counting rules (SANA-FE's event model; one block per core, so a block's counts are its core's):

* **neuron accesses**: every neuron of a core, every timestep (input neurons: none, SANA-FE's ``input`` unit);
* **neuron updates**: neurons whose potential before the step, input or bias is non-zero (``LoihiLifModel``'s
  ``updated``); input neurons: those that spike;
* **spikes**: neurons that fire;
* **synaptic events**: for every spike, one per connection (non-zero integer weight) it reaches; booked on the core
  of the receiving neuron;
* **messages**: a firing neuron sends one message to every core that holds a neuron it connects to
  (SANA-FE: one output axon per destination core); booked out at the sender and in at the receiver;
* **hops**: a message from tile (Xa, Ya) to tile (Xb, Yb) takes ``|Xa - Xb|`` east (Xa < Xb) or west hops and
  ``|Ya - Yb|`` north (Ya < Yb) or south hops; hops that cross a chip boundary are counted apart as inter-chip hops.

Who fires where comes from the recorded activity (:class:`~svformer_deploy.chip.run.ChipRun`) per video, or, for a
model priced from published firing rates, from each layer's mean rate: then every neuron fires with the rate of its
layer, every neuron is counted as updated (an upper bound), and messages are the connected neurons x the rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svformer_deploy.chip.edges import INPUT_PREFIX, EdgeTerm
from svformer_deploy.chip.mapping import Mapping

__all__ = ["EVENT_FIELDS", "CoreEvents", "events_from_rates", "events_from_run"]

EVENT_FIELDS = ("updated", "fired", "synaptic_events", "messages_in", "messages_out", "hops_east", "hops_west",
                "hops_north", "hops_south", "inter_chip_hops")


@dataclass
class CoreEvents:
    """Counts of one video, arrays (T, n_blocks) (float: expected counts may be fractional), plus the static
    neurons per block and which blocks are input groups."""

    neurons: np.ndarray          # (n_blocks,)
    is_input: np.ndarray         # (n_blocks,) bool
    updated: np.ndarray
    fired: np.ndarray
    synaptic_events: np.ndarray
    messages_in: np.ndarray
    messages_out: np.ndarray
    hops_east: np.ndarray
    hops_west: np.ndarray
    hops_north: np.ndarray
    hops_south: np.ndarray
    inter_chip_hops: np.ndarray
    max_route_hops: np.ndarray   # (T,) longest route taken by any message that step (hops east-west, north-south)
    max_route_latency: np.ndarray  # (T,) seconds, under the chip's hop latencies

    @property
    def timesteps(self) -> int:
        return int(self.fired.shape[0])

    def __add__(self, other: CoreEvents) -> CoreEvents:
        kw = {f: getattr(self, f) + getattr(other, f) for f in EVENT_FIELDS}
        return CoreEvents(self.neurons, self.is_input, **kw,
                          max_route_hops=np.maximum(self.max_route_hops, other.max_route_hops),
                          max_route_latency=np.maximum(self.max_route_latency, other.max_route_latency))

    def scaled(self, f: float) -> CoreEvents:
        kw = {k: getattr(self, k) * f for k in EVENT_FIELDS}
        return CoreEvents(self.neurons, self.is_input, **kw, max_route_hops=self.max_route_hops,
                          max_route_latency=self.max_route_latency)


def _block_sums(x: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """(T, C, H, W) -> (T, n_blocks) sums over the blocks of a grid of ``size`` (channels, rows, cols order)."""
    T, C, H, W = x.shape
    c, h, w = size
    gc, gh, gw = -(-C // c), -(-H // h), -(-W // w)
    pad = np.zeros((T, gc * c, gh * h, gw * w), dtype=np.float64)
    pad[:, :C, :H, :W] = x
    return pad.reshape(T, gc, c, gh, h, gw, w).sum(axis=(2, 4, 6)).reshape(T, gc * gh * gw)


def _rect_sums(prefix: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """prefix (T, H+1, W+1) 2-D prefix sums; rows/cols (E, 2) ranges -> (T, E) sums."""
    r0, r1, c0, c1 = rows[:, 0], rows[:, 1], cols[:, 0], cols[:, 1]
    return prefix[:, r1, c1] - prefix[:, r0, c1] - prefix[:, r1, c0] + prefix[:, r0, c0]


def _hop_fields(mapping: Mapping, src: np.ndarray, dst: np.ndarray, msgs: np.ndarray, n_blocks: int,
                T: int) -> dict[str, np.ndarray]:
    fab = mapping.fabric
    core = mapping.placement.core
    _, _, _, xa, ya = fab.locate(core[src])
    _, _, _, xb, yb = fab.locate(core[dst])
    dx, dy = np.abs(xa - xb), np.abs(ya - yb)
    mw, mh = fab.chip.mesh_width, fab.chip.mesh_height
    inter = np.abs(xa // mw - xb // mw) + np.abs(ya // mh - yb // mh)
    out = {}
    for name, weight in (("hops_east", dx * (xa < xb)), ("hops_west", dx * (xa >= xb)),
                         ("hops_north", dy * (ya < yb)), ("hops_south", dy * (ya >= yb)),
                         ("inter_chip_hops", inter)):
        arr = np.zeros((T, n_blocks))
        for t in range(T):
            arr[t] = np.bincount(dst, weights=msgs[t] * weight, minlength=n_blocks)
        out[name] = arr
    c = fab.chip.costs
    lat = dx * np.where(xa < xb, c.hop_east[1], c.hop_west[1]) + dy * np.where(ya < yb, c.hop_north[1],
                                                                                c.hop_south[1])
    active = msgs > 0
    out["max_route_hops"] = np.array([float((dx + dy)[active[t]].max(initial=0)) for t in range(T)])
    out["max_route_latency"] = np.array([float(lat[active[t]].max(initial=0.0)) for t in range(T)])
    return out


def _assemble(mapping: Mapping, per_group: dict[str, dict[str, np.ndarray]], edge_msgs: list[np.ndarray],
              edges: list[EdgeTerm], T: int) -> CoreEvents:
    n = len(mapping.blocks)
    neurons = np.array([b.neurons for b in mapping.blocks], dtype=np.float64)
    is_input = np.array([b.layer.startswith(INPUT_PREFIX) for b in mapping.blocks])
    f = {k: np.zeros((T, n)) for k in ("updated", "fired", "synaptic_events")}
    for g, arrs in per_group.items():
        sl = slice(mapping.group_blocks[g].start, mapping.group_blocks[g].stop)
        for k, v in arrs.items():
            f[k][:, sl] = v
    msg_in, msg_out = np.zeros((T, n)), np.zeros((T, n))
    src = np.concatenate([e.src_blocks for e in edges]) if edges else np.zeros(0, np.int64)
    dst = np.concatenate([e.dst_blocks for e in edges]) if edges else np.zeros(0, np.int64)
    msgs = np.concatenate(edge_msgs, axis=1) if edges else np.zeros((T, 0))
    for t in range(T):
        msg_in[t] = np.bincount(dst, weights=msgs[t], minlength=n)
        msg_out[t] = np.bincount(src, weights=msgs[t], minlength=n)
    hops = _hop_fields(mapping, src, dst, msgs, n, T)
    return CoreEvents(neurons, is_input, f["updated"], f["fired"], f["synaptic_events"], msg_in, msg_out,
                      hops["hops_east"], hops["hops_west"], hops["hops_north"], hops["hops_south"],
                      hops["inter_chip_hops"], hops["max_route_hops"], hops["max_route_latency"])


def events_from_run(mapping: Mapping, activity: dict[str, np.ndarray | object], host_spikes: dict[str, np.ndarray],
                    video: int, edges: list[EdgeTerm] | None = None) -> CoreEvents:
    """Counts of video ``video`` of a batch: ``activity`` maps chip layers to their
    :class:`~svformer_deploy.chip.run.LayerActivity`, ``host_spikes`` host neurons to spikes (T, B, C, H, W)."""
    edges = mapping.edge_terms if edges is None else edges
    per_group: dict[str, dict[str, np.ndarray]] = {}
    spikes: dict[str, np.ndarray] = {}
    T = 0
    for g in mapping.groups:
        size = mapping.splits[g].size
        if g.startswith(INPUT_PREFIX):
            s = host_spikes[g[len(INPUT_PREFIX):]][:, video].astype(np.float64)
            fired = _block_sums(s, size)
            per_group[g] = {"fired": fired, "updated": fired}
        else:
            act = activity[g]
            s = act.spikes[:, video].astype(np.float64)
            per_group[g] = {"fired": _block_sums(s, size),
                            "updated": _block_sums(act.updated[:, video].astype(np.float64), size),
                            "synaptic_events": _block_sums(act.events[:, video].astype(np.float64), size)}
        spikes[g] = s
        T = s.shape[0]
    msgs = []
    for e in edges:
        s = spikes[e.source_group]
        sums = np.zeros((T, len(e.src_blocks)))
        for p, chans in enumerate(e.chan_sel):
            sel = e.pair_index == p
            if not sel.any():
                continue
            m = s[:, chans].sum(axis=1)
            prefix = np.zeros((T, m.shape[1] + 1, m.shape[2] + 1))
            prefix[:, 1:, 1:] = m.cumsum(1).cumsum(2)
            sums[:, sel] = _rect_sums(prefix, e.rows[sel], e.cols[sel])
        first = len(e.src_blocks) - len(e.masks)
        for k, (chans, region) in enumerate(e.masks):
            sums[:, first + k] = (s[:, chans] * region[None, None]).sum(axis=(1, 2, 3))
        msgs.append(sums)
    return _assemble(mapping, per_group, msgs, edges, T)


def events_from_rates(mapping: Mapping, rates: dict[str, float], timesteps: int,
                      edges: list[EdgeTerm] | None = None) -> CoreEvents:
    """Expected counts of one video when every neuron of group ``g`` fires with probability ``rates[g]`` each step
    (see the module docstring); input groups take their host neuron's rate. Every step expects the same counts:
    they are computed once and repeated ``timesteps`` times."""
    edges = mapping.edge_terms if edges is None else edges
    per_group: dict[str, dict[str, np.ndarray]] = {}

    def rate_of(group: str) -> float:
        return rates[group[len(INPUT_PREFIX):] if group.startswith(INPUT_PREFIX) else group]

    for g in mapping.groups:
        r = rate_of(g)
        blocks = mapping.blocks[mapping.group_blocks[g].start:mapping.group_blocks[g].stop]
        neurons = np.array([b.neurons for b in blocks], dtype=np.float64)[None]
        if g.startswith(INPUT_PREFIX):
            per_group[g] = {"fired": neurons * r, "updated": neurons * r}
            continue
        per_group[g] = {"fired": neurons * r, "updated": neurons.copy(), "synaptic_events": np.zeros_like(neurons)}
    for layer in mapping.network.layers:
        split = mapping.splits[layer.name]
        syn = per_group[layer.name]["synaptic_events"]
        for t, g in zip(layer.terms, mapping.geometry[layer.name]):
            fan = g.fan_in().astype(np.float64)[None]
            syn += _block_sums(fan, split.size) * rates[t.source]
    msgs = [(e.weight.astype(np.float64) * rate_of(e.source_group))[None] for e in edges]
    one = _assemble(mapping, per_group, msgs, edges, 1)
    reps = {f: np.repeat(getattr(one, f), timesteps, axis=0) for f in EVENT_FIELDS}
    return CoreEvents(one.neurons, one.is_input, **reps, max_route_hops=np.repeat(one.max_route_hops, timesteps),
                      max_route_latency=np.repeat(one.max_route_latency, timesteps))
