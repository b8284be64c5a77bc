"""Time NIR and ONNX export and verification of a model (default: the paper's svformer_ucf101 with shared BN).

Baseline, measured in the same run: writing the same model as a checkpoint (``save_checkpoint``), i.e. the cost
of serialising its weights once. Prints seconds and the ratio to that baseline.

The model is built with random weights (``--seed``), ``--num-classes`` classes and ``--bn`` (``shared`` by
default: the exportable form; ``per_timestep`` exports NIR with ``approximate_bn``). ``--calibrate N`` first
sets every BatchNorm's statistics to those of N moving-digits training batches of 2 clips at the model's size
(precise BN), so the neurons fire at data-driven rates instead of those of the initial statistics. With
``--verify-clips N`` each export is also verified on N moving-digits validation clips rendered at the model's
size (NIR: spike agreement of every neuron-step and top-1 agreement; ONNX: onnxruntime logits), ``--chunk``
clips per call with the running figures printed after each, and those wall times and figures are printed too.
``--json PATH`` writes every figure.

    OMP_NUM_THREADS=2 python benchmarks/bench_export.py [--model svformer_ucf101] [--bn shared] [--num-classes 10]
        [--calibrate 4] [--verify-clips 1] [--threads 2] [--repeat 1] [--skip-onnx] [--json out.json] [--lava]

``--lava`` adds the Lava rows on the same model (shared BN: netx cannot hold per-timestep BN): the export
itself, and its verification in Lava (``fixed_pt``) of ``--lava-clips`` random clips through every partition, in
``--lava-workers`` parallel runner processes (Lava time, then the whole verification: spike recording, Lava,
emulation and comparison), each partition on the window ``--lava-crop`` chooses (``auto`` (default), ``off``
for full frame, or an output window size; see ``svformer_deploy/exporters/lava/crop.py``); the window of every
partition and its Lava time are printed.

    OMP_NUM_THREADS=2 python benchmarks/bench_export.py --lava --calibrate 1 --skip-onnx --lava-clips 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from _timing import best_of


def build_model(name: str, bn: str, num_classes: int, seed: int, calibrate: int):  # noqa: ANN201
    """The benchmarked model: random weights, optionally with BN statistics calibrated on moving digits."""
    from svformer_deploy.data import build_dataset
    from svformer_deploy.models import create_model
    from svformer_deploy.training import precise_bn

    torch.manual_seed(seed)
    model = create_model(name, bn=bn, num_classes=num_classes)
    if calibrate:
        ds = build_dataset("moving-digits", model.config, split="train", seed=seed, num_clips=2 * calibrate)
        batches = (torch.stack([ds[2 * k][0], ds[2 * k + 1][0]]) for k in range(calibrate))
        precise_bn(model, batches)
    return model.eval()


def timed(fn):  # noqa: ANN001, ANN201
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def merge(reports: list[dict]) -> dict:
    """One verification summary over reports of consecutive clip chunks: counts summed, agreement weighted by
    clips, verdict ``failed`` if any chunk failed, else ``exact`` if all were exact, else ``threshold``."""
    verdicts = {r["verdict"] for r in reports}
    out = {"verdict": "failed" if "failed" in verdicts else "exact" if verdicts == {"exact"} else "threshold",
           "clips": sum(r["clips"] for r in reports),
           "logits_max_abs_diff": max(r["logits_max_abs_diff"] for r in reports)}
    out["top1_agreement"] = sum(r["top1_agreement"] * r["clips"] for r in reports) / out["clips"]
    out["clips_top1_differs"] = round(out["clips"] * (1 - out["top1_agreement"]))
    if "neuron_steps" in reports[0]:
        n = sum(r["neuron_steps"] for r in reports)
        flips = sum(r["neuron_steps"] - round(r["spike_agreement"] * r["neuron_steps"]) for r in reports)
        out.update(neuron_steps=n, neuron_steps_flipped=flips, spike_agreement=1 - flips / n,
                   disagree_at_ties=sum(r["disagree_at_ties"] for r in reports),
                   first_divergences=[dict(d, batch_first_clip=d["batch_first_clip"] + sum(
                       q["clips"] for q in reports[:i])) for i, r in enumerate(reports) for d in r["first_divergences"]])
    return out


def verify_in_chunks(exp, path: Path, model, batches: list, chunk: int, log=None) -> tuple[dict, float]:  # noqa: ANN001
    """Verify ``batches`` ``chunk`` at a time (each chunk's report merged into a running summary passed to
    ``log``), so a long run shows its figures as it goes. Returns (summary, seconds)."""
    reports, t0 = [], time.perf_counter()
    for i in range(0, len(batches), chunk):
        reports.append(exp.verify(path, model, batches[i:i + chunk], data_desc="moving-digits"))
        if log is not None:
            log(merge(reports), time.perf_counter() - t0)
    return merge(reports), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="svformer_ucf101")
    ap.add_argument("--bn", default="shared", choices=["shared", "per_timestep"])
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibrate", type=int, default=0, help="precise-BN batches of 2 moving-digits clips")
    ap.add_argument("--verify-clips", type=int, default=0, help="verify each export on this many clips")
    ap.add_argument("--chunk", type=int, default=4, help="clips verified per call (progress is printed after each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--lava", action="store_true", help="add the Lava export and verification rows")
    ap.add_argument("--lava-clips", type=int, default=1)
    ap.add_argument("--lava-workers", type=int, default=2)
    ap.add_argument("--lava-crop", default="auto", help="'auto', 'off' (full frame) or an output window size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from svformer_deploy.exporters import eval_batches
    from svformer_deploy.exporters.nir import EXPORTER as NIR
    from svformer_deploy.exporters.onnx_export import EXPORTER as ONNX
    from svformer_deploy.models import save_checkpoint

    model, calib_s = timed(lambda: build_model(args.model, args.bn, args.num_classes, args.seed, args.calibrate))
    n_params = sum(p.numel() for p in model.parameters())
    approx = model.config.bn == "per_timestep"
    targets = [("NIR bundle" + (" (--approximate-bn)" if approx else ""), NIR, "bundle")]
    if not args.skip_onnx:
        targets.append(("ONNX bundle", ONNX, "onnx"))
    batches = list(eval_batches("moving-digits", model.config, args.verify_clips, batch_size=1)
                   ) if args.verify_clips else []
    result = {"model": args.model, "bn": args.bn, "num_classes": args.num_classes, "parameters": n_params,
              "threads": args.threads, "calibrate_batches": args.calibrate, "calibrate_seconds": calib_s,
              "verify_clips": args.verify_clips, "rows": []}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        base = best_of(lambda: save_checkpoint(d / "m.pt", model), args.repeat)
        rows = [("checkpoint (baseline)", base, d / "m.pt", None)]
        for name, exp, file in targets:
            sec = best_of(lambda: exp.export(model, d / file, checkpoint_sha256="0" * 64, approximate_bn=approx,
                                             force=True), args.repeat)
            report, vsec = (verify_in_chunks(exp, d / file, model, batches, args.chunk, log=lambda r, t: print(
                f"  {name}: {r['clips']} clip(s) verified in {t:.0f} s: {r['verdict']}, top-1 agreement "
                f"{100 * r['top1_agreement']:.1f}%" + (f", {r['neuron_steps_flipped']:,} of {r['neuron_steps']:,} "
                                                       "neuron-steps flipped" if "neuron_steps" in r else ""),
                flush=True)) if batches else (None, None))
            rows.append((name, sec, d / file, (report, vsec)))
        if args.lava:
            lava_rows, result["lava_verification"] = _lava_rows(args, d, model)
            rows += [(name, sec, path, None) for name, sec, path in lava_rows]
        print(f"{args.model} ({args.bn} BN, {args.num_classes} classes): {n_params:,} parameters, "
              f"T={model.config.num_frames}, {model.config.img_size}px, {args.threads} thread(s), best of "
              f"{args.repeat}" + (f", BN calibrated on {args.calibrate} x 2 clips" if args.calibrate else ""))
        print(f"{'export':32s} {'seconds':>8s} {'x baseline':>10s} {'size MB':>8s} {'verify s':>9s}  verification")
        for name, sec, path, ver in rows:
            size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size
            row = {"export": name, "seconds": sec, "x_baseline": sec / base, "size_mb": size / 1e6}
            summary = ""
            if ver is not None and ver[0] is not None:
                r, vsec = ver
                row.update(verify_seconds=vsec, verdict=r["verdict"], top1_agreement=r["top1_agreement"],
                           logits_max_abs_diff=r["logits_max_abs_diff"], clips=r["clips"])
                summary = f"{r['verdict']}, top-1 agreement {100 * r['top1_agreement']:.1f}% on {r['clips']} clip(s)"
                if "neuron_steps" in r:
                    row.update({k: r[k] for k in ("neuron_steps", "neuron_steps_flipped", "spike_agreement",
                                                  "disagree_at_ties", "first_divergences")})
                    summary += f", {r['neuron_steps_flipped']:,} of {r['neuron_steps']:,} neuron-steps flipped"
            result["rows"].append(row)
            vs = f"{ver[1]:9.1f}" if ver is not None and ver[1] is not None else f"{'':9s}"
            print(f"{name:32s} {sec:8.2f} {sec / base:10.1f} {size / 1e6:8.1f} {vs}  {summary}")
        for row in result["rows"][1:]:
            if "bundle" not in row["export"]:  # the goal is for writing an export, not for running it
                continue
            print(f"goal {row['export']} <= 20 s: {'met' if row['seconds'] <= 20.0 else 'NOT met'} "
                  f"({row['seconds']:.1f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


def _lava_rows(args, d: Path, model) -> tuple[list[tuple[str, float, Path]], dict]:  # noqa: ANN001
    """(name, seconds, path) of the Lava export and of its verification in Lava (see the module docstring), and
    the verification's per-partition figures."""
    import time

    from svformer_deploy.exporters.lava.export import export_lava
    from svformer_deploy.exporters.lava.sideenv import lava_python

    if model.config.bn != "shared":
        raise SystemExit("--lava needs --bn shared (netx cannot hold per-timestep BatchNorm)")
    python = lava_python(print)
    sec = best_of(lambda: export_lava(model, d / "lava", checkpoint_sha256="0" * 64, force=True), args.repeat)
    from svformer_deploy.exporters.lava.verify import verify_lava

    g = torch.Generator().manual_seed(1)
    c = model.config
    clips = torch.randn(args.lava_clips, 3, c.num_frames, c.img_size, c.img_size, generator=g)
    t0 = time.perf_counter()
    crop = None if args.lava_crop == "off" else args.lava_crop
    report = verify_lava(d / "lava", clips=clips, lava_clips=args.lava_clips, workers=args.lava_workers,
                         crop=crop, python=python, write=False, progress=print)
    total = time.perf_counter() - t0
    for name, r in report["partitions"].items():
        t = r["lava_timing"]
        print(f"  {name:45s} {'bit-exact' if r['bit_exact'] else 'MISMATCH'}  {r['lava_seconds']:6.1f} s in Lava "
              f"({t['seconds_per_step'] * 1e3:.0f} ms/step)  {r['neurons']:,} of {r['neurons_full_frame']:,} neurons: "
              f"{r['checked']['description']}")
    print(f"Lava: {len(report['partitions'])} partitions ({report['partitions_cropped']} on a crop, setting "
          f"{report['crop']}), all bit-exact: {report['all_bit_exact']}, {report['inputs']['lava_clips']} clip(s), "
          f"{report['lava_workers']} worker(s), {report['lava_seconds']} s in Lava, {total:.1f} s in all")
    tag = f"{args.lava_clips} clip x {args.lava_workers} workers, crop {report['crop']}"
    figures = {k: report[k] for k in ("all_bit_exact", "crop", "partitions_cropped", "lava_seconds", "lava_workers")}
    figures.update(verify_seconds=total, clips=report["inputs"]["lava_clips"], partitions={
        n: {k: r[k] for k in ("bit_exact", "checked", "neurons", "neurons_full_frame", "lava_seconds", "lava_timing",
                              "lava_vs_emulation_mismatches", "crop_vs_full_frame_emulation_mismatches")}
        for n, r in report["partitions"].items()})
    return [("Lava bundle (shared BN)", sec, d / "lava"),
            (f"Lava runs, {tag}", report["lava_seconds"], d / "lava"),
            (f"Lava verify, {tag}", total, d / "lava")], figures


if __name__ == "__main__":
    main()
