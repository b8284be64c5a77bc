"""Time NIR and ONNX export of a model (default: the paper's svformer_ucf101, 13.8 M parameters).

Baseline, measured in the same run: writing the same model as a checkpoint (``save_checkpoint``), i.e. the cost
of serialising its weights once. Prints seconds and the ratio to that baseline. svformer_ucf101 has per-timestep
BatchNorm, so its NIR export uses ``approximate_bn`` (the lowering work is the same as for a shared-BN model).

    OMP_NUM_THREADS=2 python benchmarks/bench_export.py [--model svformer_ucf101] [--threads 2] [--repeat 1]

``--lava`` adds the Lava rows on the same model with shared BN and 10 classes (random weights; netx cannot hold
per-timestep BN): the export itself, and its verification in Lava (``fixed_pt``) of ``--lava-clips`` random
clips through every partition, in ``--lava-workers`` parallel runner processes (Lava time, then the whole
verification: spike recording, Lava, emulation and comparison).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from _timing import best_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="svformer_ucf101")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--lava", action="store_true", help="add the Lava export and verification rows")
    ap.add_argument("--lava-clips", type=int, default=1)
    ap.add_argument("--lava-workers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from svformer_deploy.exporters.nir_export import export_nir
    from svformer_deploy.exporters.onnx_export import export_onnx
    from svformer_deploy.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model(args.model).eval()
    n_params = sum(p.numel() for p in model.parameters())
    approx = model.config.bn == "per_timestep"
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        rows = [("checkpoint (baseline)", best_of(lambda: save_checkpoint(d / "m.pt", model), args.repeat), d / "m.pt")]
        rows.append(("NIR bundle" + (" (--approximate-bn)" if approx else ""), best_of(
            lambda: export_nir(model, d / "bundle", checkpoint_sha256="0" * 64, approximate_bn=approx, force=True),
            args.repeat), d / "bundle"))
        if not args.skip_onnx:
            rows.append(("ONNX bundle", best_of(lambda: export_onnx(model, d / "onnx", checkpoint_sha256="0" * 64,
                                                            force=True), args.repeat), d / "onnx"))
        if args.lava:
            rows += _lava_rows(args, d)
        base = rows[0][1]
        print(f"{args.model}: {n_params:,} parameters, T={model.config.num_frames}, {model.config.img_size}px, "
              f"{args.threads} thread(s), best of {args.repeat}")
        print(f"{'export':32s} {'seconds':>8s} {'x baseline':>10s} {'size MB':>8s}")
        for name, sec, path in rows:
            size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size
            print(f"{name:32s} {sec:8.2f} {sec / base:10.1f} {size / 1e6:8.1f}")
        goal = rows[1][1] <= 20.0
        print(f"goal NIR export <= 20 s: {'met' if goal else 'NOT met'} ({rows[1][1]:.1f} s)")


def _lava_rows(args, d: Path) -> list[tuple[str, float, Path]]:
    """(name, seconds, path) of the Lava export and of its verification in Lava (see the module docstring)."""
    import time

    from svformer_deploy.exporters.lava.export import export_lava
    from svformer_deploy.exporters.lava.sideenv import lava_python
    from svformer_deploy.models import create_model

    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10, bn="shared").eval()
    python = lava_python(print)
    sec = best_of(lambda: export_lava(model, d / "lava", checkpoint_sha256="0" * 64, force=True), args.repeat)
    from svformer_deploy.exporters.lava.verify import verify_lava

    g = torch.Generator().manual_seed(1)
    c = model.config
    clips = torch.randn(args.lava_clips, 3, c.num_frames, c.img_size, c.img_size, generator=g)
    t0 = time.perf_counter()
    report = verify_lava(d / "lava", clips=clips, lava_clips=args.lava_clips, workers=args.lava_workers,
                         python=python, write=False)
    total = time.perf_counter() - t0
    print(f"Lava: {len(report['partitions'])} partitions, all bit-exact: {report['all_bit_exact']}, "
          f"{report['inputs']['lava_clips']} clip(s), {report['lava_workers']} worker(s)")
    print(f"goal Lava export <= 20 s: {'met' if sec <= 20.0 else 'NOT met'} ({sec:.1f} s)")
    tag = f"{args.lava_clips} clip x {args.lava_workers} workers"
    return [("Lava bundle (shared BN)", sec, d / "lava"),
            (f"Lava runs, {tag}", report["lava_seconds"], d / "lava"),
            (f"Lava verify, {tag}", total, d / "lava")]


if __name__ == "__main__":
    main()
