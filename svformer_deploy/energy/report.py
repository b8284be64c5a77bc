"""``svformer-deploy energy report``: count real videos, price them with the memory model in the headline, set
like-for-like ANN baselines and every convention beside them, and write a self-contained report.

Outputs (written into a temporary directory that is renamed to ``out`` only when everything succeeded):

* ``per_layer.csv``: layer, timestep, op_class, count, energy_pj, videos; summed over all videos and all their
  views (exact integers), ``videos`` says over how many;
* ``per_video.csv``: one row per video (all its views summed): counts per op class, compute, memory (both
  dataflows), compute + memory, each convention's compute, the spiking metrics;
* ``spiking.csv``: per synaptic layer with spike input, its input firing rate (mean over videos);
* ``summary.json``: every figure of ``report.md``, with protocol, profile constants and sources;
* ``report.md``: headline (compute + memory, compute alone beside), like-for-like comparison with accuracy,
  memory model, conventions side by side, spiking metrics, uncounted ops, the rules used, caveats, the files;
* ``energy_per_layer.png``, ``energy_per_timestep.png``, ``snn_vs_baselines.png``.

A *view* is one clip x one crop (one forward of one (C, T, H, W) input); a video has ``clips x crops`` views.

CSV and JSON contain no timestamps or timings: identical inputs give byte-identical files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from svformer_deploy._atomic import json_text
from svformer_deploy._outputs import Output, refuse_existing, refuse_file_in_the_way, write_output_dir
from svformer_deploy._paths import read_user_text
from svformer_deploy.energy._format import plural, sig_figs
from svformer_deploy.energy.baselines import ANN_TWIN, ann_profile_for, place_baseline
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
from svformer_deploy.energy.memory import TIERS_SOURCE, memory_convention
from svformer_deploy.energy.profiles import HardwareProfile, caveat_lines, get_profile
from svformer_deploy.energy.rules import OP_CLASSES, rules_markdown
from svformer_deploy.errors import EnergyError

__all__ = ["ReportOptions", "write_report", "CAVEATS", "CLASS_STYLE", "OUTPUT_FILES", "REPORT_OUTPUT", "sig_figs",
           "plural"]

CAVEATS = [
    "Op-count energy ignores much of data movement, which often dominates: Dampfhoffer et al., 'Are SNNs really "
    "more energy-efficient than ANNs? An in-depth hardware-aware study', IEEE TETCI 2023. The memory model here "
    "is a first-order estimate (no addressing, routing, control or static power).",
    "Lemaire et al., 'An analytical estimation of spiking neural networks energy efficiency', ICONIP 2022: "
    "addressing and memory accesses must be modelled; the fetch-per-event dataflow follows their model.",
    "Yan et al., arXiv 2409.08290 (2024): compare against an ANN quantised to ceil(log2(T+1)) bits; an SNN must "
    "fire below about 6 % to win under such a comparison.",
    "The 45 nm figures are arithmetic energies from Horowitz (ISSCC 2014): fp32 MAC 4.6 pJ and AC 0.9 pJ, and "
    "the integer widths he gives (multiply 8 and 32 bits, add 8, 16 and 32 bits); other integer widths are "
    "derived from those (each profile's caveats say how). None is a measurement of a neuromorphic chip.",
]

#: Every file the report writes and what it holds (printed in report.md; ``docs/energy.md`` states the same).
OUTPUT_FILES: dict[str, str] = {
    "report.md": "this report: per-video means and per-view figures",
    "summary.json": "every figure of report.md (per-video means, per-view figures), with protocol, profile "
                    "constants and sources",
    "per_layer.csv": "layer, timestep, op_class, count, energy_pj, videos: count and energy_pj **summed over all "
                     "`videos` videos and all their views** (exact integer counts; divide by `videos` for the "
                     "per-video means used everywhere else); timestep -1 = after the head collapses time",
    "per_video.csv": "one row per video, summed over its views: counts per op class, compute, memory (both "
                     "dataflows), compute + memory (pJ), each convention's compute, the spiking metrics",
    "spiking.csv": "per synaptic layer with spike input, its input firing rate (mean over videos)",
    "energy_per_layer.png": "compute energy per layer by op class, per-video mean",
    "energy_per_timestep.png": "compute energy per timestep by op class, per-video mean",
    "snn_vs_baselines.png": "the SNN and every baseline on the SNN's own input, per view, each bar's profile "
                            "under it",
}

REPORT_OUTPUT = Output("energy-report", "an energy report (svformer-deploy energy report)", "energy report",
                       files=("report.md", "summary.json", "per_layer.csv", "per_video.csv"))
"""What ``energy report`` writes: a whole folder; ``files``: its main files (every file: :data:`OUTPUT_FILES`)."""

#: One colour and one hatch per op class, used by every plot.
CLASS_STYLE: dict[str, tuple[str, str]] = {
    c: (col, hatch) for c, col, hatch in zip(
        OP_CLASSES,
        ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896"),
        ("", "//", "..", "xx", "\\\\", "oo", "--", "++", "**", "||", "/.", "x.", "-.", "o-"))}


class ReportSection(Protocol):
    """A section another package adds to an energy report over the same views: ``start(model)`` before any
    counting (it may refuse the model), ``add(views, label, counts)`` per video, ``finish(profile name) -> (summary
    key, JSON-ready dict, markdown)``, ``plots(folder)`` into the report folder."""

    def start(self, model: Any) -> None: ...

    def add(self, views: Any, label: int, counts: Any) -> None: ...

    def finish(self, profile: str) -> tuple[str, dict[str, Any], str]: ...

    def plots(self, folder: Path) -> list[str]: ...


@dataclass(frozen=True)
class ReportOptions:
    checkpoint: Path
    data: str = "moving-digits"
    videos: int = 4
    clips: int = 1
    crops: int = 1
    profile: str | HardwareProfile = "45nm-fp32"
    baselines: tuple[str, ...] = (ANN_TWIN, "r3d_18", "r2plus1d_18", "mc3_18", "s3d", "mvit_v2_s", "swin3d_t")
    fold_bn: bool = False
    accuracy: Path | None = None
    out: Path = Path("energy_report")
    force: bool = False
    sections: tuple["ReportSection", ...] = ()
    """Extra sections (``energy report --chip``'s: :class:`svformer_deploy.chip.energy.ChipSection`)."""


def _check(opts: ReportOptions) -> HardwareProfile:
    """Refuse bad options before any work; return the profile, resolved once (the report passes it on)."""
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
        read_accuracy(opts.accuracy)  # a malformed file or a percentage -> EnergyError before any work
    refuse_file_in_the_way(opts.out)  # before the counting, not when the folder is written at the end
    refuse_existing(opts.out, opts.force, inputs=(opts.checkpoint,), output=REPORT_OUTPUT)
    return get_profile(opts.profile)  # unknown profile -> ProfileError before any work


def read_accuracy(path: Path) -> dict[str, Any]:
    """The accuracy JSON given with ``--accuracy``: the ``eval.json`` that ``svformer-deploy evaluate`` writes
    (``top1`` as a fraction, ``clips``, ``crops``, ``num_videos``, ``checkpoint_sha256``, ``model_name``, ``data``,
    ``split``) or a user-written one with at least ``top1``, ``clips`` and ``crops``. ``top1`` must be a fraction
    in [0, 1] and the views whole numbers >= 1; anything else is one :class:`EnergyError` naming the fix."""
    try:
        d = json.loads(read_user_text(path))
        acc = {"top1": float(d["top1"]), "clips": int(d["clips"]), "crops": int(d["crops"])}
    except (ValueError, KeyError, TypeError) as err:
        raise EnergyError(f"accuracy file {path} is not an evaluate JSON (needs top1, clips, crops): {err}; pass "
                          "the eval.json written by svformer-deploy evaluate") from err
    _check_top1(acc["top1"], f"accuracy file {path}")
    if acc["clips"] < 1 or acc["crops"] < 1:
        raise EnergyError(f"accuracy file {path}: clips and crops must be >= 1, got {acc['clips']} x {acc['crops']}")
    acc.update(views=acc["clips"] * acc["crops"], videos=d.get("num_videos"), sha256=d.get("checkpoint_sha256"),
               model_name=d.get("model_name"), data=d.get("data"), split=d.get("split"))
    return acc


def _check_top1(top1: float, where: str) -> None:
    if not 0.0 <= top1 <= 1.0:
        raise EnergyError(f"{where}: top1 = {top1:g} is not a fraction; write top-1 as a fraction in [0, 1] "
                          f"(e.g. 0.975 for 97.5 %)")


def _accuracy(opts: ReportOptions, acc: dict[str, Any] | None, meta: dict, model_name: str) -> dict[str, Any] | None:
    """Accuracy and the views it was measured with: the ``--accuracy`` JSON (already read by
    :func:`read_accuracy`), checked against this checkpoint, else the checkpoint's own validation accuracy.

    An accuracy JSON recording another checkpoint (``checkpoint_sha256``, or ``model_name`` when no SHA-256 is
    recorded) is refused; one without ``checkpoint_sha256`` is accepted with its source marked unverified; one
    measured on other data than the energy is accepted with a warning (``data_differs``)."""
    name = Path(str(opts.accuracy)).name
    if acc is not None:
        if acc["sha256"] is not None and acc["sha256"] != meta.get("sha256"):
            raise EnergyError(f"accuracy file {opts.accuracy} was measured on checkpoint sha256 "
                              f"{acc['sha256'][:12]}... "
                              f"({acc['model_name'] or 'model unknown'}), not on {Path(opts.checkpoint).name} (sha256 "
                              f"{str(meta.get('sha256'))[:12]}..., {model_name}); pass the eval.json that "
                              f"svformer-deploy evaluate wrote for THIS checkpoint")
        if acc["model_name"] is not None and acc["model_name"] != model_name:
            raise EnergyError(f"accuracy file {opts.accuracy} is for model {acc['model_name']!r}, not "
                              f"{model_name!r} ({Path(opts.checkpoint).name}); pass the eval.json that "
                              f"svformer-deploy evaluate wrote for THIS checkpoint")
        verified = acc["sha256"] is not None
        source = (f"{name} (svformer-deploy evaluate, checkpoint SHA-256 verified)" if verified else
                  f"{name}: **source unverified** (no checkpoint_sha256: not shown to be this checkpoint's accuracy)")
        differs = acc["data"] is not None and str(acc["data"]) != str(opts.data)
        return {k: acc[k] for k in ("top1", "clips", "crops", "views", "videos", "data", "split")} | {
            "source": source, "verified": verified, "data_differs": differs}
    top1 = (meta.get("metrics") or {}).get("val_top1")
    if top1 is None:
        return None
    _check_top1(float(top1), f"checkpoint {Path(opts.checkpoint).name} (metrics.val_top1)")
    return {"top1": float(top1), "clips": 1, "crops": 1, "views": 1, "videos": None, "data": meta.get("data"),
            "split": "val", "source": "checkpoint metadata (training validation: one clip x one crop per video)",
            "verified": True, "data_differs": False}


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


#: ``progress(iterable, total, description)`` wraps the video loop (the CLI passes a progress bar).
Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]


def write_report(opts: ReportOptions, progress: Progress | None = None) -> tuple[Path, dict[str, Any]]:
    """Run the whole report (see the module docstring); return the output directory and the summary written to
    its ``summary.json``. ``progress`` may wrap the loop over the videos (``progress(iterable, total,
    description)``, as ``sparsity`` and ``export`` do)."""
    profile = _check(opts)
    from svformer_deploy.data import iter_eval_videos
    from svformer_deploy.models import load_checkpoint

    acc_file = read_accuracy(opts.accuracy) if opts.accuracy is not None else None
    model, meta = load_checkpoint(opts.checkpoint)
    cfg = model.config
    accuracy = _accuracy(opts, acc_file, meta, cfg.name)
    for section in opts.sections:  # before any counting (a chip's constraint check stops the report here)
        section.start(model)
    samples = iter_eval_videos(opts.data, cfg, num_videos=opts.videos, clips=opts.clips, crops=opts.crops)
    if progress is not None:
        samples = progress(samples, opts.videos, "counting operations")
    dense1, tokens = dense_model_counts(cfg)  # one clip, shapes only
    twin = _twin(model) if ANN_TWIN in opts.baselines else None
    ann_profile = ann_profile_for(profile)

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
    for sample in samples:
        v = int(sample.views.shape[0])
        counts = count_ops(model, sample.views, fold_bn=opts.fold_bn)
        rep = energy_of(counts, profile)
        for section in opts.sections:
            section.add(sample.views, sample.label, counts)
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
    if n_videos == 0:
        raise EnergyError(f"no videos found in {opts.data!r}; check --data")

    per_layer = pd.concat(layer_parts).groupby(["layer", "timestep", "op_class"], sort=False, as_index=False).sum()
    per_layer["videos"] = n_videos  # the CSV's counts are sums over this many videos (and all their views)
    per_video = pd.DataFrame(video_rows)
    rates_df = pd.DataFrame(rate_rows, columns=["video_id", "layer", "rate"])
    spiking_csv = rates_df.groupby("layer", sort=False, as_index=False)["rate"].mean()
    baselines, row_profiles = _baselines(opts.baselines, cfg, ann_profile, sparse_parts, opts.fold_bn)
    summary = _summary(opts, meta, cfg, profile, per_layer, per_video, n_videos, views, uncounted, baselines,
                       conv_tot, accuracy, spiking_csv, sorted(rules_used), ann_profile, row_profiles)
    summary["memory"].update({"parts_mj_per_video": {k: _mj(x / n_videos) for k, x in mem_parts.items()},
                              **mem_where})
    extra_md = ""
    for section in opts.sections:
        key, part, md = section.finish(profile.name)
        summary[key] = part
        extra_md += "\n" + md

    def build(tmp: Path) -> None:
        per_layer.to_csv(tmp / "per_layer.csv", index=False, float_format="%.6f", lineterminator="\n")
        per_video.to_csv(tmp / "per_video.csv", index=False, float_format="%.6f", lineterminator="\n")
        spiking_csv.to_csv(tmp / "spiking.csv", index=False, float_format="%.6f", lineterminator="\n")
        (tmp / "summary.json").write_text(json_text(summary, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(_markdown(summary, per_layer) + extra_md, encoding="utf-8")
        _plots(tmp, per_layer, summary)
        for section in opts.sections:
            section.plots(tmp)

    return write_output_dir(opts.out, build, REPORT_OUTPUT, force=opts.force), summary


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


def _baselines(names: tuple[str, ...], cfg: Any, profile: HardwareProfile, sparse_parts: list[dict[str, float]],
               fold_bn: bool) -> tuple[dict[str, dict], dict[str, HardwareProfile]]:
    """Every baseline per view, placed by :func:`svformer_deploy.energy.baselines.place_baseline` (on the SNN's
    own input, ``same_input``, or apart at its published input), with the SNN's BatchNorm convention
    (``fold_bn``) and the profile each row is priced under (``profile``). The ANN twin comes in four variants:
    dense, sparsity-aware, int8 and ceil(log2(T+1)) bits. Also returns every profile a row is priced under, by
    name (each resolved once, here)."""
    from svformer_deploy.energy.baselines import TORCHVISION_BASELINES

    res: dict[str, dict] = {}
    used: dict[str, HardwareProfile] = {}
    bn = "folded into the preceding layer (--fold-bn)" if fold_bn else "counted (bn_mul + bn_add per element)"
    for name in names:
        placed = place_baseline(name, cfg, fold_bn=fold_bn)
        c = placed.counts
        common = {"same_input": placed.same_input, "input_shape": list(c.input_shape[1:]),
                  "dense_macs_per_view": c.dense_macs, "uncounted_ops": c.uncounted, "batchnorm": bn}
        if name == ANN_TWIN:
            bits = math.ceil(math.log2(cfg.num_frames + 1))
            qprof = get_profile(f"45nm-int{bits}")
            int8 = get_profile("45nm-int8")
            variants = {"dense": (_price(energy_of(c, profile)), profile)}
            if sparse_parts:
                variants["sparsity-aware"] = ({k: sum(p[k] for p in sparse_parts) / len(sparse_parts)
                                               for k in sparse_parts[0]}, profile)
            variants["int8"] = (_price(energy_of(c, int8)), int8)
            variants[f"int{bits}"] = (_price(energy_of(c, qprof)), qprof)
            for var, (pr, prof) in variants.items():
                used[prof.name] = prof
                res[f"{ANN_TWIN} ({var})"] = {
                    **pr, **common, "profile": prof.name, "memory_convention": memory_convention(prof),
                    "accuracy": "not trained on this data (the SNN's weights with ReLU neurons)",
                    "note": {"dense": "same architecture and clip, ReLU neurons, dense",
                             "sparsity-aware": "MACs skipped for zero activations (NeuroBench effective MACs), "
                                               "counted on the same clips",
                             "int8": "dense, int8 arithmetic and 1-byte values",
                             f"int{bits}": f"dense, {bits}-bit = ceil(log2(T+1)) arithmetic and values (Yan et al.)"
                             }[var]}
            continue
        b = TORCHVISION_BASELINES[name]
        used[profile.name] = profile
        res[name] = {**_price(energy_of(c, profile)), **common, "profile": profile.name,
                     "memory_convention": memory_convention(profile),
                     "accuracy": "not trained on this data (weights=None; published accuracy is on Kinetics-400)",
                     "note": f"torchvision {b.builder}, weights=None" + (
                         "" if placed.same_input else f"; {placed.why}; shown apart at its published input, never "
                                                      "in a ratio")}
    return res, used


def _ratios(baselines: dict[str, dict], snn: dict[str, float], snn_memory: str) -> None:
    """Add to every baseline on the SNN's input its ratios SNN / baseline per view: ``ratio_compute`` always,
    ``ratio_total`` (compute + memory) only when both sides count memory the same way
    (:func:`svformer_deploy.energy.memory.memory_convention`), else None with ``ratio_total_withheld`` saying why.
    Baselines shown apart get no ratio."""
    for b in baselines.values():
        if not b["same_input"]:
            b.update(ratio_compute=None, ratio_total=None, ratio_total_withheld="not on the SNN's input")
            continue
        b["ratio_compute"] = snn["compute_mj"] / b["compute_mj"] if b["compute_mj"] else None
        if b["memory_convention"] == snn_memory:
            b["ratio_total"] = snn["total_mj"] / b["total_mj"] if b["total_mj"] else None
            b["ratio_total_withheld"] = None
        else:
            b["ratio_total"] = None
            b["ratio_total_withheld"] = (f"memory counted differently: SNN {snn_memory}, this row "
                                         f"{b['memory_convention']}")


def _summary(opts, meta, cfg, profile, per_layer, per_video, n, views, uncounted, baselines, conv, accuracy,
             spiking_csv, rules_used, ann_profile, row_profiles) -> dict:
    totals = {c: int(per_video[c].sum()) for c in OP_CLASSES}
    sums = {k: float(per_video[k].sum()) for k in ("compute_pj", "memory_pj", "memory_fetch_per_event_pj",
                                                   "total_pj")}
    per_video_mj = {k.replace("_pj", "_mj"): _mj(v / n) for k, v in sums.items()}
    per_view_mj = {k: v / views for k, v in per_video_mj.items()}
    snn_memory = memory_convention(profile)
    _ratios(baselines, per_view_mj, snn_memory)
    protocol: dict[str, Any] = {"energy_views": views, "energy_clips": opts.clips, "energy_crops": opts.crops}
    if accuracy is not None:
        protocol.update({"accuracy_views": accuracy["views"], "match": accuracy["views"] == views,
                         "per_video_at_accuracy_protocol_mj": {k: v * accuracy["views"]
                                                               for k, v in per_view_mj.items()}})
    mem = _memory_parts(opts, per_video, n)
    mem["convention"] = snn_memory
    energy = per_layer["energy_pj"].sum()
    mem["mac_compute_share"] = float(per_layer.loc[per_layer["op_class"] == "mac", "energy_pj"].sum() / energy
                                     ) if energy else 0.0
    return {
        "checkpoint": {"path": Path(opts.checkpoint).name, "sha256": meta.get("sha256"), "model": cfg.name},
        "data": str(opts.data), "videos": n, "clips": opts.clips, "crops": opts.crops,
        "views_per_video": views, "T": cfg.num_frames, "input_size": list(cfg.input_shape), "fold_bn": opts.fold_bn,
        "profile": profile.to_dict(), "ann_profile": ann_profile.name,
        "row_profiles": _row_profiles(baselines, profile, row_profiles),
        "accuracy": accuracy, "protocol": protocol,
        "headline": {"per_video_mj": per_video_mj, "per_view_mj": per_view_mj},
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
        "files": OUTPUT_FILES, "caveats": CAVEATS,
    }


def _row_profiles(baselines: dict[str, dict], profile: HardwareProfile, used: dict[str, HardwareProfile]
                  ) -> dict[str, dict]:
    """Every profile a baseline row is priced under other than the SNN's own (``45nm-int8``, ``45nm-int<bits>``,
    the fp32 fallback of a profile that does not price ANNs), with all its figures, source and caveats (``used``:
    the profiles :func:`_baselines` priced the rows under, from the profile registry)."""
    names = dict.fromkeys(b["profile"] for b in baselines.values() if b["profile"] != profile.name)
    return {name: used[name].to_dict() for name in names}


def _memory_parts(opts: ReportOptions, per_video: pd.DataFrame, n: int) -> dict[str, Any]:
    """The memory model's statement and the SNN's memory per video (the breakdown is recomputed per video in
    :func:`write_report`; here the totals of both dataflows)."""
    return {"source": TIERS_SOURCE, "weight_stationary_mj_per_video": _mj(float(per_video["memory_pj"].sum()) / n),
            "fetch_per_event_mj_per_video": _mj(float(per_video["memory_fetch_per_event_pj"].sum()) / n),
            "rules": MEMORY_RULES}


_f = sig_figs  # the short name the tables use


def _shape(dims: list[int]) -> str:
    return "x".join(map(str, dims))


def _header(s: dict) -> list[str]:
    views, n = s["views_per_video"], s["videos"]
    bn = ("BatchNorm: `--fold-bn`: every time-invariant BatchNorm is counted as folded into the preceding layer "
          "(free), in the SNN and in every baseline alike; per-timestep BatchNorms are never folded."
          if s["fold_bn"] else "BatchNorm: counted as one multiply and one add per element (no `--fold-bn`), in "
          "the SNN and in every baseline alike.")
    return [f"Data `{s['data']}`, {plural(n, 'video')}, {plural(s['clips'], 'clip')} x {plural(s['crops'], 'crop')} "
            f"= {plural(views, 'view')} per video (a view is one clip x one crop), T = {s['T']} timesteps (one frame "
            f"per step), input {_shape(s['input_size'])} (C, T, H, W). Profile `{s['profile']['name']}`: "
            f"{s['profile']['source']}. {bn}"]


def _accuracy_lines(s: dict) -> list[str]:
    acc, proto, views = s["accuracy"], s["protocol"], s["views_per_video"]
    if acc is None:
        return ["Accuracy: unknown (no --accuracy JSON and none in the checkpoint)."]
    at = proto["per_video_at_accuracy_protocol_mj"]
    on = f" on {plural(acc['videos'], 'video')}" if acc.get("videos") else ""  # the sample behind the figure
    lines = [f"Accuracy: top-1 {acc['top1']:.2%}{on} with {plural(acc['clips'], 'clip')} x {plural(acc['crops'], 'crop')} "
             f"= {plural(acc['views'], 'view')} per video ({acc['source']}). At the accuracy's protocol: "
             f"{_f(at['total_mj'])} mJ per video (compute {_f(at['compute_mj'])} mJ)."]
    if not proto["match"]:
        lines.append(f"**Warning: the energy was counted with {plural(views, 'view')} per video, the accuracy with "
                     f"{acc['views']}; quote energy and accuracy at the same protocol (the figure above).**")
    if acc["data_differs"]:
        lines.append(f"**Warning: the accuracy was measured on `{acc['data']}` ({acc['split']} split), the energy on "
                     f"`{s['data']}`.**")
    return lines


def _ratio_cell(r: float | None) -> str:
    return "not printed" if r is None else sig_figs(r, 3)


def _figures(p: dict) -> str:
    """A profile's primitives and value size in one phrase, from its ``to_dict()``."""
    pj = p["energy_pj"]
    return (f"MAC {pj['mac']:.4g} pJ, AC {pj['ac']:.4g} pJ, multiply {pj['mul']:.4g} pJ, add {pj['add']:.4g} pJ, "
            f"{p['bytes_per_value']:g} B per value")


def _comparison(s: dict) -> list[str]:
    acc, pc = s["accuracy"], s["headline"]["per_view_mj"]
    snn_mem = s["memory"]["convention"]
    lines = ["", "## Like-for-like comparison (per view, the SNN's own input)", "",
             "| model | profile | input (C, T, H, W) | accuracy | compute (mJ) | memory (mJ) | compute + memory (mJ) | "
             "SNN / model (compute) | SNN / model (total) |", "|---|---|---|---|---:|---:|---:|---:|---:|",
             f"| SNN (this checkpoint, exact) | `{s['profile']['name']}` | {_shape(s['input_size'])} | "
             f"{'%.2f %%' % (100 * acc['top1']) if acc else 'unknown'} | {_f(pc['compute_mj'])} | "
             f"{_f(pc['memory_mj'])} | {_f(pc['total_mj'])} | 1 | 1 |"]
    apart, withheld = [], {}
    for name, b in s["baselines"].items():
        if not b["same_input"]:
            apart.append((name, b))
            continue
        if b["ratio_total_withheld"]:
            withheld.setdefault(b["memory_convention"], []).append(name)
        lines.append(f"| {name}: {b['note']} | `{b['profile']}` | {_shape(b['input_shape'])} | {b['accuracy']} | "
                     f"{_f(b['compute_mj'])} | {_f(b['memory_mj'])} | {_f(b['total_mj'])} | "
                     f"{_ratio_cell(b['ratio_compute'])} | {_ratio_cell(b['ratio_total'])} |")
    lines += ["", "Each row is priced under the profile in its column."]
    if s["ann_profile"] != s["profile"]["name"]:
        lines[-1] += (f" Profile `{s['profile']['name']}` does not price ANN arithmetic, so the fp32 ANN rows use "
                      f"`{s['ann_profile']}`; the int rows use their own integer profiles.")
    if s["row_profiles"]:
        lines += ["", "Profiles of the other rows (figures from the profile registry; `svformer-deploy energy "
                  "profiles NAME` lists every figure):", ""]
        lines += [f"- `{name}`: {_figures(p)}. {p['source']}." + (f" {p['caveats']}" if p["caveats"] else "")
                  for name, p in s["row_profiles"].items()]
    for conv, names in withheld.items():
        lines += ["", f"**SNN / model (total) is not printed for {', '.join(names)}: memory is not counted the same "
                  f"way on both sides** (SNN: {snn_mem}; these rows: {conv}); a total ratio would compare unlike "
                  "quantities. The compute ratio is printed instead: compute only on both sides"
                  + (", where the SNN's per-op figures include the chip's own memory accesses and the ANN's do not."
                     if s["profile"]["memory_pj_per_byte"] == 0 else ".")]
    if apart:
        lines += ["", "Shown apart (cannot run on the SNN's input; never in a ratio):", "",
                  "| model | profile | its input | accuracy | compute (mJ) | memory (mJ) | note |",
                  "|---|---|---|---|---:|---:|---|"]
        lines += [f"| {name} | `{b['profile']}` | {_shape(b['input_shape'])} | {b['accuracy']} | "
                  f"{_f(b['compute_mj'])} | {_f(b['memory_mj'])} | {b['note']} |" for name, b in apart]
    return lines


def _memory_lines(s: dict) -> list[str]:
    m, p = s["memory"], s["profile"]
    lines = ["", "## Memory model", "", m["rules"]]
    if p["memory_pj_per_byte"] is not None:
        lines.append(f"Profile `{p['name']}` replaces the tiers; its memory term: {m['convention']}. Source: "
                     f"{p['memory_source'] or 'none given'}.")
        if p["memory_pj_per_byte"] == 0 and m["mac_compute_share"] > 0:
            lines.append(f"{m['mac_compute_share']:.1%} of the SNN's compute is real-valued MACs (`mac`, "
                         f"{p['per_op_class_pj']['mac']:g} pJ each, not figures of this chip's synaptic ops); under "
                         "this profile they carry no memory term, so the SNN's memory and total understate them.")
    lines.append(f"SNN memory per video: {_f(m['weight_stationary_mj_per_video'])} mJ weight-stationary ("
                 + ", ".join(f"{k} {_f(x)}" for k, x in m["parts_mj_per_video"].items()) + " mJ), "
                 f"{_f(m['fetch_per_event_mj_per_video'])} mJ fetch-per-event. Where each kind lives (by footprint): "
                 + ", ".join(f"{k} {t} ({_f(m['footprint_bytes'][k] / 1e3)} KB)" for k, t in m["tiers"].items())
                 + f". Tiers: {m['source']}.")
    return lines


def _markdown(s: dict, per_layer: pd.DataFrame) -> str:
    h, views = s["headline"], s["views_per_video"]
    pv, pc = h["per_video_mj"], h["per_view_mj"]
    lines = [f"# Energy report: {s['checkpoint']['model']} ({s['checkpoint']['path']})", "", *_header(s), "",
             "## Headline", "",
             f"**{_f(pv['total_mj'])} mJ per video** (compute + memory, {plural(views, 'view')}; mean over "
             f"{plural(s['videos'], 'video')}); compute alone {_f(pv['compute_mj'])} mJ, memory {_f(pv['memory_mj'])} "
             f"mJ (weight-stationary; fetch-per-event {_f(pv['memory_fetch_per_event_mj'])} mJ). Per view (one clip "
             f"x one crop): {_f(pc['total_mj'])} mJ (compute {_f(pc['compute_mj'])} mJ)."
             + ("" if s["profile"]["memory_pj_per_byte"] is None else
                f" Memory under `{s['profile']['name']}`: {s['memory']['convention']} (see the memory model)."),
             *_accuracy_lines(s)]
    lines += _comparison(s)
    lines += _memory_lines(s)
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
              f"their weights, per view): {_f(sp['events_per_synapse_per_inference'])}",
              f"- Share of compute energy in layers whose input is not spikes: "
              f"{sp['non_spike_input_energy_share']:.1%}", "",
              "| layer (spike input) | input firing rate |", "|---|---:|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sp["input_rate_per_layer"].items()]
    lines += ["", "## Totals per video (mean)", "", "| op class | count | pJ each (profile) | energy (uJ) |",
              "|---|---:|---:|---:|"]
    for c, v in s["per_video_mean_counts"].items():
        pj = s["profile"]["per_op_class_pj"][c]
        if v:
            lines.append(f"| {c} | {_f(v)} | {pj:g} | {_f(v * pj * 1e-6)} |")
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
    lines += caveat_lines(s["profile"]) + [f"- {c}" for c in s["caveats"]]
    lines += ["", "## Files", "", "| file | what it holds |", "|---|---|"]
    lines += [f"| `{f}` | {what.replace('`videos` videos', plural(s['videos'], 'video') + ' (column `videos`)')} |"
              for f, what in s["files"].items()]
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
    ax.set_xlabel(f"compute energy per video (uJ, mean over {plural(n, 'video')}, "
                  f"{plural(s['views_per_video'], 'view')} each)")
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
    _comparison_plot(d / "snn_vs_baselines.png", s, meta)


def _comparison_plot(path: Path, s: dict, meta: dict) -> None:
    """The SNN and every baseline on its input, per view, each bar labelled with its model, variant, input,
    accuracy and profile; memory stacked on compute only when every bar counts memory the SNN's way."""
    import matplotlib.pyplot as plt

    acc = s["accuracy"]
    pc = s["headline"]["per_view_mj"]
    labels = [f"SNN\n{_shape(s['input_size'])}\n{'%.1f %%' % (100 * acc['top1']) if acc else 'acc. unknown'}"
              f"\n{s['profile']['name']}"]
    comp, mem, same_memory = [pc["compute_mj"]], [pc["memory_mj"]], True
    for name, b in s["baselines"].items():
        if b["same_input"]:
            model, _, variant = name.partition(" (")
            labels.append(f"{model}\n{('(' + variant) if variant else ''}\n{_shape(b['input_shape'])}\n"
                          f"not trained here\n{b['profile']}".replace("\n\n", "\n"))
            comp.append(b["compute_mj"])
            mem.append(b["memory_mj"])
            same_memory &= b["ratio_total_withheld"] is None
    fig, ax = plt.subplots(figsize=(max(8.0, 1.45 * len(labels)), 5.5))
    x = range(len(labels))
    ax.bar(x, comp, color="#4c72b0", label="compute")
    if same_memory:
        ax.bar(x, mem, bottom=comp, color="#dd8452", hatch="//", label="memory (weight-stationary)")
        what = "compute + memory"
    else:
        what = "compute only: memory is not counted the same way on both sides (see report.md)"
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("energy per view (mJ; a view is one clip x one crop)")
    ax.set_title(f"SNN vs ANN baselines on the SNN's input, per view\n{what}; each bar's profile under its label",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=meta)
    plt.close(fig)
