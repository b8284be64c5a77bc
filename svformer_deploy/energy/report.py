"""``svformer-deploy energy report``: count real videos, price them, compare with ANN baselines, write a report.

Outputs (written into a temporary directory that is renamed to ``out`` only when everything succeeded):

* ``per_layer.csv``: layer, timestep, op_class, count, energy_pj, summed over all videos and all their views;
* ``per_video.csv``: one row per video (all views included): counts per op class, compute and memory energy;
* ``summary.json``: totals, views, T, input size, convention, profile constants with sources, uncounted ops;
* ``report.md``: totals, SNN vs each baseline, top layers, the published convention side by side, caveats;
* ``energy_per_layer.png``, ``energy_per_timestep.png``, ``snn_vs_baselines.png``.

CSV and JSON contain no timestamps or timings: identical inputs give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from svformer_deploy._atomic import atomic_write_dir
from svformer_deploy.energy.counter import count_ops
from svformer_deploy.energy.energy import energy_of
from svformer_deploy.energy.profiles import get_profile
from svformer_deploy.energy.rules import OP_CLASSES
from svformer_deploy.errors import EnergyError, OutputExistsError

__all__ = ["ReportOptions", "write_report", "CAVEATS"]

CAVEATS = [
    "Op-count energy ignores data movement, which often dominates: Dampfhoffer et al., 'Are SNNs really more "
    "energy-efficient than ANNs? An in-depth hardware-aware study', IEEE TETCI 2023 (memory and LIF state "
    "updates make SNNs costlier than op counts suggest).",
    "Lemaire et al., 'An analytical estimation of spiking neural networks energy efficiency', ICONIP 2022: "
    "addressing and memory accesses must be modelled; synaptic-op counts alone favour SNNs unfairly.",
    "Yan et al., arXiv 2409.08290 (2024): compare against an ANN quantised to ceil(log2(T+1)) bits; an SNN must "
    "fire below about 6 % to win under such a comparison.",
    "The 4.6 / 0.9 pJ figures are 45 nm fp32 arithmetic (Horowitz, ISSCC 2014); they are not measurements of "
    "any neuromorphic chip.",
]


@dataclass(frozen=True)
class ReportOptions:
    checkpoint: Path
    data: str = "moving-digits"
    videos: int = 4
    clips: int = 1
    crops: int = 1
    profile: str = "45nm-fp32"
    baselines: tuple[str, ...] = ("svformer-ann", "r3d_18", "r2plus1d_18", "mc3_18", "s3d", "mvit_v2_s", "swin3d_t")
    convention: str = "ours"
    out: Path = Path("energy_report")
    force: bool = False


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _check(opts: ReportOptions) -> None:
    from svformer_deploy.energy.baselines import list_baselines

    if opts.convention not in ("ours", "spikformer"):
        raise EnergyError(f"unknown convention {opts.convention!r}; use 'ours' or 'spikformer'")
    for b in opts.baselines:
        if b not in list_baselines():
            raise EnergyError(f"unknown baseline {b!r}; choose from {list_baselines()}")
    if opts.data != "moving-digits" and not Path(opts.data).is_dir():
        from svformer_deploy.errors import DataError

        raise DataError(f"data folder {opts.data} does not exist; pass --data moving-digits or a UCF101/HMDB51 folder")
    if not Path(opts.checkpoint).is_file():
        from svformer_deploy.errors import CheckpointNotFoundError

        raise CheckpointNotFoundError(f"checkpoint {opts.checkpoint} does not exist; pass the path of a .pt file")
    if opts.videos < 1 or opts.clips < 1 or opts.crops < 1:
        raise EnergyError("--videos, --clips and --crops must be >= 1")
    if opts.out.exists() and not opts.force:
        raise OutputExistsError(f"{opts.out} exists; choose another --out or pass --force to replace it")
    get_profile(opts.profile)  # unknown profile -> ProfileError before any work


def write_report(opts: ReportOptions, progress: bool = True) -> Path:
    """Run the whole report (see the module docstring) and return the output directory."""
    _check(opts)
    from svformer_deploy.data import iter_eval_videos
    from svformer_deploy.models import load_checkpoint

    profile = get_profile(opts.profile)
    model, meta = load_checkpoint(opts.checkpoint)
    cfg = model.config
    samples = iter_eval_videos(opts.data, cfg, num_videos=opts.videos, clips=opts.clips, crops=opts.crops)

    layer_parts: list[pd.DataFrame] = []
    video_rows = []
    uncounted: dict[str, dict[str, int]] = {}
    spk_layers: dict[str, dict[str, float]] = {}
    views = opts.clips * opts.crops
    n_videos = 0

    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("counting operations", total=opts.videos)
        for sample in samples:
            counts = count_ops(model, sample.views)
            rep = energy_of(counts, profile)
            layer_parts.append(rep.df)
            for k, v in counts.uncounted.items():
                u = uncounted.setdefault(k, {"calls": 0, "elements": 0})
                u["calls"] += v["calls"]
                u["elements"] += v["elements"]
            tot = counts.totals()
            row = {"video_id": sample.video_id, "label": int(sample.label), "views": int(sample.views.shape[0])}
            row.update({c: tot[c] for c in OP_CLASSES})
            row["compute_pj"] = rep.compute_pj
            row["memory_pj"] = rep.memory_pj if rep.memory_pj is not None else float("nan")
            if opts.convention == "spikformer":
                from svformer_deploy.energy.spikformer import spikformer_counts

                sp = spikformer_counts(model, sample.views)
                for name, d in sp.items():
                    acc = spk_layers.setdefault(name, {"mac": 0.0, "ac": 0.0})
                    acc["mac"] += d["mac"]
                    acc["ac"] += d["ac"]
                row["spikformer_mac"] = sum(d["mac"] for d in sp.values())
                row["spikformer_ac"] = sum(d["ac"] for d in sp.values())
                row["spikformer_pj"] = row["spikformer_mac"] * profile.pj("mac") + row["spikformer_ac"] * profile.pj("ac")
            video_rows.append(row)
            n_videos += 1
            bar.advance(task)
    if n_videos == 0:
        raise EnergyError(f"no videos found in {opts.data!r}; check --data")

    per_layer = pd.concat(layer_parts).groupby(["layer", "timestep", "op_class"], sort=False, as_index=False).sum()
    per_video = pd.DataFrame(video_rows)
    baselines = _baselines(opts.baselines, cfg, profile)

    def build(tmp: Path) -> None:
        per_layer.to_csv(tmp / "per_layer.csv", index=False, float_format="%.6f", lineterminator="\n")
        per_video.to_csv(tmp / "per_video.csv", index=False, float_format="%.6f", lineterminator="\n")
        summary = _summary(opts, meta, cfg, profile, per_layer, per_video, n_videos, views, uncounted, baselines,
                           spk_layers)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(_markdown(summary, per_layer, n_videos, spk_layers), encoding="utf-8")
        _plots(tmp, per_layer, summary)

    out = atomic_write_dir(opts.out, build, force=opts.force)
    return out


def _baselines(names: tuple[str, ...], cfg, profile) -> dict[str, dict]:
    from svformer_deploy.energy.baselines import TORCHVISION_BASELINES, baseline_counts, fvcore_count

    res = {}
    for name in names:
        c = baseline_counts(name, cfg)
        e = energy_of(c, profile)
        shape = list(c.input_shape)
        res[name] = {"dense_macs_per_clip": c.dense_macs, "compute_pj_per_clip": e.compute_pj,
                     "mac_pj_per_clip": e.per_class_pj["mac"], "input_shape": shape,
                     "fvcore_total_per_clip": fvcore_count(c)["total"],
                     "uncounted_ops": sorted(c.uncounted),
                     "note": ("same architecture with ReLU neurons, same clip" if name == "svformer-ann" else
                              f"torchvision {name}, weights=None, published input {shape[2]}x{shape[3]}x{shape[4]}"
                              if name in TORCHVISION_BASELINES else "")}
    return res


def _summary(opts, meta, cfg, profile, per_layer, per_video, n_videos, views, uncounted, baselines, spk) -> dict:
    totals = {c: int(per_video[c].sum()) for c in OP_CLASSES}
    compute = float(per_layer["energy_pj"].sum())
    mem = float(per_video["memory_pj"].sum()) if per_video["memory_pj"].notna().all() else None
    s = {
        "checkpoint": {"path": Path(opts.checkpoint).name, "sha256": meta.get("sha256"), "model": cfg.name},
        "data": str(opts.data), "videos": n_videos, "clips": opts.clips, "crops": opts.crops,
        "views_per_video": views, "T": cfg.num_frames, "input_size": list(cfg.input_shape),
        "convention": opts.convention,
        "counting_rules": "docs/energy.md; svformer_deploy.energy.rules (exact: ACs = in-bounds fan-out of "
                          "non-zero inputs; spike products = coincident non-zero pairs; PLIF = 1 mul + 3 add per "
                          "element-step; BN = 1 mul + 1 add per element; non-binary integers counted as real)",
        "profile": profile.to_dict(),
        "totals_all_videos": totals,
        "per_video_mean": {"counts": {c: totals[c] / n_videos for c in OP_CLASSES},
                           "compute_pj": compute / n_videos, "compute_mj": compute / n_videos * 1e-9,
                           "memory_pj": None if mem is None else mem / n_videos},
        "per_clip_mean_compute_pj": compute / (n_videos * views),
        "uncounted_ops": uncounted,
        "baselines": baselines,
        "caveats": CAVEATS,
    }
    if opts.convention == "spikformer":
        mac, ac = float(per_video["spikformer_mac"].sum()), float(per_video["spikformer_ac"].sum())
        s["spikformer"] = {"mac_per_video": mac / n_videos, "ac_per_video": ac / n_videos,
                           "compute_pj_per_video": float(per_video["spikformer_pj"].sum()) / n_videos,
                           "method": "dense MACs x input firing rate as AC for spike inputs, dense MACs for analog "
                                     "inputs, attention T*heads*N*d^2*(min(fr_K,fr_V)+fr_Q), BN/neurons/adds ignored"}
    return s


def _markdown(s: dict, per_layer: pd.DataFrame, n: int, spk: dict) -> str:
    pv = s["per_video_mean"]
    views = s["views_per_video"]
    lines = [f"# Energy report: {s['checkpoint']['model']} ({s['checkpoint']['path']})", "",
             f"Data `{s['data']}`, {n} videos, {s['clips']} clip(s) x {s['crops']} crop(s) = {views} view(s) per "
             f"video (every per-video figure includes all views), T = {s['T']} timesteps, input "
             f"{'x'.join(map(str, s['input_size']))} (C, T, H, W). Profile `{s['profile']['name']}`: "
             f"{s['profile']['source']}.", "",
             "## Counting rules", "", s["counting_rules"] + ".", "",
             "## Totals per video (mean)", "", "| op class | count | pJ each | energy (uJ) |", "|---|---:|---:|---:|"]
    for c, v in pv["counts"].items():
        pj = s["profile"]["per_op_class_pj"][c]
        if v:
            lines.append(f"| {c} | {v:.4g} | {pj} | {v * pj * 1e-6:.4g} |")
    lines += ["", f"Compute energy per video: **{pv['compute_mj']:.4g} mJ** ({pv['compute_pj'] / views * 1e-9:.4g} "
              f"mJ per view)."]
    if pv["memory_pj"] is not None:
        lines.append(f"Memory term (reported beside, not added): {pv['memory_pj'] * 1e-9:.4g} mJ per video at "
                     f"{s['profile']['memory_pj_per_byte']} pJ/byte ({s['profile']['memory_source']}).")
    lines += ["", "## SNN vs baselines (per view / clip, compute only, same profile)", "",
              "| model | dense GMACs per clip | energy per clip (mJ) | SNN / baseline |", "|---|---:|---:|---:|"]
    snn_clip = s["per_clip_mean_compute_pj"]
    lines.append(f"| SNN (this checkpoint, exact) | - | {snn_clip * 1e-9:.4g} | 1 |")
    for name, b in s["baselines"].items():
        lines.append(f"| {name} ({b['note']}) | {b['dense_macs_per_clip'] / 1e9:.4g} | "
                     f"{b['compute_pj_per_clip'] * 1e-9:.4g} | {snn_clip / b['compute_pj_per_clip']:.3g} |")
    top = per_layer.groupby("layer", sort=False)["energy_pj"].sum().sort_values(ascending=False).head(10)
    total = per_layer["energy_pj"].sum()
    lines += ["", "## Top layers (all videos)", "", "| layer | energy share |", "|---|---:|"]
    lines += [f"| {k} | {v / total:.1%} |" for k, v in top.items()]
    if "spikformer" in s:
        sp = s["spikformer"]
        ours_ac = pv["counts"]["ac"] + pv["counts"]["spike_product"]
        lines += ["", "## Published convention (Spikformer / SVFormer script) vs ours, per video", "",
                  "| | MAC | AC | compute (mJ) |", "|---|---:|---:|---:|",
                  f"| published convention | {sp['mac_per_video']:.4g} | {sp['ac_per_video']:.4g} | "
                  f"{sp['compute_pj_per_video'] * 1e-9:.4g} |",
                  f"| ours (exact) | {pv['counts']['mac']:.4g} | {ours_ac:.4g} | {pv['compute_mj']:.4g} |", "",
                  "Differences: the published method books dense MACs x mean input rate (ours counts each spike's "
                  "in-bounds fan-out, so border spikes cost less and padding taps nothing), prices the attention "
                  "analytically (ours counts coincident non-zero pairs of K^T V and Q (K^T V)), and ignores BN "
                  "(per-timestep affine: 1 mul + 1 add per element), PLIF updates (1 mul + 3 add per element-step), "
                  "residual adds, bias adds and the x0.125 scale, which ours prices.", "",
                  "Per layer (all videos; published AC vs our AC + spike_product, largest differences first):", "",
                  "| layer | published MAC | published AC | our MAC | our AC |", "|---|---:|---:|---:|---:|"]
        ours = per_layer.pivot_table(index="layer", columns="op_class", values="count", aggfunc="sum", fill_value=0)
        rows = []
        for name, d in spk.items():
            o_mac = float(ours.loc[name, "mac"]) if name in ours.index and "mac" in ours else 0.0
            o_ac = sum(float(ours.loc[name, c]) for c in ("ac", "spike_product") if name in ours.index and c in ours)
            rows.append((abs(d["ac"] - o_ac) + abs(d["mac"] - o_mac), name, d["mac"], d["ac"], o_mac, o_ac))
        for _, name, pm, pa, om, oa in [r for r in sorted(rows, key=lambda r: (-r[0], r[1])) if r[0] > 0][:12]:
            lines.append(f"| {name} | {pm:.4g} | {pa:.4g} | {om:.4g} | {oa:.4g} |")
        lines += [""]
    if s["uncounted_ops"]:
        lines += ["", "## Uncounted ops", ""] + [f"- {k}: {v['calls']} calls, {v['elements']} output elements"
                                                 for k, v in s["uncounted_ops"].items()]
    else:
        lines += ["", "Every executed op had a counting rule (no uncounted ops)."]
    lines += ["", "## Caveats", ""] + [f"- {c}" for c in s["caveats"]]
    if s["profile"]["caveats"]:
        lines.append(f"- Profile: {s['profile']['caveats']}")
    return "\n".join(lines) + "\n"


_HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--", "++", "**", "||")


def _hatch(ax) -> None:
    """Give each stacked series its own hatch as well as its colour, so the plot still reads in greyscale."""
    for i, container in enumerate(ax.containers):
        for patch in container:
            patch.set_hatch(_HATCHES[i % len(_HATCHES)])


def _plots(d: Path, per_layer: pd.DataFrame, s: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = {"Software": None}
    t = per_layer.pivot_table(index="layer", columns="op_class", values="energy_pj", aggfunc="sum", fill_value=0.0,
                              sort=False)
    t = t.reindex(list(dict.fromkeys(per_layer["layer"])))
    t = t.loc[t.sum(axis=1) > 0]  # layers that cost nothing (views, reshapes) are left out of the picture
    fig, ax = plt.subplots(figsize=(10, max(4.0, 0.19 * len(t) + 1.8)))
    _hatch((t.iloc[::-1] * 1e-6).plot.barh(stacked=True, ax=ax, width=0.8))  # first layer at the top
    ax.set_xlabel("energy (uJ, summed over all videos and views)")
    ax.set_ylabel("layer (network order, input at top)")
    ax.set_title(f"Energy per layer by op class ({s['profile']['name']})")
    ax.set_xlim(0, ax.get_xlim()[1] * 1.03)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(title="op class", loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(d / "energy_per_layer.png", dpi=120, metadata=meta)
    plt.close(fig)
    ts = per_layer[per_layer.timestep >= 0].pivot_table(index="timestep", columns="op_class", values="energy_pj",
                                                        aggfunc="sum", fill_value=0.0)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _hatch((ts * 1e-6).plot.bar(stacked=True, ax=ax, rot=0))
    ax.set_xlabel("timestep t (one video frame per step)")
    ax.set_ylabel("energy (uJ, all videos)")
    ax.set_title("Energy per timestep (ops after the time collapse not shown)")
    ax.legend(title="op class", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(d / "energy_per_timestep.png", dpi=120, metadata=meta)
    plt.close(fig)
    names = ["SNN"] + list(s["baselines"])
    vals = [s["per_clip_mean_compute_pj"] * 1e-9] + [b["compute_pj_per_clip"] * 1e-9 for b in s["baselines"].values()]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(names, vals, color=["C3"] + ["C0"] * (len(names) - 1))
    ax.set_yscale("log")
    ax.set_ylabel("compute energy per clip (mJ)")
    ax.set_title(f"SNN vs ANN baselines ({s['profile']['name']})")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(d / "snn_vs_baselines.png", dpi=120, metadata=meta)
    plt.close(fig)
