"""Check a mapping against the SANA-FE architecture simulator (optional, GPL-3.0: ``pip install sanafe``).

SANA-FE is an independent simulator of the chip; it is given the same chip (the fabric written as one SANA-FE
architecture file), the same integers, the same placement and the same input spike trains, and its own counts,
energy and time per timestep are compared with this package's model of exactly the same network.

**Units.** SANA-FE runs a layer-synchronous pipeline: a spike sent at step k is integrated at step k + 1, so a
neuron fed by paths of different depths (the residual expansion of :mod:`~svformer_deploy.chip.network`) would see
its inputs at different steps. Each check therefore runs one *unit*: a chip layer with its real inputs replayed
-- every source neuron as a SANA-FE input neuron (``soma: input``, spikes from the recorded run) on the core its
block has in the mapping, the layer's neurons on theirs, every non-zero integer weight a synapse -- and the host's
currents written as the compartments' bias before each step. For T frames SANA-FE runs T + 1 steps: at step j the
inputs send frame j - 1 and the layer integrates frame j - 2 (it is accessed at every step, from the first).

**Compared, per step:** spikes (layer and inputs), neuron updates, synaptic events and hops must be equal; total
energy within 1 %; the time per step of SANA-FE's ``simple`` model within 1 % of this model's compute + sync time.
SANA-FE's ``detailed`` model (network and congestion delays) is run too and its time is reported beside this
model's compute + routing + sync time (agreement is stated, not required: the two model routing differently).
The unit networks are written in SANA-FE's own YAML (``sanafe/<layer>.yaml``, when under ``max_saved`` synapses)
with the architecture (``sanafe/arch.yaml``).
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from svformer_deploy.chip.cost import core_times
from svformer_deploy.chip.edges import INPUT_PREFIX
from svformer_deploy.chip.events import CoreEvents
from svformer_deploy.chip.mapping import Mapping
from svformer_deploy.chip.run import ChipRun
from svformer_deploy.errors import VerificationError

__all__ = ["ENERGY_TOLERANCE", "UnitResult", "fabric_arch", "sanafe_available", "verify_units"]

ENERGY_TOLERANCE = 0.01
"""Largest relative difference of energy (and of the simple model's time) per step that passes."""


def sanafe_available() -> str | None:
    """None if ``sanafe`` imports, else why not (the install line)."""
    try:
        import sanafe  # noqa: F401
    except ImportError as err:
        return (f"SANA-FE is not installed ({err}); install it with `pip install 'svformer-deploy[sanafe]'` "
                "(sanafe 2.2.9+, GPL-3.0, an optional extra)")
    return None


def fabric_arch(mapping: Mapping, input_units: int | None = None) -> dict[str, Any]:
    """The mapping's fabric as one SANA-FE architecture: the chip's tile replicated over the whole mesh
    (``input_units``: keep only that many replicated input units per core; their number changes no cost)."""
    chip = mapping.chip
    doc = copy.deepcopy(chip.raw)
    arch = doc["architecture"]
    fab = mapping.fabric
    arch["attributes"]["width"], arch["attributes"]["height"] = fab.width, fab.height
    tile = arch["tile"][0]
    base = str(tile["name"]).split("[")[0]
    tile["name"] = f"{base}[0..{fab.width * fab.height - 1}]"
    doc.pop("svformer_deploy", None)
    if input_units is not None:
        for core in tile.get("core") or []:
            for unit in core.get("soma") or []:
                if (unit.get("attributes") or {}).get("model") == "input" and "[" in str(unit["name"]):
                    unit["name"] = f"{str(unit['name']).split('[')[0]}[0..{max(input_units, 1) - 1}]"
    return doc


def _sanafe_core_index(mapping: Mapping, core: np.ndarray) -> np.ndarray:
    """Global core -> index into ``arch.cores()`` of the fabric architecture (tile id = X * height + Y)."""
    fab = mapping.fabric
    _, _, sub, X, Y = fab.locate(core)
    return (X * fab.height + Y) * fab.chip.cores_per_tile + sub


@dataclass
class UnitResult:
    layer: str
    video: int
    steps: int
    synapses: int
    ours: dict[str, list[float]]
    sanafe: dict[str, list[float]]
    passed: bool
    problems: list[str]
    seconds: float
    saved: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "video": self.video, "steps": self.steps, "synapses": self.synapses, "passed": self.passed,
                "problems": self.problems, "seconds": round(self.seconds, 2), "sanafe_network": self.saved,
                "ours": self.ours, "sanafe": self.sanafe}


def _connections(w: np.ndarray, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int], stride: int,
                 padding: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source index, destination index, weight) of every in-bounds non-zero weight; CHW flat indices."""
    ci, hi, wi = in_shape
    C, H, W = out_shape
    o, i, ky, kx = np.nonzero(w)
    wv = w[o, i, ky, kx]
    ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    ys, xs = ys.ravel(), xs.ravel()
    iy = ys[None, :] * stride - padding + ky[:, None]
    ix = xs[None, :] * stride - padding + kx[:, None]
    ok = (iy >= 0) & (iy < hi) & (ix >= 0) & (ix < wi)
    src = (i[:, None] * hi + iy) * wi + ix
    dst = (o[:, None] * H + ys[None, :]) * W + xs[None, :]
    return src[ok], dst[ok], np.broadcast_to(wv[:, None], ok.shape)[ok]


def _unit_events(mapping: Mapping, layer: str, run: ChipRun, video: int) -> tuple[CoreEvents, list[int]]:
    """Our model of the unit: the mapping's events restricted to the layer's blocks and its sources' blocks,
    with the messages of the layer's own spikes removed (the unit has no consumers). Returns the events of the
    frames (T steps) and the blocks of the unit."""
    from svformer_deploy.chip.events import events_from_run

    terms = [e for e in mapping.edge_terms if e.layer == layer]
    ev = events_from_run(mapping, run.layers, run.host_spikes, video, edges=terms)
    blocks = set(mapping.group_blocks[layer])
    for e in terms:
        blocks |= set(int(b) for b in e.src_blocks)
    return ev, sorted(blocks)


def _compare(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> list[str]:
    problems = []
    for k in ("fired", "updated", "synaptic_events", "hops"):
        a, b = ours[k], theirs[k]
        bad = np.flatnonzero(np.abs(a - b) > 1e-6)
        if len(bad):
            j = int(bad[0])
            problems.append(f"{k} differs at step {j + 1}: ours {a[j]:g}, SANA-FE {b[j]:g}")
    for k in ("energy", "time_simple"):
        a, b = ours[k], theirs[k]
        rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-30)
        bad = np.flatnonzero(rel > ENERGY_TOLERANCE)
        if len(bad):
            j = int(bad[0])
            problems.append(f"{k} differs by {rel[j]:.2%} at step {j + 1}: ours {a[j]:.6g}, SANA-FE {b[j]:.6g}")
    return problems


def verify_units(mapping: Mapping, run: ChipRun, out: Path | None, layers: list[str] | None = None,
                 video: int = 0, max_saved: int = 200_000, progress=None) -> list[UnitResult]:
    """Run every unit (or those of ``layers``) of video ``video`` of ``run`` in SANA-FE and compare."""
    problem = sanafe_available()
    if problem:
        raise VerificationError(problem)
    import sanafe

    chip = mapping.chip
    if not chip.energy_published:
        raise VerificationError(f"{chip.name} has no published per-event figures; there is nothing to compare")
    names = layers or [layer.name for layer in mapping.network.layers]
    slots = 1
    for name in names:
        for term in mapping.network.layer(name).terms:
            sg = term.source if term.on_chip else INPUT_PREFIX + term.source
            slots = max(slots, int(np.bincount(_neuron_cores(mapping, sg)).max()))
    arch_doc = fabric_arch(mapping, slots)
    arch_path = (out / "arch.yaml") if out is not None else Path(_tmp_file())
    arch_path.parent.mkdir(parents=True, exist_ok=True)
    arch_path.write_text(yaml.safe_dump(arch_doc, sort_keys=False), encoding="utf-8")
    with _quiet():
        arch = sanafe.load_arch(str(arch_path))
    cores = arch.cores()
    results = []
    input_base = chip.input_unit.split("[")[0]
    for name in names:
        t0 = time.perf_counter()
        layer = mapping.network.layer(name)
        act = run.layers[name]
        fixed = mapping.fixed[name]
        T = act.spikes.shape[0]
        net = sanafe.Network()
        groups = {}
        n_syn = 0
        for ti, term in enumerate(layer.terms):
            sg = term.source if term.on_chip else INPUT_PREFIX + term.source
            spikes = (run.layers[term.source].spikes if term.on_chip else run.host_spikes[term.source])[:, video]
            n_src = int(np.prod(term.in_shape))
            grp = net.create_neuron_group(f"src{ti}", n_src, model_attributes={})
            flat = spikes.reshape(T, n_src).astype(bool)
            core_of = _neuron_cores(mapping, sg)
            slot = _slots(core_of)
            for j in range(n_src):
                grp[j].set_attributes(soma_hw_name=f"{input_base}[{int(slot[j])}]",
                                      model_attributes={"spikes": flat[:, j].tolist()})
            groups[ti] = (grp, core_of)
        n = layer.neurons
        dst = net.create_neuron_group("layer", n, model_attributes={
            "threshold": float(fixed.vth), "leak_decay": 1.0 - fixed.v_decay / (1 << chip.number_format.decay_bits),
            "reset": 0.0, "reset_mode": "hard"}, soma_hw_name=chip.soma_unit)
        for ti, term in enumerate(layer.terms):
            s, d, w = _connections(fixed.weights[ti], term.in_shape, layer.shape, term.stride, term.padding)
            n_syn += len(s)
            groups[ti][0].connect_neurons_sparse(dst, {"weight": w.astype(float).tolist()},
                                                 list(zip(s.tolist(), d.tolist())))
        lcores = _neuron_cores(mapping, name)
        for ti, (grp, core_of) in groups.items():
            sidx = _sanafe_core_index(mapping, core_of)
            for j in range(len(core_of)):
                grp[j].map_to_core(cores[int(sidx[j])])
        didx = _sanafe_core_index(mapping, lcores)
        for j in range(n):
            dst[j].map_to_core(cores[int(didx[j])])
        saved = None
        if out is not None and n_syn <= max_saved:
            p = out / f"{name}.yaml"
            net.save(str(p))
            saved = p.name
        bias = fixed.bias.reshape(-1).astype(np.float64)
        host = act.host_current[:, video].reshape(T, -1) if act.host_current is not None else None
        theirs = {k: [] for k in ("fired", "updated", "synaptic_events", "hops", "energy", "time_simple",
                                  "time_detailed")}
        for model in ("simple", "detailed"):
            with _quiet():
                chip_sim = sanafe.SpikingChip(arch)  # one per run: a chip's step counter is not reset by load()
                chip_sim.load(net)
            mapped = chip_sim.mapped_neuron_groups["layer"]
            for step in range(T + 1):
                frame = step - 1  # the frame the layer integrates at this step (the one whose spikes arrived)
                b = np.zeros(n) if frame < 0 else bias + (host[frame] if host is not None else 0.0)
                if step <= 1 or host is not None:
                    for j in range(n):
                        mapped[j].set_attributes(model_attributes={"bias": float(b[j])})
                with _quiet():
                    r = chip_sim.sim(1, timing_model=model, perf_trace=True)
                pt = r["perf_trace"]
                if model == "simple":
                    theirs["fired"].append(float(pt["fired"][0]))
                    theirs["updated"].append(float(pt["updated"][0]))
                    theirs["synaptic_events"].append(float(pt["spikes"][0]))
                    theirs["hops"].append(float(pt["hops"][0]))
                    theirs["energy"].append(float(pt["total_energy"][0]))
                    theirs["time_simple"].append(float(pt["sim_time"][0]))
                else:
                    theirs["time_detailed"].append(float(pt["sim_time"][0]))
        ours = _ours_per_step(mapping, name, run, video, T)
        th = {k: np.asarray(v) for k, v in theirs.items()}
        problems = _compare(ours, th)
        results.append(UnitResult(name, video, T + 1, n_syn, {k: v.tolist() for k, v in ours.items()},
                                  {k: v.tolist() for k, v in th.items()}, not problems, problems,
                                  time.perf_counter() - t0, saved))
        if progress is not None:
            progress(results[-1])
    return results


def _neuron_cores(mapping: Mapping, group: str) -> np.ndarray:
    """Global core of every neuron of ``group`` (CHW flat order)."""
    C, H, W = mapping.group_shapes[group]
    out = np.zeros((C, H, W), dtype=np.int64)
    for b in mapping.blocks[mapping.group_blocks[group].start:mapping.group_blocks[group].stop]:
        out[b.channels[0]:b.channels[1], b.rows[0]:b.rows[1], b.cols[0]:b.cols[1]] = mapping.placement.core[b.index]
    return out.reshape(-1)


def _slots(core_of: np.ndarray) -> np.ndarray:
    """Position of each neuron among the neurons of its core (which input unit of the core it uses)."""
    slot = np.zeros(len(core_of), dtype=np.int64)
    seen: dict[int, int] = {}
    for j, c in enumerate(core_of.tolist()):
        slot[j] = seen.get(c, 0)
        seen[c] = slot[j] + 1
    return slot


def _ours_per_step(mapping: Mapping, name: str, run: ChipRun, video: int, T: int) -> dict[str, np.ndarray]:
    """This package's model of the unit, per SANA-FE step (T + 1): inputs of frame j at step j, the layer's
    soma work of frame j - 1 at step j, the layer accessed at every step."""
    ev, blocks = _unit_events(mapping, name, run, video)
    chip = mapping.chip
    c = chip.costs
    lblocks = np.arange(mapping.group_blocks[name].start, mapping.group_blocks[name].stop)
    sblocks = np.array([b for b in blocks if b not in set(lblocks.tolist())], dtype=np.int64)
    S = T + 1

    def shift(x: np.ndarray, k: int) -> np.ndarray:
        out = np.zeros((S, *x.shape[1:]))
        out[k:k + T] = x
        return out

    n_layer = float(ev.neurons[lblocks].sum())
    fired_in = shift(ev.fired[:, sblocks].sum(1), 0)
    fired_l = shift(ev.fired[:, lblocks].sum(1), 1)
    upd_l = shift(ev.updated[:, lblocks].sum(1), 1)
    syn = shift(ev.synaptic_events[:, lblocks].sum(1), 0)
    hops = shift((ev.hops_east + ev.hops_west + ev.hops_north + ev.hops_south).sum(1), 0)
    msg_out = shift(ev.messages_out.sum(1), 0)
    msg_in = shift(ev.messages_in.sum(1), 0)
    e_hops = shift((ev.hops_east.sum(1) * c.hop_east[0] + ev.hops_west.sum(1) * c.hop_west[0]
                    + ev.hops_north.sum(1) * c.hop_north[0] + ev.hops_south.sum(1) * c.hop_south[0]), 0)
    energy = (n_layer * c.access_neuron[0] + upd_l * c.update_neuron[0] + fired_l * c.spike_out[0]
              + syn * (c.synapse[0] + c.dendrite[0]) + msg_out * c.message_out[0] + msg_in * c.message_in[0]
              + e_hops)
    gen, proc = core_times(ev, chip)
    # per step: layer cores do soma work of the previous frame (access at every step), source cores send this frame
    soma_lat = ev.neurons[lblocks] * c.access_neuron[1]
    gen_l = np.tile(soma_lat, (S, 1)) + shift(gen[:, lblocks] - soma_lat, 1)
    gen_s = shift(ev.messages_out[:, sblocks] * c.message_out[1], 0)
    proc_l = shift(proc[:, lblocks], 0)
    compute = np.maximum(np.concatenate([gen_l, gen_s], 1).max(1), proc_l.max(1))
    tiles = {tuple(int(v) for v in mapping.fabric.locate(int(mapping.placement.core[b]))[3:]) for b in blocks}
    sync = c.sync_latency(len(tiles))
    routing = shift(ev.max_route_latency, 0)
    return {"fired": fired_in + fired_l, "updated": fired_in + upd_l, "synaptic_events": syn, "hops": hops,
            "energy": energy, "time_simple": compute + sync, "time_detailed": compute + routing + sync}


@contextmanager
def _quiet():
    """Silence SANA-FE's own progress lines (its C++ core writes to file descriptor 1) while it runs."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(null)
        os.close(saved)


def _tmp_file() -> str:
    import tempfile

    fd, p = tempfile.mkstemp(suffix=".yaml", prefix="svformer-sanafe-arch-")
    import os

    os.close(fd)
    return p
