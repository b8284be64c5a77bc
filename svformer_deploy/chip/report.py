"""The records of a chip mapping: ``mapping.json``, ``layers.csv``, ``cores.csv``, ``timesteps.csv``, ``report.md``
and three figures (cores per layer, energy per timestep by event kind, time per timestep with its critical core).

Every figure states where it comes from: the chip file's sources and caveats, the counting rules
(:mod:`~svformer_deploy.chip.events`), the cost and timing model (:mod:`~svformer_deploy.chip.cost`), and whether the
counts come from real spikes (N validation videos) or from stated firing rates.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from svformer_deploy._outputs import Output
from svformer_deploy.chip.cost import ENERGY_KINDS
from svformer_deploy.chip.mapping import Mapping
from svformer_deploy.chip.service import ChipFigures

__all__ = [
    "MAPPING_FILES",
    "PRECISION_RULE",
    "chip_markdown",
    "core_rows",
    "figures_summary",
    "layer_rows",
    "mapping_summary",
    "precision_summary",
    "timestep_rows",
    "write_mapping",
]

MAPPING_FILES = ("mapping.json", "layers.csv", "cores.csv", "report.md")

MAPPING_OUTPUT = Output("chip-mapping", "a chip mapping (svformer-deploy map)", "map", files=MAPPING_FILES,
                        later=("sanafe*",))
"""What ``map`` writes: a whole folder; ``verify --with sanafe`` adds ``sanafe_verification.json`` and ``sanafe/``."""


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def _r(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}") if np.isfinite(x) else float(x)


def layer_rows(m: Mapping, fig: ChipFigures | None = None) -> list[dict[str, Any]]:
    rows = []
    core = m.placement.core
    chip_of = m.fabric.locate(core)[0]
    for g in m.groups:
        split = m.splits[g]
        blocks = m.group_blocks[g]
        chips = sorted(set(chip_of[blocks.start:blocks.stop].tolist()))
        row: dict[str, Any] = {"layer": g, "shape": "x".join(map(str, m.group_shapes[g])),
                               "neurons": int(np.prod(m.group_shapes[g]))}
        if g in m.fixed:
            fx, geoms = m.fixed[g], m.geometry[g]
            layer = m.network.layer(g)
            fan_out = max((int(gm.fan_out().max(initial=0)) for gm in geoms), default=0)
            row.update({"kind": "chip layer", "synapses": sum(gm.synapses() for gm in geoms),
                        "distinct_weights": fx.distinct_weights,
                        "fan_in_max": int(sum(gm.fan_in() for gm in geoms).max(initial=0)) if geoms else 0,
                        "fan_out_max_per_source": fan_out, "weight_bits": fx.weight_bits_used,
                        "weight_exponent": fx.exponent, "bias_bits": m.chip.number_format.bias_bits,
                        "state_bits": m.chip.number_format.state_bits, "v_decay": fx.v_decay, "threshold": fx.vth,
                        "kernel_weights": layer.kernel_weights,
                        "kernel_weights_rounded_to_0": fx.zeroed_weights,
                        "spike_terms": "; ".join(f"{t.source} k{t.kernel}s{t.stride}" for t in layer.terms),
                        "host_terms": "; ".join(h.source for h in layer.host_terms)})
        else:
            row.update({"kind": "input (host spikes)", "synapses": 0, "distinct_weights": 0, "fan_in_max": 0,
                        "fan_out_max_per_source": 0, "weight_bits": 0, "weight_exponent": "", "bias_bits": "",
                        "state_bits": "", "v_decay": "", "threshold": "", "kernel_weights": 0,
                        "kernel_weights_rounded_to_0": 0, "spike_terms": "",
                        "host_terms": ""})
        row.update({"block": "x".join(map(str, split.size)), "cores": split.blocks,
                    **{f"cores_by_{k}": ("" if v is None else v) for k, v in split.cores_by_limit.items()},
                    "binding_limit": split.binding, "chip_ids": " ".join(map(str, chips)),
                    "first_core": int(core[blocks.start]), "depth": m.depth.get(g, 0)})
        if fig is not None:
            sl = slice(blocks.start, blocks.stop)
            row["firing_rate"] = _r(fig.layer_rates.get(g, float("nan")))
            row["synaptic_events_per_video"] = _r(float(fig.events.synaptic_events[:, sl].sum()))
            row["messages_out_per_video"] = _r(float(fig.events.messages_out[:, sl].sum()))
            row["clipped_host_currents"] = fig.clipped_host_currents.get(g, 0)
        rows.append(row)
    return rows


def core_rows(m: Mapping, fig: ChipFigures | None = None) -> list[dict[str, Any]]:
    chip, tile, sub, X, Y = m.fabric.locate(m.placement.core)
    rows = []
    for b in m.blocks:
        i = b.index
        row = {"core_id": int(m.placement.core[i]), "block": i, "layer": b.layer,
               "channels": f"{b.channels[0]}-{b.channels[1]}",
               "rows": f"{b.rows[0]}-{b.rows[1]}", "cols": f"{b.cols[0]}-{b.cols[1]}", "neurons": b.neurons,
               "chip": int(chip[i]), "tile": int(tile[i]), "core": int(sub[i]), "x": int(X[i]), "y": int(Y[i])}
        if fig is not None:
            ev = fig.events
            row.update({"synaptic_events_per_video": _r(float(ev.synaptic_events[:, i].sum())),
                        "spikes_per_video": _r(float(ev.fired[:, i].sum())),
                        "messages_in_per_video": _r(float(ev.messages_in[:, i].sum())),
                        "messages_out_per_video": _r(float(ev.messages_out[:, i].sum()))})
        rows.append(row)
    return rows


def timestep_rows(m: Mapping, fig: ChipFigures) -> list[dict[str, Any]]:
    sc = fig.steps
    ev = fig.events
    rows = []
    for t in range(len(sc.time)):
        crit = int(sc.critical_block[t])
        row: dict[str, Any] = {"timestep": t}
        if m.chip.energy_published:  # no published figures: no energy or time columns (not zeros)
            row.update({f"{k}_uJ": _r(float(sc.energy[k][t]) * 1e6) for k in ENERGY_KINDS})
            row["chip_energy_uJ"] = _r(float(sc.total_energy[t]) * 1e6)
            row.update({"time_us": _r(float(sc.time[t]) * 1e6), "compute_us": _r(float(sc.compute[t]) * 1e6),
                        "routing_us": _r(float(sc.routing[t]) * 1e6), "sync_us": _r(sc.sync * 1e6),
                        "critical_core_id": int(m.placement.core[crit]), "critical_layer": m.blocks[crit].layer,
                        "critical_side": sc.critical_part[t]})
        row.update({"synaptic_events": _r(float(ev.synaptic_events[t].sum())),
                    "spikes": _r(float(ev.fired[t].sum())), "messages": _r(float(ev.messages_in[t].sum())),
                    "inter_chip_hops": _r(float(ev.inter_chip_hops[t].sum()))})
        for k, v in fig.traffic.items():
            row[k] = _r(float(v[t]))
        rows.append(row)
    return rows


def _inter_chip_links(m: Mapping) -> int:
    src, dst, _ = m.edges
    if not len(src):
        return 0
    ca = m.fabric.locate(m.placement.core[src])[0]
    cb = m.fabric.locate(m.placement.core[dst])[0]
    pairs = {(int(a), int(b)) for a, b in zip(ca, cb) if a != b}
    return len({tuple(sorted(p)) for p in pairs})


PRECISION_RULE = ("a weight rounds to 0 when it is non-zero in float and round(k W / V_th 2^e) = 0 at its layer's "
                  "exponent e (chip/quantize.py); share = such weights / the non-zero float weights of the layer's "
                  "spike terms")


def precision_summary(m: Mapping, worst: int = 3) -> dict[str, Any]:
    """The weights the chip's number format rounds to 0 (:data:`PRECISION_RULE`): all chip layers together and the
    ``worst`` layers with the largest share. A statement, not a limit: whether it matters is the measured
    agreement of the chip model with the float model (:func:`figures_summary`)."""
    rows = []
    for layer in m.network.layers:
        nonzero = layer.kernel_weights
        if nonzero:
            fx = m.fixed[layer.name]
            rows.append({"layer": layer.name, "share": _r(fx.zeroed_weights / nonzero), "weights": nonzero,
                         "rounded_to_0": fx.zeroed_weights, "exponent": fx.exponent})
    total = sum(r["weights"] for r in rows)
    zeroed = sum(r["rounded_to_0"] for r in rows)
    rows.sort(key=lambda r: (-r["share"], r["layer"]))
    return {"rule": PRECISION_RULE, "weight_bits": m.chip.number_format.weight_bits, "weights": total,
            "rounded_to_0": zeroed, "share": _r(zeroed / total) if total else 0.0, "layers_most_rounded": rows[:worst]}


def mapping_summary(m: Mapping) -> dict[str, Any]:
    chip = m.chip
    geoms = [g for gs in m.geometry.values() for g in gs]
    return {
        "chip": {"name": chip.name, "title": chip.title, "file": chip.path, "cores_per_chip": chip.cores,
                 "mesh": [chip.mesh_width, chip.mesh_height], "cores_per_tile": chip.cores_per_tile,
                 "limits_checked": chip.checked_limits(),
                 "limits_not_stated": [k for k in ("neurons per core", "input axons per core",
                                                   "output axons per core", "synaptic memory per core")
                                       if k not in chip.checked_limits()],
                 "number_format": {k: getattr(chip.number_format, k) for k in (
                     "weight_bits", "weight_exponent_max", "bias_bits", "bias_exponent_max", "threshold_bits",
                     "state_bits", "decay_bits", "stated")},
                 "energy_published": chip.energy_published, "pre_silicon": chip.pre_silicon,
                 "sources": chip.sources, "caveats": list(chip.caveats)},
        "totals": {"chip_layers": len(m.network.layers), "input_groups": len(m.groups) - len(m.network.layers),
                   "neurons": int(sum(np.prod(m.group_shapes[g]) for g in m.groups)),
                   "chip_neurons": int(sum(layer.neurons for layer in m.network.layers)),
                   "input_neurons": int(sum(np.prod(m.group_shapes[g]) for g in m.groups if g not in m.fixed)),
                   "synapses": int(sum(g.synapses() for g in geoms)), "cores": m.cores_used,
                   "chips": m.fabric.chips, "chip_grid": [m.fabric.chips_x, m.fabric.chips_y],
                   "inter_chip_links": _inter_chip_links(m), "pipeline_depth": max(m.depth.values(), default=0)},
        "host": {"host_ops": list(m.host.host_ops), "host_neurons": list(m.host.host_neurons),
                 "host_synapses": list(m.host.host_synapses),
                 "currents_written": [f"{a} <- {b}" for a, b in m.host.current_terms],
                 "chip_spikes_read": list(m.host.chip_spikes_read),
                 "moved_by_host_fallback": [f"{a} <- {b} ({why})" for a, b, why in m.host.moved_terms]},
        "precision": precision_summary(m),
        "placement": {"method": m.placement.method, "objective": "expected mesh hops per timestep, every neuron "
                      "firing once (sum over block pairs of connected neurons x hops)",
                      "hops_if_every_neuron_fires_once": {k: _r(v, 6) for k, v in m.placement.costs.items()}},
    }


def figures_summary(m: Mapping, fig: ChipFigures) -> dict[str, Any]:
    """The per-video figures (``None`` for every time, energy and power under a chip without published costs)."""
    pub = m.chip.energy_published
    v = fig.video
    mean = {"energy_j": v.energy_j, "time_per_step_s": v.time_per_step_s, "latency_s": v.latency_s,
            "throughput_videos_per_s": v.throughput_videos_per_s, "power_w": v.power_w,
            "real_time_factor": v.real_time_factor,
            "max_time_per_step_s": max(p.max_time_per_step_s for p in fig.per_video)}
    by_kind = {k: _r(float(fig.steps.energy[k].sum()) * 1e3, 6) for k in ENERGY_KINDS}
    ev = fig.events
    out: dict[str, Any] = {
        "source": ("real spikes of %d validation video(s)" % fig.videos) if fig.source == "spikes"
        else "expected counts from stated per-layer firing rates (every neuron counted as updated)",
        "videos": fig.videos, "timesteps": ev.timesteps, "fps": fig.per_video[0].fps,
        "accuracy_of_the_chip_model": fig.accuracy,
        "accuracy_of_the_float_model": fig.reference_accuracy,
        "prediction_agreement_with_the_float_model": fig.prediction_agreement,
        "how": "every figure per video is the mean over the videos; time, power, throughput and the real-time "
               "factor are formulas of the per-timestep means in timesteps.csv (docs/chip.md)",
        "counts_per_video": {"synaptic_events": _r(float(ev.synaptic_events.sum()), 6),
                             "neuron_updates": _r(float((ev.updated * ~ev.is_input).sum()), 6),
                             "spikes": _r(float(ev.fired.sum()), 6), "messages": _r(float(ev.messages_in.sum()), 6),
                             "mesh_hops": _r(float((ev.hops_east + ev.hops_west + ev.hops_north
                                                    + ev.hops_south).sum()), 6),
                             "inter_chip_hops": _r(float(ev.inter_chip_hops.sum()), 6)},
        "host_to_chip_per_timestep": {k: _r(float(np.mean(v))) for k, v in fig.traffic.items()},
        "host_work_per_video": {k: _r(x, 6) for k, x in fig.host_counts.items()},
        "clipped_host_currents": {k: n for k, n in fig.clipped_host_currents.items() if n},
    }
    if pub:
        chip_mj = mean["energy_j"] * 1e3
        host_mj = fig.host_energy_j * 1e3
        out.update({
            "energy_per_video_mJ": {"chip": _r(chip_mj), "host": _r(host_mj), "host_profile": fig.host_profile,
                                    "total": _r(chip_mj + host_mj)},
            "chip_energy_by_kind_mJ": by_kind,
            "energy_per_video_range_mJ": [_r(min(p.energy_j for p in fig.per_video) * 1e3),
                                          _r(max(p.energy_j for p in fig.per_video) * 1e3)],
            "time_per_timestep_us": {"mean": _r(mean["time_per_step_s"] * 1e6),
                                     "max_over_videos_and_steps": _r(mean["max_time_per_step_s"] * 1e6),
                                     "sync": _r(fig.steps.sync * 1e6)},
            "latency_per_video_ms": _r(mean["latency_s"] * 1e3),
            "videos_per_second": _r(mean["throughput_videos_per_s"]),
            "average_power_mW": _r(mean["power_w"] * 1e3),
            "real_time_factor": _r(mean["real_time_factor"]),
            "keeps_up_with_video": bool(mean["real_time_factor"] >= 1.0)})
    else:
        out["energy_per_video_mJ"] = None
        out["not_printed"] = (f"{m.chip.title or m.chip.name} has no per-event energy or latency with a public "
                              "source: time, energy and power are not given")
    return out


def chip_markdown(m: Mapping, summary: dict[str, Any], figs: dict[str, Any] | None, heading: str = "#") -> str:
    s, t = summary, summary["totals"]
    lines = [f"{heading} Chip mapping: {s['chip']['title'] or s['chip']['name']}", "",
             f"- **{t['cores']:,} cores on {t['chips']:,} chip(s)** ({s['chip']['cores_per_chip']} cores each, grid "
             f"{t['chip_grid'][0]} x {t['chip_grid'][1]}), {t['inter_chip_links']:,} inter-chip links; "
             f"{t['chip_layers']} chip layers of {t['chip_neurons']:,} neurons"
             + (f" and {t['input_groups']} input groups of {t['input_neurons']:,} neurons relaying the host's spikes"
                if t['input_groups'] else "")
             + f", {t['synapses']:,} synapses; pipeline depth {t['pipeline_depth']} timesteps.",
             f"- Limits checked: {', '.join(s['chip']['limits_checked']) or 'none'} (and, on every chip, the neuron "
             "model and the number format's weight, bias, threshold and decay ranges)"
             + (f"; not stated by the chip file, not checked: {', '.join(s['chip']['limits_not_stated'])}"
                if s['chip']['limits_not_stated'] else "") + ".",
             f"- Placement: {s['placement']['method']}; hops if every neuron fires once: "
             + ", ".join(f"{k} {_fmt(v)}" for k, v in s['placement']['hops_if_every_neuron_fires_once'].items())
             + ".",
             f"- On the host: {', '.join(s['host']['host_ops']) or 'nothing'}"
             + (f"; host neurons ({len(s['host']['host_neurons'])}): {', '.join(s['host']['host_neurons'])}"
                if s['host']['host_neurons'] else "")
             + (f"; currents it writes: {len(s['host']['currents_written'])} ("
                + "; ".join(s['host']['currents_written'][:6])
                + ("; ..." if len(s['host']['currents_written']) > 6 else "") + ")"
                if s['host']['currents_written'] else "")
             + (f"; chip spikes it reads: {', '.join(s['host']['chip_spikes_read'])}"
                if s['host']['chip_spikes_read'] else "") + "."]
    p = s["precision"]
    if p["weights"]:
        lines.append(f"- Precision ({p['weight_bits']}-bit weights, one exponent per layer): {p['share']:.1%} of the "
                     f"{p['weights']:,} non-zero weights round to 0; most in "
                     + ", ".join(f"{r['layer']} ({r['share']:.0%}, exponent {r['exponent']})"
                                 for r in p["layers_most_rounded"])
                     + " (every layer: layers.csv). What it costs is measured below: "
                     + ("the chip model's predictions against the float model's on the same videos."
                        if figs is not None and figs.get("prediction_agreement_with_the_float_model") is not None
                        else "not measured here: map with --videos N (N > 0) to run the chip model and the float "
                        "model on the same videos."))
    if s["host"]["moved_by_host_fallback"]:
        lines.append(f"- Moved to the host by --host-fallback: {'; '.join(s['host']['moved_by_host_fallback'])}. "
                     "**Not comparable with a mapping that holds them on the chip**: their work is priced at the "
                     "host profile's figures and the host <-> chip link is not modelled, so a chip with tighter "
                     "limits can look cheaper.")
    if not s["chip"]["number_format"]["stated"]:
        lines.append("- The chip file states no number format: Loihi's is assumed (8-bit weights, 13-bit biases "
                     "with a 3-bit exponent, 17-bit threshold, 24-bit state, 12-bit decays).")
    if not s["chip"]["limits_checked"] or s["chip"]["limits_checked"] == ["neurons per core"]:
        lines.append("- Only the neurons-per-core limit is checked for this chip: the core counts assume every "
                     "other resource fits.")
    if figs is not None:
        lines += ["", (f"Figures from {figs['source']}{_accuracy_text(figs)}; T = {figs['timesteps']} timesteps "
                       "per video; per video = the mean over the videos:"), ""]
        c = figs["counts_per_video"]
        lines.append(f"- per video: {_fmt(c['synaptic_events'])} synaptic events, {_fmt(c['neuron_updates'])} neuron "
                     f"updates, {_fmt(c['spikes'])} spikes, {_fmt(c['messages'])} messages, {_fmt(c['mesh_hops'])} "
                     f"mesh hops ({_fmt(c['inter_chip_hops'])} of them crossing chips: priced as mesh hops; the "
                     "extra cost of a chip-to-chip link is not modelled).")
        if figs.get("clipped_host_currents"):
            lines.append(f"- host currents clipped to the bias range: {figs['clipped_host_currents']}.")
        if figs.get("energy_per_video_mJ"):
            e = figs["energy_per_video_mJ"]
            host = (f"; host {e['host']:.4g} mJ ({e['host_profile']}); total {e['total']:.4g} mJ"
                    if e.get("host") is not None else "; host not priced (rates only)")
            tt = figs["time_per_timestep_us"]
            lines += [f"- **energy per video: chip {e['chip']:.4g} mJ**{host}.",
                      f"- **time per timestep {tt['mean']:.4g} us** (max {tt['max_over_videos_and_steps']:.4g}, sync "
                      f"{tt['sync']:.4g}); latency per video {figs['latency_per_video_ms']:.4g} ms; "
                      f"{figs['videos_per_second']:.4g} videos/s; **average power {_power(figs['average_power_mW'])}**; "
                      "real-time factor "
                      f"{figs['real_time_factor']:.4g} at {figs['fps']:g} fps ("
                      + ("keeps up" if figs["keeps_up_with_video"] else "does NOT keep up") + ").",
                      "- chip energy by kind (mJ per video): "
                      + ", ".join(f"{k} {v:.4g}" for k, v in figs["chip_energy_by_kind_mJ"].items()) + "."]
        else:
            lines.append(f"- {figs['not_printed']}.")
    lines += ["", "Sources: " + ("; ".join(f"[{k}] {v}" for k, v in s["chip"]["sources"].items())
                                 or "none stated by the chip file") + "."]
    lines += [f"- CAVEAT: {c}" for c in s["chip"]["caveats"]]
    lines += ["- Storage: every synapse is stored with its weight (no weight sharing between neurons): core counts "
              "are those of a chip without convolution weight sharing.", "",
              f"{heading}# Counting rules", "", _doc_body("svformer_deploy.chip.events"), "",
              f"{heading}# Cost and timing model", "", _doc_body("svformer_deploy.chip.cost")]
    return "\n".join(lines) + "\n"


def _accuracy_text(figs: dict[str, Any]) -> str:
    """`` (top-1 ...)`` of the figures: the chip model's, and the float model's with their agreement when known."""
    acc = figs.get("accuracy_of_the_chip_model")
    if acc is None:
        return ""
    ref, agree = figs.get("accuracy_of_the_float_model"), figs.get("prediction_agreement_with_the_float_model")
    if ref is None or agree is None:
        return f" (top-1 of the integer chip model against the labels: {acc:.1%})"
    return (f" (top-1 against the labels: integer chip model {acc:.1%}, the checkpoint's float model {ref:.1%}; "
            f"the two predict the same class on {agree:.1%} of the videos)")


def _fmt(x: float) -> str:
    """4 significant figures with thousands separators (12,430,000,000), never more digits than are meant."""
    return f"{float(f'{x:.4g}'):,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _power(mw: float) -> str:
    return f"{mw / 1e3:.4g} W" if mw >= 1e3 else f"{mw:.4g} mW"


def _doc_body(module: str) -> str:
    """A module docstring without its title line: the rules it states, as written in the code."""
    import importlib

    doc = (importlib.import_module(module).__doc__ or "").strip()
    return doc.split("\n\n", 1)[1].strip() if "\n\n" in doc else doc


def _plots(out: Path, m: Mapping, fig: ChipFigures | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    names = m.groups
    cores = [m.splits[g].blocks for g in names]
    f, ax = plt.subplots(figsize=(8, max(3, 0.22 * len(names))))
    colors = {"neurons": "C0", "axons_in": "C1", "memory": "C2", "axons_out": "C3", "combined": "C4"}
    ax.barh(range(len(names)), cores, color=[colors.get(m.splits[g].binding, "C5") for g in names])
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xscale("log")
    from matplotlib.patches import Patch
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("cores (log scale)")
    ax.set_title(f"Cores per layer on {m.chip.name} (colour: the binding limit)")
    used = {m.splits[g].binding for g in names}
    ax.legend(handles=[Patch(color=c, label=k) for k, c in colors.items() if k in used], fontsize=6)
    f.tight_layout()
    f.savefig(out / "cores_per_layer.png", dpi=120)
    plt.close(f)
    files.append("cores_per_layer.png")
    if fig is not None and m.chip.energy_published:
        sc = fig.steps
        T = len(sc.time)
        f, ax = plt.subplots(figsize=(7, 3.5))
        bottom = np.zeros(T)
        for k in ENERGY_KINDS:
            v = sc.energy[k] * 1e6
            if v.any():
                ax.bar(range(T), v, bottom=bottom, label=k)
                bottom += v
        ax.set_xlabel("timestep")
        ax.set_ylabel("energy (uJ)")
        ax.set_title("Chip energy per timestep, by event kind")
        ax.legend(fontsize=6)
        f.tight_layout()
        f.savefig(out / "energy_per_timestep.png", dpi=120)
        plt.close(f)
        f, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar(range(T), sc.compute * 1e6, label="critical core")
        ax.bar(range(T), sc.routing * 1e6, bottom=sc.compute * 1e6, label="routing")
        ax.bar(range(T), np.full(T, sc.sync * 1e6), bottom=(sc.compute + sc.routing) * 1e6, label="sync")
        for t in range(T):
            ax.text(t, float(sc.compute[t]) * 1e6 / 2, m.blocks[int(sc.critical_block[t])].layer, rotation=90,
                    fontsize=5, ha="center", va="center", color="white")
        ax.set_ylim(0, float(sc.time.max()) * 1e6 * 1.25)
        ax.set_xlabel("timestep")
        ax.set_ylabel("time (us)")
        ax.set_title("Time per timestep (in each bar: the critical core's layer)")
        ax.legend(fontsize=6)
        f.tight_layout()
        f.savefig(out / "latency_per_timestep.png", dpi=120)
        plt.close(f)
        files += ["energy_per_timestep.png", "latency_per_timestep.png"]
    return files


def write_mapping(out: Path, m: Mapping, fig: ChipFigures | None, provenance: dict[str, Any]) -> dict[str, Any]:
    """Write every record of the mapping into the (temporary, atomically renamed) folder ``out``."""
    from svformer_deploy._atomic import json_text

    summary = mapping_summary(m)
    for a in provenance.get("approximations") or []:  # the bundle's own approximations travel with its mapping
        summary["chip"]["caveats"].append(f"the bundle is approximate: {a}")
    figs = figures_summary(m, fig) if fig is not None else None
    doc = {"provenance": provenance, **summary, "figures": figs}
    (out / "layers.csv").write_text(_csv(layer_rows(m, fig)), encoding="utf-8")
    (out / "cores.csv").write_text(_csv(core_rows(m, fig)), encoding="utf-8")
    if fig is not None:
        (out / "timesteps.csv").write_text(_csv(timestep_rows(m, fig)), encoding="utf-8")
    doc["plots"] = _plots(out, m, fig)
    (out / "report.md").write_text(chip_markdown(m, summary, figs), encoding="utf-8")
    (out / "mapping.json").write_text(json_text(doc) + "\n", encoding="utf-8")
    return doc
