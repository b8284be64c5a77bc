"""``svformer-deploy energy report``: count real videos, price them with the memory model in the headline, set
like-for-like ANN baselines and every convention beside them, and write a self-contained report.

Outputs (written into a temporary directory that is renamed to ``out`` only when everything succeeded):

* ``per_layer.csv``: layer, timestep, op_class, count, energy_pj, summed over all videos and all their views;
* ``per_video.csv``: one row per video (all views included): counts per op class, compute, memory (both
  dataflows), compute + memory, each convention's compute, the mean firing rate;
* ``spiking.csv``: per synaptic layer with spike input, its input firing rate (mean over videos);
* ``summary.json``: every figure of ``report.md``, with protocol, profile constants and sources;
* ``report.md``: headline (compute + memory, compute alone beside), like-for-like comparison with accuracy,
  memory model, conventions side by side, spiking metrics, uncounted ops, the rules used, caveats;
* ``energy_per_layer.png``, ``energy_per_timestep.png``, ``snn_vs_baselines.png``.

CSV and JSON contain no timestamps or timings: identical inputs give byte-identical files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from svformer_deploy._atomic import atomic_write_dir, json_text, refuse_existing
from svformer_deploy.energy.conventions import (
    CONVENTIONS,
    REFERENCE_SCRIPT_BUG,
    dense_model_counts,
    layer_table,
    measure_rates,
    price_conventions,
)
from svformer_deploy.energy.counter import count_ops
from svformer_deploy.energy.energy import EnergyReport, energy_of
from svformer_deploy.energy.memory import RULES as MEMORY_RULES
from svformer_deploy.energy.memory import TIERS_SOURCE
from svformer_deploy.energy.profiles import get_profile, quantised_profile
from svformer_deploy.energy.rules import OP_CLASSES, rules_markdown
from svformer_deploy.errors import EnergyError

__all__ = ["ReportOptions", "write_report", "CAVEATS", "CLASS_STYLE"]

CAVEATS = [
    "Op-count energy ignores much of data movement, which often dominates: Dampfhoffer et al., 'Are SNNs really "
    "more energy-efficient than ANNs? An in-depth hardware-aware study', IEEE TETCI 2023. The memory model here "
    "is a first-order estimate (no addressing, routing, control or static power).",
    "Lemaire et al., 'An analytical estimation of spiking neural networks energy efficiency', ICONIP 2022: "
    "addressing and memory accesses must be modelled; the fetch-per-event dataflow follows their model.",
    "Yan et al., arXiv 2409.08290 (2024): compare against an ANN quantised to ceil(log2(T+1)) bits; an SNN must "
    "fire below about 6 % to win under such a comparison.",
    "The 4.6 / 0.9 pJ figures are 45 nm fp32 arithmetic (Horowitz, ISSCC 2014); they are not measurements of "
    "any neuromorphic chip.",
]
ANN_TWIN = "svformer-ann"

#: One colour and one hatch per op class, used by every plot.
CLASS_STYLE: dict[str, tuple[str, str]] = {
    c: (col, hatch) for c, col, hatch in zip(
        OP_CLASSES,
        ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896"),
        ("", "//", "..", "xx", "\\\\", "oo", "--", "++", "**", "||", "/.", "x.", "-.", "o-"))}


@dataclass(frozen=True)
class ReportOptions:
    checkpoint: Path
    data: str = "moving-digits"
    videos: int = 4
    clips: int = 1
    crops: int = 1
    profile: str = "45nm-fp32"
    baselines: tuple[str, ...] = (ANN_TWIN, "r3d_18", "r2plus1d_18", "mc3_18", "s3d", "mvit_v2_s", "swin3d_t")
    fold_bn: bool = False
    accuracy: Path | None = None
    out: Path = Path("energy_report")
    force: bool = False


def _check(opts: ReportOptions) -> None:
    from svformer_deploy._paths import require_file
    from svformer_deploy.energy.baselines import list_baselines
    from svformer_deploy.errors import CheckpointNotFoundError, DataError

    for b in opts.baselines:
        if b not in list_baselines():
            raise EnergyError(f"unknown baseline {b!r}; choose from {list_baselines()}")
    if opts.data != "moving-digits" and not Path(opts.data).is_dir():
        problem = "is a file, not a folder" if Path(opts.data).exists() else "does not exist"
        raise DataError(f"data folder {opts.data} {problem}; pass --data moving-digits or a UCF101/HMDB51 folder")
    require_file(opts.checkpoint, "checkpoint", "pass the path of a .pt file", CheckpointNotFoundError)
    if opts.videos < 1 or opts.clips < 1 or opts.crops < 1:
        raise EnergyError("--videos, --clips and --crops must be >= 1")
    if opts.accuracy is not None:
        require_file(opts.accuracy, "accuracy file", "pass the eval.json written by svformer-deploy evaluate",
                     EnergyError)
    refuse_existing(opts.out, opts.force, inputs=(opts.checkpoint,), folder=True)
    get_profile(opts.profile)  # unknown profile -> ProfileError before any work


def _accuracy(opts: ReportOptions, meta: dict) -> dict[str, Any] | None:
    """Accuracy and the views it was measured with: an ``evaluate`` JSON, else the checkpoint's validation."""
    if opts.accuracy is not None:
        try:
            d = json.loads(Path(opts.accuracy).read_text(encoding="utf-8"))
            return {"top1": float(d["top1"]), "clips": int(d["clips"]), "crops": int(d["crops"]),
                    "views": int(d["clips"]) * int(d["crops"]), "videos": d.get("num_videos"),
                    "source": f"{Path(opts.accuracy).name} (svformer-deploy evaluate)"}
        except (ValueError, KeyError, TypeError) as err:
            raise EnergyError(f"accuracy file {opts.accuracy} is not an evaluate JSON (needs top1, clips, crops): "
                              f"{err}") from err
    top1 = (meta.get("metrics") or {}).get("val_top1")
    if top1 is None:
        return None
    return {"top1": float(top1), "clips": 1, "crops": 1, "views": 1, "videos": None,
            "source": "checkpoint metadata (training validation: one clip x one crop per video)"}


def _twin(model: Any) -> Any:
    """The ANN twin carrying the SNN's weights: same architecture, every PLIF replaced by ReLU."""
    from svformer_deploy.models import create_model

    twin = create_model(model.config.replace(neuron="relu")).eval()
    state = {k: v for k, v in model.state_dict().items() if k in twin.state_dict()}
    twin.load_state_dict(state, strict=False)
    return twin


def _mj(pj: float) -> float:
    return pj * 1e-9


def _price(rep: EnergyReport) -> dict[str, float]:
    return {"compute_mj": _mj(rep.compute_pj), "memory_mj": _mj(rep.memory_pj),
            "memory_fetch_per_event_mj": _mj(rep.memory_per_event.total_pj), "total_mj": _mj(rep.total_pj)}


def write_report(opts: ReportOptions, progress: bool = True) -> Path:
    """Run the whole report (see the module docstring) and return the output directory."""
    _check(opts)
    from rich.progress import Progress

    from svformer_deploy.data import iter_eval_videos
    from svformer_deploy.models import load_checkpoint

    profile = get_profile(opts.profile)
    model, meta = load_checkpoint(opts.checkpoint)
    cfg = model.config
    accuracy = _accuracy(opts, meta)
    samples = iter_eval_videos(opts.data, cfg, num_videos=opts.videos, clips=opts.clips, crops=opts.crops)
    dense1, tokens = dense_model_counts(cfg)  # one clip, shapes only
    twin = _twin(model) if ANN_TWIN in opts.baselines else None
    ann_profile = profile if profile.prices_ann else get_profile("45nm-fp32")

    layer_parts, video_rows, rate_rows = [], [], []
    uncounted: dict[str, dict[str, int]] = {}
    rules_used: dict[str, None] = {}
    conv_tot: dict[str, dict[str, Any]] = {}
    sparse_parts: list[dict[str, float]] = []
    mem_parts: dict[str, float] = {}
    mem_where: dict[str, Any] = {}
    views, n_videos = opts.clips * opts.crops, 0
    neurons = dense1.memory.set_index("layer")["binary_out_values"]
    neurons = neurons[neurons > 0]
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("counting operations", total=opts.videos)
        for sample in samples:
            v = int(sample.views.shape[0])
            counts = count_ops(model, sample.views, fold_bn=opts.fold_bn)
            rep = energy_of(counts, profile)
            rules_used.update(dict.fromkeys(counts.rules_used))
            for k, x in rep.memory.pj.items():
                mem_parts[k] = mem_parts.get(k, 0.0) + x
            mem_where = {"tiers": rep.memory.tiers, "footprint_bytes": rep.memory.footprint_bytes}
            layer_parts.append(rep.df)
            for k, u in counts.uncounted.items():
                acc = uncounted.setdefault(k, {"calls": 0, "elements": 0})
                acc["calls"] += u["calls"]
                acc["elements"] += u["elements"]
            rates = measure_rates(model, sample.views)
            conv = price_conventions(layer_table(dense1, rates, tokens), dense1, profile)
            for name, c in conv.items():
                t = conv_tot.setdefault(name, {"mac": 0.0, "ac": 0.0, "compute_pj": 0.0, "mac_layers": {}})
                for k in ("mac", "ac", "compute_pj"):
                    t[k] += c[k] * v
                t["mac_layers"].update(dict.fromkeys(c["mac_layers"]))
            spiking = _spiking(counts, rep, rates, neurons, v)
            rate_rows += [{"video_id": sample.video_id, "layer": k, "rate": r} for k, r in rates.items()
                          if k not in neurons.index]
            tot = counts.totals()
            row = {"video_id": sample.video_id, "label": int(sample.label), "views": v}
            row.update({c: tot[c] for c in OP_CLASSES})
            row.update({"compute_pj": rep.compute_pj, "memory_pj": rep.memory_pj,
                        "memory_fetch_per_event_pj": rep.memory_per_event.total_pj, "total_pj": rep.total_pj})
            row.update({f"{name}_compute_pj": c["compute_pj"] * v for name, c in conv.items()})
            row.update(spiking)
            video_rows.append(row)
            if twin is not None:
                s = energy_of(count_ops(twin, sample.views, fold_bn=opts.fold_bn, skip_zero_macs=True), ann_profile)
                sparse_parts.append({k: x / v for k, x in _price(s).items()})
            n_videos += 1
            bar.advance(task)
    if n_videos == 0:
        raise EnergyError(f"no videos found in {opts.data!r}; check --data")

    per_layer = pd.concat(layer_parts).groupby(["layer", "timestep", "op_class"], sort=False, as_index=False).sum()
    per_video = pd.DataFrame(video_rows)
    rates_df = pd.DataFrame(rate_rows, columns=["video_id", "layer", "rate"])
    spiking_csv = rates_df.groupby("layer", sort=False, as_index=False)["rate"].mean()
    baselines = _baselines(opts.baselines, cfg, ann_profile, sparse_parts, opts.fold_bn)
    summary = _summary(opts, meta, cfg, profile, per_layer, per_video, n_videos, views, uncounted, baselines,
                       conv_tot, accuracy, spiking_csv, sorted(rules_used), ann_profile)
    summary["memory"].update({"parts_mj_per_video": {k: _mj(x / n_videos) for k, x in mem_parts.items()},
                              **mem_where})

    def build(tmp: Path) -> None:
        per_layer.to_csv(tmp / "per_layer.csv", index=False, float_format="%.6f", lineterminator="\n")
        per_video.to_csv(tmp / "per_video.csv", index=False, float_format="%.6f", lineterminator="\n")
        spiking_csv.to_csv(tmp / "spiking.csv", index=False, float_format="%.6f", lineterminator="\n")
        (tmp / "summary.json").write_text(json_text(summary, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(_markdown(summary, per_layer), encoding="utf-8")
        _plots(tmp, per_layer, summary)

    return atomic_write_dir(opts.out, build, force=opts.force)


def _spiking(counts: Any, rep: EnergyReport, rates: dict[str, float], neurons: pd.Series, views: int
             ) -> dict[str, float]:
    """Spiking metrics of one video (see :func:`_summary` for the definitions)."""
    r = pd.Series({k: rates[k] for k in neurons.index if k in rates}, dtype="float64")
    n = neurons.reindex(r.index).astype("float64")
    mean_rate = float((r * n).sum() / n.sum()) if n.sum() else float("nan")
    mem = counts.memory.set_index("layer")
    spike_in = mem[(mem["binary_act_values"] > 0) & (mem["weight_values"] > 0)]
    syn = float(spike_in["weight_values"].sum())
    per_syn = float(spike_in["weight_uses"].sum()) / views / syn if syn else float("nan")
    real_in = set(counts.df.loc[counts.df["op_class"] == "mac", "layer"])
    e = rep.df.groupby("layer")["energy_pj"].sum()
    share = float(e[e.index.isin(real_in)].sum() / e.sum()) if e.sum() else float("nan")
    return {"mean_rate": mean_rate, "events_per_synapse": per_syn, "non_spike_input_share": share}


def _baselines(names: tuple[str, ...], cfg: Any, profile: Any, sparse_parts: list[dict[str, float]],
               fold_bn: bool) -> dict[str, dict]:
    """Every baseline per clip on the SNN's own input (``same_input``) or, when it cannot run there, apart at its
    published input. The ANN twin comes in four variants: dense, sparsity-aware, int8 and ceil(log2(T+1)) bits."""
    from svformer_deploy.energy.baselines import TORCHVISION_BASELINES, baseline_counts

    res: dict[str, dict] = {}
    shape = tuple(cfg.input_shape)
    for name in names:
        if name == ANN_TWIN:
            dense = baseline_counts(ANN_TWIN, cfg)
            bits = math.ceil(math.log2(cfg.num_frames + 1))
            variants = {"dense": _price(energy_of(dense, profile))}
            if sparse_parts:
                variants["sparsity-aware"] = {k: sum(p[k] for p in sparse_parts) / len(sparse_parts)
                                              for k in sparse_parts[0]}
            variants["int8"] = _price(energy_of(dense, "45nm-int8"))
            variants[f"int{bits}"] = _price(energy_of(dense, quantised_profile(bits)))
            for var, pr in variants.items():
                res[f"{ANN_TWIN} ({var})"] = {
                    **pr, "same_input": True, "input_shape": list(shape), "dense_macs_per_clip": dense.dense_macs,
                    "uncounted_ops": dense.uncounted,
                    "accuracy": "not trained on this data (the SNN's weights with ReLU neurons)",
                    "note": {"dense": "same architecture and clip, ReLU neurons, dense fp32",
                             "sparsity-aware": "MACs skipped for zero activations (NeuroBench effective MACs), "
                                               "counted on the same clips",
                             "int8": "dense, 45nm-int8 arithmetic and 1-byte values",
                             f"int{bits}": f"dense, {bits}-bit = ceil(log2(T+1)) arithmetic and values (Yan et al.)"
                             }[var]}
            continue
        try:
            c, same = baseline_counts(name, cfg, input_shape=shape), True
        except EnergyError as err:
            c, same = baseline_counts(name, cfg), False
            why = str(err)
        b = TORCHVISION_BASELINES[name]
        res[name] = {**_price(energy_of(c, profile)), "same_input": same, "input_shape": list(c.input_shape[1:]),
                     "dense_macs_per_clip": c.dense_macs, "uncounted_ops": c.uncounted,
                     "accuracy": "not trained on this data (weights=None; published accuracy is on Kinetics-400)",
                     "note": f"torchvision {b.builder}, weights=None" + ("" if same else f"; {why}; shown apart at "
                                                                        "its published input, never in a ratio")}
    return res


def _summary(opts, meta, cfg, profile, per_layer, per_video, n, views, uncounted, baselines, conv, accuracy,
             spiking_csv, rules_used, ann_profile) -> dict:
    totals = {c: int(per_video[c].sum()) for c in OP_CLASSES}
    sums = {k: float(per_video[k].sum()) for k in ("compute_pj", "memory_pj", "memory_fetch_per_event_pj",
                                                   "total_pj")}
    per_video_mj = {k.replace("_pj", "_mj"): _mj(v / n) for k, v in sums.items()}
    per_clip_mj = {k: v / views for k, v in per_video_mj.items()}
    protocol: dict[str, Any] = {"energy_views": views, "energy_clips": opts.clips, "energy_crops": opts.crops}
    if accuracy is not None:
        protocol.update({"accuracy_views": accuracy["views"], "match": accuracy["views"] == views,
                         "per_video_at_accuracy_protocol_mj": {k: v * accuracy["views"]
                                                               for k, v in per_clip_mj.items()}})
    mem = _memory_parts(opts, per_video, n)
    return {
        "checkpoint": {"path": Path(opts.checkpoint).name, "sha256": meta.get("sha256"), "model": cfg.name},
        "data": str(opts.data), "videos": n, "clips": opts.clips, "crops": opts.crops,
        "views_per_video": views, "T": cfg.num_frames, "input_size": list(cfg.input_shape), "fold_bn": opts.fold_bn,
        "profile": profile.to_dict(), "ann_profile": ann_profile.name,
        "accuracy": accuracy, "protocol": protocol,
        "headline": {"per_video_mj": per_video_mj, "per_clip_mj": per_clip_mj},
        "memory": mem,
        "totals_all_videos": totals,
        "per_video_mean_counts": {c: totals[c] / n for c in OP_CLASSES},
        "conventions": {name: {"title": CONVENTIONS[name].title, "statement": CONVENTIONS[name].doc,
                               "mac_per_video": c["mac"] / n, "ac_per_video": c["ac"] / n,
                               "compute_mj_per_video": _mj(c["compute_pj"] / n), "mac_layers": list(c["mac_layers"])}
                        for name, c in conv.items()},
        "ours_mac_layers": list(dict.fromkeys(per_layer.loc[(per_layer["op_class"] == "mac") & (per_layer["count"] > 0),
                                                            "layer"])),
        "reference_script_note": REFERENCE_SCRIPT_BUG,
        "spiking": {"mean_rate": float(per_video["mean_rate"].mean()),
                    "events_per_synapse_per_inference": float(per_video["events_per_synapse"].mean()),
                    "non_spike_input_energy_share": float(per_video["non_spike_input_share"].mean()),
                    "input_rate_per_layer": {r.layer: r.rate for r in spiking_csv.itertuples()}},
        "uncounted_ops": uncounted, "baselines": baselines, "rules_used": rules_used,
        "caveats": CAVEATS,
    }


def _memory_parts(opts: ReportOptions, per_video: pd.DataFrame, n: int) -> dict[str, Any]:
    """The memory model's statement and the SNN's memory per video (the breakdown is recomputed per video in
    :func:`write_report`; here the totals of both dataflows)."""
    return {"source": TIERS_SOURCE, "weight_stationary_mj_per_video": _mj(float(per_video["memory_pj"].sum()) / n),
            "fetch_per_event_mj_per_video": _mj(float(per_video["memory_fetch_per_event_pj"].sum()) / n),
            "rules": MEMORY_RULES}


def _f(x: float) -> str:
    return f"{x:.4g}"


def _markdown(s: dict, per_layer: pd.DataFrame) -> str:
    h, views, n = s["headline"], s["views_per_video"], s["videos"]
    acc, proto = s["accuracy"], s["protocol"]
    pv, pc = h["per_video_mj"], h["per_clip_mj"]
    lines = [f"# Energy report: {s['checkpoint']['model']} ({s['checkpoint']['path']})", "",
             f"Data `{s['data']}`, {n} videos, {s['clips']} clip(s) x {s['crops']} crop(s) = {views} view(s) per "
             f"video, T = {s['T']} timesteps (one frame per step), input {'x'.join(map(str, s['input_size']))} "
             f"(C, T, H, W). Profile `{s['profile']['name']}`: {s['profile']['source']}.", "",
             "## Headline", "",
             f"**{_f(pv['total_mj'])} mJ per video** (compute + memory, {views} view(s)); compute alone "
             f"{_f(pv['compute_mj'])} mJ, memory {_f(pv['memory_mj'])} mJ (weight-stationary; fetch-per-event "
             f"{_f(pv['memory_fetch_per_event_mj'])} mJ). Per clip: {_f(pc['total_mj'])} mJ (compute "
             f"{_f(pc['compute_mj'])} mJ)."]
    if acc is not None:
        lines.append(f"Accuracy: top-1 {acc['top1']:.2%} with {acc['clips']} clip(s) x {acc['crops']} crop(s) = "
                     f"{acc['views']} view(s) per video ({acc['source']}). At the accuracy's protocol: "
                     f"{_f(proto['per_video_at_accuracy_protocol_mj']['total_mj'])} mJ per video (compute "
                     f"{_f(proto['per_video_at_accuracy_protocol_mj']['compute_mj'])} mJ).")
        if not proto["match"]:
            lines.append(f"**Warning: the energy was counted with {views} view(s) per video, the accuracy with "
                         f"{acc['views']}; quote energy and accuracy at the same protocol (the figure above).**")
    else:
        lines.append("Accuracy: unknown (no --accuracy JSON and none in the checkpoint).")
    lines += ["", "## Like-for-like comparison (per clip, the SNN's own input)", "",
              "| model | input (C, T, H, W) | accuracy | compute (mJ) | memory (mJ) | compute + memory (mJ) | "
              "SNN / model (total) |", "|---|---|---|---:|---:|---:|---:|",
              f"| SNN (this checkpoint, exact) | {'x'.join(map(str, s['input_size']))} | "
              f"{'%.2f %%' % (100 * acc['top1']) if acc else 'unknown'} | {_f(pc['compute_mj'])} | "
              f"{_f(pc['memory_mj'])} | {_f(pc['total_mj'])} | 1 |"]
    apart = []
    for name, b in s["baselines"].items():
        if not b["same_input"]:
            apart.append((name, b))
            continue
        lines.append(f"| {name}: {b['note']} | {'x'.join(map(str, b['input_shape']))} | {b['accuracy']} | "
                     f"{_f(b['compute_mj'])} | {_f(b['memory_mj'])} | {_f(b['total_mj'])} | "
                     f"{pc['total_mj'] / b['total_mj']:.3g} |")
    if s["ann_profile"] != s["profile"]["name"]:
        lines += ["", f"ANN baselines are priced under `{s['ann_profile']}`: profile `{s['profile']['name']}` does "
                  "not price ANN arithmetic."]
    if apart:
        lines += ["", "Shown apart (cannot run on the SNN's input; never in a ratio):", "",
                  "| model | its input | accuracy | compute (mJ) | memory (mJ) | note |", "|---|---|---|---:|---:|---|"]
        lines += [f"| {name} | {'x'.join(map(str, b['input_shape']))} | {b['accuracy']} | {_f(b['compute_mj'])} | "
                  f"{_f(b['memory_mj'])} | {b['note']} |" for name, b in apart]
    m = s["memory"]
    lines += ["", "## Memory model", "", m["rules"],
              f"SNN memory per video: {_f(m['weight_stationary_mj_per_video'])} mJ weight-stationary ("
              + ", ".join(f"{k} {_f(x)}" for k, x in m["parts_mj_per_video"].items()) + " mJ), "
              f"{_f(m['fetch_per_event_mj_per_video'])} mJ fetch-per-event. Where each kind lives (by footprint): "
              + ", ".join(f"{k} {t} ({m['footprint_bytes'][k] / 1e3:.4g} KB)" for k, t in m["tiers"].items())
              + f". Tiers: {m['source']}."]
    lines += ["", "## Every convention, side by side (per video)", "",
              "| convention | MAC | AC | compute (mJ) | layers priced as MAC |", "|---|---:|---:|---:|---|",
              f"| ours (exact, this report's rules) | {_f(s['per_video_mean_counts']['mac'])} | "
              f"{_f(s['per_video_mean_counts']['ac'] + s['per_video_mean_counts']['spike_product'])} | "
              f"{_f(pv['compute_mj'])} | {', '.join(s['ours_mac_layers'])} |"]
    for name, c in s["conventions"].items():
        lines.append(f"| {c['title']} | {_f(c['mac_per_video'])} | {_f(c['ac_per_video'])} | "
                     f"{_f(c['compute_mj_per_video'])} | {', '.join(c['mac_layers'])} |")
    lines += [""] + [f"- **{c['title']}**: {c['statement']}" for c in s["conventions"].values()]
    lines += ["", REFERENCE_SCRIPT_BUG]
    sp = s["spiking"]
    lines += ["", "## Spiking metrics", "",
              f"- Mean firing rate (all neuron layers, neuron-weighted: spikes / neuron-steps): {sp['mean_rate']:.4f}",
              f"- Synaptic events per synapse per inference (Dampfhoffer et al.; ACs of layers with spike input / "
              f"their weights, per clip): {sp['events_per_synapse_per_inference']:.4g}",
              f"- Share of compute energy in layers whose input is not spikes: "
              f"{sp['non_spike_input_energy_share']:.1%}", "",
              "| layer (spike input) | input firing rate |", "|---|---:|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sp["input_rate_per_layer"].items()]
    lines += ["", "## Totals per video (mean)", "", "| op class | count | pJ each | energy (uJ) |",
              "|---|---:|---:|---:|"]
    for c, v in s["per_video_mean_counts"].items():
        pj = s["profile"]["per_op_class_pj"][c]
        if v:
            lines.append(f"| {c} | {v:.4g} | {pj} | {v * pj * 1e-6:.4g} |")
    top = per_layer.groupby("layer", sort=False)["energy_pj"].sum().sort_values(ascending=False).head(10)
    total = per_layer["energy_pj"].sum()
    lines += ["", "## Top layers (compute)", "", "| layer | share |", "|---|---:|"]
    lines += [f"| {k} | {v / total:.1%} |" for k, v in top.items()]
    lines += ["", "## Uncounted ops", ""]
    lines.append("SNN: " + ("; ".join(f"{k}: {v['calls']} calls, {v['elements']} output elements"
                                     for k, v in s["uncounted_ops"].items()) or "none (every executed op had a rule)"))
    for name, b in s["baselines"].items():
        if name.startswith(ANN_TWIN + " (") and name != f"{ANN_TWIN} (dense)":
            continue  # the twin's variants run the same ops
        u = b["uncounted_ops"]
        lines.append(f"{name}: " + ("; ".join(f"{k}: {v['calls']} calls, {v['elements']} output elements"
                                              for k, v in u.items()) or "none"))
    lines += ["", "## Counting rules used", "", rules_markdown(s["rules_used"]).rstrip()]
    lines += ["", "## Caveats", ""]
    if s["profile"]["caveats"]:
        lines.append(f"- Profile `{s['profile']['name']}`: {s['profile']['caveats']}")
    lines += [f"- {c}" for c in s["caveats"]]
    return "\n".join(lines) + "\n"


def _stacked(ax: Any, table: pd.DataFrame, horizontal: bool) -> None:
    """Stacked bars of ``table`` (op classes as columns), each class in its fixed colour and hatch."""
    left = None
    for c in table.columns:
        col, hatch = CLASS_STYLE[c]
        vals = table[c].to_numpy()
        pos = range(len(table))
        if horizontal:
            ax.barh(list(pos), vals, left=left, color=col, hatch=hatch, label=c, height=0.8, edgecolor="black",
                    linewidth=0.2)
        else:
            ax.bar(list(pos), vals, bottom=left, color=col, hatch=hatch, label=c, width=0.8, edgecolor="black",
                   linewidth=0.2)
        left = vals if left is None else left + vals


def _plots(d: Path, per_layer: pd.DataFrame, s: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = {"Software": None}
    n = s["videos"]
    t = per_layer.pivot_table(index="layer", columns="op_class", values="energy_pj", aggfunc="sum", fill_value=0.0,
                              sort=False)
    t = t.reindex(list(dict.fromkeys(per_layer["layer"])))
    t = t.loc[t.sum(axis=1) > 0, [c for c in OP_CLASSES if c in t.columns]] * 1e-6 / n
    t = t.iloc[::-1]  # first layer at the top
    fig, ax = plt.subplots(figsize=(10, max(4.0, 0.19 * len(t) + 1.8)))
    _stacked(ax, t, horizontal=True)
    ax.set_yticks(range(len(t)), t.index)
    ax.set_xlabel(f"compute energy per video (uJ, mean over {n} videos, {s['views_per_video']} view(s) each)")
    ax.set_ylabel("layer (network order, input at top)")
    ax.set_title(f"Energy per layer by op class ({s['profile']['name']})")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(title="op class", loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(d / "energy_per_layer.png", dpi=120, metadata=meta)
    plt.close(fig)
    ts = per_layer[per_layer.timestep >= 0].pivot_table(index="timestep", columns="op_class", values="energy_pj",
                                                        aggfunc="sum", fill_value=0.0)
    ts = ts[[c for c in OP_CLASSES if c in ts.columns]] * 1e-6 / n
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _stacked(ax, ts, horizontal=False)
    ax.set_xticks(range(len(ts)), [str(i) for i in ts.index])
    ax.set_xlabel("timestep t (one video frame per step)")
    ax.set_ylabel("compute energy per video (uJ, mean)")
    ax.set_title("Energy per timestep (ops after the time collapse not shown)")
    ax.legend(title="op class", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(d / "energy_per_timestep.png", dpi=120, metadata=meta)
    plt.close(fig)
    acc = s["accuracy"]
    shape = "x".join(map(str, s["input_size"]))
    labels = [f"SNN\n{shape}\n{'%.1f %%' % (100 * acc['top1']) if acc else 'acc. unknown'}"]
    comp, mem = [s["headline"]["per_clip_mj"]["compute_mj"]], [s["headline"]["per_clip_mj"]["memory_mj"]]
    for name, b in s["baselines"].items():
        if b["same_input"]:
            labels.append(f"{name}\n{'x'.join(map(str, b['input_shape']))}\nnot trained here")
            comp.append(b["compute_mj"])
            mem.append(b["memory_mj"])
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(labels)), 5))
    ax.bar(range(len(labels)), comp, color="#4c72b0", label="compute")
    ax.bar(range(len(labels)), mem, bottom=comp, color="#dd8452", hatch="//", label="memory (weight-stationary)")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("energy per clip (mJ)")
    ax.set_title(f"SNN vs ANN baselines on the same input ({s['profile']['name']}; ANN under {s['ann_profile']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(d / "snn_vs_baselines.png", dpi=120, metadata=meta)
    plt.close(fig)
