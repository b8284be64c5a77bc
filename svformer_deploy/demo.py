"""``svformer-deploy demo``: the project end to end on the built-in data, as a list of steps.

The first stage produces a checkpoint: it trains ``svformer_tiny`` on moving digits with :data:`DEMO_RECIPE`
(the recipe of the shipped checkpoint, in 13 epochs instead of 15) or, with ``pretrained=True``, uses the
shipped checkpoint. Then every registered step runs in order; a step is
``fn(checkpoint: Path, out_dir: Path) -> dict[str, Path]`` (the artefacts it wrote in its own folder ``out_dir``).
Other parts of the package add steps with :func:`register_demo_step` in a module listed in :data:`STEP_MODULES`.

When the ``export-lava`` step will run, the Lava side environment is built in the background from the start
(:func:`svformer_deploy.exporters.lava.sideenv.start_build`), so its download overlaps training; the Lava step
waits for it, and a demo that stops early (an error, Ctrl-C) stops the build, leaving nothing behind.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svformer_deploy._atomic import atomic_write_json
from svformer_deploy._outputs import Output
from svformer_deploy.errors import SVFormerDeployError

if TYPE_CHECKING:
    from svformer_deploy.exporters.lava.sideenv import BackgroundBuild

__all__ = ["DemoStep", "register_demo_step", "demo_steps", "run_demo", "DemoReport", "DEMO_RECIPE", "STEP_MODULES",
           "DEMO_OUTPUT"]

DemoStep = Callable[[Path, Path], dict[str, Path]]
DEMO_OUTPUT = Output("demo", "a demo folder (svformer-deploy demo)", "demo",
                     files=("demo.json", "checkpoint.pt", "train"))
"""What ``demo`` writes: a whole folder of ``demo.json``, the checkpoint (copied or trained in ``train/``) and one
folder per step (named in its marker when the demo starts)."""
_STEPS: dict[str, DemoStep] = {}

# Modules whose import registers demo steps, in the order their steps run.
STEP_MODULES: tuple[str, ...] = ("svformer_deploy.demo",)

# The training recipe of `svformer-deploy demo` (TrainConfig fields): the shipped checkpoint's, with 13 epochs instead
# of its 15 (97.5 % val top-1 at epoch 13, docs/speed.md; two epochs less to wait for).
DEMO_RECIPE: dict[str, Any] = {
    "model": "svformer_tiny", "data": "moving-digits", "epochs": 13, "seed": 0, "model_overrides": {"img_size": 32},
}


def register_demo_step(name: str) -> Callable[[DemoStep], DemoStep]:
    """Register ``fn(checkpoint, out_dir) -> {artefact name: path}`` as demo step ``name`` (runs in import order)."""

    def deco(fn: DemoStep) -> DemoStep:
        _STEPS[name] = fn
        return fn

    return deco


def demo_steps() -> dict[str, DemoStep]:
    """The registered steps, in run order (importing :data:`STEP_MODULES` first)."""
    import importlib

    for mod in STEP_MODULES:
        importlib.import_module(mod)
    return dict(_STEPS)


@register_demo_step("evaluate")
def _evaluate_step(checkpoint: Path, out_dir: Path) -> dict[str, Path]:
    """Validation accuracy of the checkpoint on moving digits (1 clip x 1 crop), confusion matrix."""
    from svformer_deploy import api

    return api.evaluate(checkpoint, "moving-digits", out=out_dir, progress=False).paths


DEMO_VIDEOS = 16
"""Validation videos each demo step verifies or reports on (one view each)."""


def _export_and_verify(checkpoint: Path, target: str, out: Path) -> dict[str, Path]:
    """Export ``checkpoint`` to ``target`` at ``out`` and verify it on real moving-digits clips
    (:func:`svformer_deploy.api.export_and_verify`); a verification that misses its goal is a step
    failure. Returns the bundle and its verification JSON."""
    from svformer_deploy import api
    from svformer_deploy.errors import VerificationError

    result = api.export_and_verify(checkpoint, target, out, num_videos=DEMO_VIDEOS)
    print(result.summary)
    if result.passed is False:
        raise VerificationError(f"{target} export {result.path} did not pass verification (see its report)")
    return {"export": result.path, "verification": result.report_path}


@register_demo_step("export-nir")
def _nir_step(checkpoint: Path, out_dir: Path) -> dict[str, Path]:
    """NIR bundle (neuromorphic partitions + declared host operations), verified through snntorch's NIR import."""
    return _export_and_verify(checkpoint, "nir", out_dir / "bundle")


@register_demo_step("export-onnx")
def _onnx_step(checkpoint: Path, out_dir: Path) -> dict[str, Path]:
    """The full model as ONNX (fixed T and input size, dynamic batch), verified with onnxruntime."""
    return _export_and_verify(checkpoint, "onnx", out_dir / "bundle")


@register_demo_step("export-lava")
def _lava_step(checkpoint: Path, out_dir: Path) -> dict[str, Path]:
    """Lava-DL netx partitions in Loihi fixed point, run in Lava's fixed_pt simulator (its Python 3.10 side
    environment is built on first use) and compared bit for bit with the package's fixed-point emulation."""
    return _export_and_verify(checkpoint, "lava", out_dir / "bundle")


@register_demo_step("map-loihi")
def _map_step(checkpoint: Path, out_dir: Path) -> dict[str, Path]:
    """The NIR bundle of the `export-nir` step mapped onto Loihi: cores, placement, time per timestep, energy and
    power per video from the real spikes of the demo's validation videos (exported here if that step did not run)."""
    from svformer_deploy import api

    bundle = out_dir.parent / "export-nir" / "bundle"
    if not (bundle / "manifest.json").is_file():
        bundle = _export_and_verify(checkpoint, "nir", out_dir / "bundle")["export"]
    result = api.map_bundle(bundle, "loihi", out_dir / "mapping", videos=4)
    t, f = result.summary["totals"], result.summary["figures"]
    e = f["energy_per_video_mJ"]
    print(f"Loihi: {t['cores']} cores on {t['chips']} chip(s); per video chip {e['chip']:.4g} mJ + host "
          f"{e['host']:.4g} mJ, {f['time_per_timestep_us']['mean']:.4g} us per timestep, "
          f"{f['average_power_mW']:.4g} mW; top-1 chip model {f['accuracy_of_the_chip_model']:.1%}, float model "
          f"{f['accuracy_of_the_float_model']:.1%} (same prediction on "
          f"{f['prediction_agreement_with_the_float_model']:.1%} of {f['videos']} videos)")
    return {"mapping": result.path, "report": result.path / "report.md"}


@register_demo_step("energy")
def _energy_step(checkpoint: Path, out_dir: Path) -> dict[str, Path]:
    """Per-layer, per-timestep operation counts and energy (45 nm default) against the ANN baselines."""
    from svformer_deploy import api

    return api.energy_report(checkpoint, videos=DEMO_VIDEOS, out=out_dir / "report").files


@register_demo_step("sparsity")
def _sparsity_step(checkpoint: Path, out_dir: Path) -> dict[str, Path]:
    """Firing rates per layer and timestep, per class, Q/K/V sparsity: PNG figures and a tidy CSV."""
    from svformer_deploy import api

    return api.sparsity(checkpoint, out_dir / "report", videos=DEMO_VIDEOS).files


@dataclass
class DemoReport:
    out_dir: Path
    checkpoint: Path
    artefacts: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def run_demo(out_dir: str | Path = "demo-out", *, pretrained: bool = False, force: bool = False,
             recipe: dict[str, Any] | None = None, steps: list[str] | None = None, progress: bool = True,
             echo: Callable[[str], None] = print) -> DemoReport:
    """Train (or load the shipped checkpoint), then run every demo step; write ``demo.json`` listing the artefacts.

    A step that fails with an :class:`SVFormerDeployError` is reported and the next step still runs.
    """
    from svformer_deploy._outputs import mark_output, refuse_existing
    from svformer_deploy._paths import user_path

    out_dir = user_path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        refuse_existing(out_dir, force, output=DEMO_OUTPUT)
        shutil.rmtree(out_dir)
    mark_output(out_dir, DEMO_OUTPUT, files=(*DEMO_OUTPUT.files, *demo_steps()))  # every step writes a folder
    report = DemoReport(out_dir, out_dir)
    t0 = time.perf_counter()
    lava_env = _start_lava_env(steps, echo)
    try:
        _run_steps(report, pretrained, recipe, steps, progress, echo)
    finally:
        if lava_env is not None:
            lava_env.cancel()  # a no-op once the Lava step used it; else stops it, leaving nothing behind
    if lava_env is not None and lava_env.seconds is not None:  # overlaps the steps above: not part of their sum
        report.seconds["lava-env build (background)"] = round(lava_env.seconds, 1)
        report.seconds["lava-env wait"] = round(lava_env.waited, 1)
    summary = {"checkpoint": str(report.checkpoint), "pretrained": pretrained, "artefacts": report.artefacts,
               "seconds": report.seconds, "failures": report.failures}
    atomic_write_json(out_dir / "demo.json", summary)
    echo(f"summary: {out_dir / 'demo.json'}")
    echo("seconds per step: " + ", ".join(f"{k} {v:.0f}" for k, v in report.seconds.items()))
    echo(f"demo finished in {time.perf_counter() - t0:.0f} s wall ({(time.perf_counter() - t0) / 60:.1f} min)")
    return report


def _start_lava_env(steps: list[str] | None, echo: Callable[[str], None]) -> BackgroundBuild | None:
    """Start building the Lava side environment in the background when the Lava step will run, so that its
    download overlaps training (:func:`svformer_deploy.exporters.lava.sideenv.start_build`); None otherwise."""
    if steps is not None and "export-lava" not in steps:
        return None
    from svformer_deploy.exporters.lava.sideenv import start_build

    return start_build(lambda msg: echo(f"[lava-env] {msg}"))


def _run_steps(report: DemoReport, pretrained: bool, recipe: dict[str, Any] | None, steps: list[str] | None,
               progress: bool, echo: Callable[[str], None]) -> None:
    """The checkpoint stage, then every selected step; fills ``report``."""
    from svformer_deploy import api
    from svformer_deploy.assets import default_checkpoint
    from svformer_deploy.training import TrainConfig

    out_dir = report.out_dir
    t0 = time.perf_counter()
    if pretrained:
        ckpt = out_dir / "checkpoint.pt"
        shutil.copyfile(default_checkpoint(), ckpt)
        report.artefacts["checkpoint"] = {"checkpoint": str(ckpt)}
        echo(f"[checkpoint] shipped svformer_tiny copied to {ckpt}")
    else:
        cfg = TrainConfig(**{**DEMO_RECIPE, **(recipe or {}), "out_dir": str(out_dir / "train")})
        echo(f"[train] {cfg.model} on {cfg.data}, {cfg.epochs} epochs (seed {cfg.seed}) -> {cfg.out_dir}")
        result = api.train(cfg, command="svformer-deploy demo", progress=progress,
                       on_epoch=lambda r: echo(f"  epoch {r['epoch']}: val top-1 {r['val_top1']:.2%} "
                                               f"({r['clips_per_second']} clips/s)"))
        ckpt = result.best
        report.artefacts["train"] = {"best": str(result.best), "last": str(result.last),
                                     "metrics_csv": str(result.out_dir / "metrics.csv"),
                                     "metrics_json": str(result.out_dir / "metrics.json")}
    report.checkpoint = ckpt
    report.seconds["checkpoint"] = round(time.perf_counter() - t0, 1)
    for name, fn in demo_steps().items():
        if steps is not None and name not in steps:
            continue
        t = time.perf_counter()
        try:
            paths = fn(ckpt, out_dir / name)
        except SVFormerDeployError as err:
            report.failures[name] = str(err)
            echo(f"[{name}] FAILED: {err}")
            continue
        finally:
            report.seconds[name] = round(time.perf_counter() - t, 1)
        report.artefacts[name] = {k: str(v) for k, v in paths.items()}
        echo(f"[{name}] ({report.seconds[name]} s)")
        for key, path in paths.items():
            echo(f"  {key}: {path}")
