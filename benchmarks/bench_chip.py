"""Time the chip mapping of a model onto a chip (default: svformer_tiny and the paper's svformer_ucf101 on Loihi).

For each model: the mapping itself (derive the chip network from the plan, quantise, constraint check, split into
blocks, place), then the figures of one video (real spikes for the models that run here: ``--videos``; for
svformer_ucf101, expected counts from the published firing rates). Baseline, measured in the same run: one forward
pass of the same model on one clip (batch 1), so the ratio says how many forwards a mapping costs. Also prints the
placement objective of ours, row-major and random placements, and the mapping's cores, chips and per-video figures.

    OMP_NUM_THREADS=2 python benchmarks/bench_chip.py [--model svformer_tiny --model svformer_ucf101] [--chip loihi]
        [--rates shared/data/svformer_ucf101_published_rates.csv] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks._timing import best_of  # noqa: E402
from svformer_deploy.chip.arch import load_chip  # noqa: E402
from svformer_deploy.chip.report import figures_summary, mapping_summary  # noqa: E402
from svformer_deploy.chip.service import chip_figures, mapping_from_model, neuron_rates, rate_figures  # noqa: E402
from svformer_deploy.models import create_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append")
    ap.add_argument("--chip", default="loihi")
    ap.add_argument("--rates", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                           / "svformer_ucf101_published_rates.csv"))
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    chip = load_chip(args.chip)
    out = {}
    for name in args.model or ["svformer_tiny", "svformer_ucf101"]:
        torch.manual_seed(0)
        model = create_model(name, bn="shared").eval()
        c, T, H, W = model.config.input_shape
        clip = torch.randn(1, c, T, H, W)
        with torch.no_grad():
            fwd = best_of(lambda: model(clip), 1)
        t0 = time.perf_counter()
        m = mapping_from_model(model, chip, host_fallback=True)
        t_map = time.perf_counter() - t0
        t0 = time.perf_counter()
        if name == "svformer_ucf101":
            rates = {r["name"]: float(r["rate"]) for r in csv.DictReader(open(args.rates))}
            fig = rate_figures(m, neuron_rates(m.network.plan, rates), T)
            how = "published rates"
        else:
            from svformer_deploy.exporters import eval_batches

            fig = chip_figures(m, eval_batches("moving-digits", model.config, args.videos, batch_size=2))
            how = f"{args.videos} moving-digits videos (random weights)"
        t_fig = time.perf_counter() - t0
        s, f = mapping_summary(m), figures_summary(m, fig)
        print(f"{name} on {chip.name}: mapping {t_map:.1f} s = {t_map / fwd:.1f}x one forward ({fwd:.2f} s); "
              f"figures from {how} {t_fig:.1f} s")
        print(f"  {s['totals']['cores']} cores, {s['totals']['chips']} chips; placement hops: "
              + ", ".join(f"{k} {v:.4g}" for k, v in s["placement"]["hops_if_every_neuron_fires_once"].items()))
        e = f["energy_per_video_mJ"]
        print(f"  per video: chip {e['chip']:.4g} mJ + host {e['host']:.4g} mJ, {f['time_per_timestep_us']['mean']:.4g}"
              f" us per timestep, {f['average_power_mW']:.4g} mW")
        out[name] = {"mapping_s": t_map, "forward_s": fwd, "figures_s": t_fig, "totals": s["totals"],
                     "placement": s["placement"], "figures": f}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
