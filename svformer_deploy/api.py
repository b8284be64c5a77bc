"""The service layer: one typed function per capability, called by the CLI (``cli/``) and the demo (``demo.py``).

Each function takes typed arguments, resolves every user path once (:mod:`svformer_deploy._paths`), calls the
library and returns a typed result; it prints nothing and never exits. Bad input raises an
:class:`~svformer_deploy.errors.SVFormerDeployError` naming the problem and the fix (the CLI prints it as one
line). Heavy dependencies are imported inside the functions, so importing this module stays light.

==================  ==========================================================================================
function            does
==================  ==========================================================================================
export_and_verify   checkpoint -> export bundle of a target -> verification on real clips (:class:`ExportResult`)
verify              re-verify an existing bundle, optionally in a second runtime (:class:`ExportResult`)
evaluate            top-1/top-5 over clips x crops views; eval.json, confusion.png, predictions.csv
energy_report       exact op counts and energy of a checkpoint on real videos; report folder
energy_price        energy of a registered model from stated firing rates (no checkpoint, no data)
sparsity            firing rates and sparsity figures of a checkpoint on real videos
train               train a registered model (DDP under torchrun); checkpoints and metrics
finetune            distil a checkpoint into a shared-BN and/or spike-budget student; report (and budget curve)
==================  ==========================================================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svformer_deploy._paths import data_spec, read_user_text, user_path
from svformer_deploy.errors import EnergyError

if TYPE_CHECKING:  # pragma: no cover - types only
    from svformer_deploy.training.finetune import FinetuneConfig, FinetuneResult
    from svformer_deploy.analysis.sparsity import SparsityAnalysis
    from svformer_deploy.exporters import ExportResult
    from svformer_deploy.training import TrainConfig, TrainResult

__all__ = ["export_and_verify", "verify", "evaluate", "EvalOutcome", "energy_report", "EnergyReportOutcome",
           "energy_price", "PriceOutcome", "parse_views", "sparsity", "SparsityOutcome", "train", "finetune",
           "DEFAULT_BASELINES"]

PathLike = str | os.PathLike
BatchWrapper = Callable[[Iterable[Any]], Iterable[Any]]
Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]

DEFAULT_BASELINES: tuple[str, ...] = ("svformer-ann",)
"""ANN baselines the sparsity analysis compares with when none are named."""


def _profile_spec(profile: str | PathLike) -> str:
    """An energy profile as the energy package takes it: a profile file as its resolved path, else the name."""
    return str(user_path(profile)) if Path(profile).is_file() else str(profile)


# ------------------------------------------------------------------------------------------------ export, verify
def export_and_verify(checkpoint: PathLike, target: str, out: PathLike, *, force: bool = False,
                      approximate_bn: bool = False, data: PathLike = "moving-digits", num_videos: int | None = 32,
                      wrap_batches: BatchWrapper | None = None) -> "ExportResult":
    """Export ``checkpoint`` to ``target`` (see :func:`~svformer_deploy.exporters.list_targets`) as a bundle at
    ``out``, then verify it against the checkpoint's model on ``num_videos`` validation videos of ``data`` (one
    view each). ``result.passed`` is False when the verification missed its goal."""
    from svformer_deploy.exporters import export_and_verify as _export_and_verify

    return _export_and_verify(user_path(checkpoint), target, user_path(out), force=force,
                              approximate_bn=approximate_bn, data=data_spec(data), num_videos=num_videos,
                              wrap_batches=wrap_batches)


def verify(bundle: PathLike, *, target: str | None = None, checkpoint: PathLike | None = None,
           data: PathLike = "moving-digits", num_videos: int | None = 32,
           wrap_batches: BatchWrapper | None = None) -> "ExportResult":
    """Re-verify an existing bundle with ``target``'s verifier (default: the target that wrote it; e.g.
    ``nir-norse`` for a second runtime of a NIR bundle) against its source checkpoint (``checkpoint`` or the path
    recorded at export; its SHA-256, config and class names must match) on real clips."""
    from svformer_deploy.exporters import source_checkpoint, verify_export

    bundle = user_path(bundle)
    model, _ = source_checkpoint(bundle, None if checkpoint is None else user_path(checkpoint))
    return verify_export(bundle, target=target, model=model, data=data_spec(data), num_videos=num_videos,
                         wrap_batches=wrap_batches)


# ---------------------------------------------------------------------------------------------------- evaluate
@dataclass(frozen=True)
class EvalOutcome:
    """An evaluation: the ``eval.json`` content (``top1``, ``top5``, ``per_class``, ...) and the written files
    (``json``, ``confusion_png``, ``predictions_csv``)."""

    report: dict[str, Any]
    paths: dict[str, Path]

    @property
    def top1(self) -> float:
        return float(self.report["top1"])

    @property
    def top5(self) -> float:
        return float(self.report["top5"])


def evaluate(checkpoint: PathLike, data: PathLike | None = None, *, out: PathLike = "runs/eval",
             split: str = "val", clips: int = 1, crops: int = 1, num_videos: int | None = None,
             device: str = "cpu", progress: bool = True, force: bool = False) -> EvalOutcome:
    """Top-1/top-5 and per-class accuracy of ``checkpoint`` on ``data`` (default: the data it was trained on),
    softmax summed over ``clips x crops`` views per video; writes eval.json, confusion.png, predictions.csv."""
    from svformer_deploy.training.evaluate import evaluate_checkpoint

    report, paths = evaluate_checkpoint(user_path(checkpoint), None if data is None else data_spec(data),
                                        out_dir=user_path(out), split=split, clips=clips, crops=crops,
                                        num_videos=num_videos, device=device, progress=progress, force=force)
    return EvalOutcome(report, paths)


# ------------------------------------------------------------------------------------------------------ energy
REPORT_FILES = ("report.md", "summary.json", "per_layer.csv", "per_video.csv")


@dataclass(frozen=True)
class EnergyReportOutcome:
    """An energy report folder, its main files (``report.md``, ``summary.json``, ``per_layer.csv``,
    ``per_video.csv``; plots beside them) and the summary written to ``summary.json``."""

    out_dir: Path
    files: dict[str, Path]
    summary: dict[str, Any]


def energy_report(checkpoint: PathLike, *, data: PathLike = "moving-digits", videos: int = 4, clips: int = 1,
                  crops: int = 1, profile: str | PathLike = "45nm-fp32", baselines: Sequence[str] | None = None,
                  fold_bn: bool = False, accuracy: PathLike | None = None, out: PathLike = "energy_report",
                  force: bool = False, progress: Progress | None = None) -> EnergyReportOutcome:
    """Count every operation of ``checkpoint`` on ``videos`` real videos (``clips x crops`` views each), price
    it under ``profile`` (a registered name or a YAML/JSON file) beside ``baselines`` (default: all), and write
    the report folder ``out`` (see :mod:`svformer_deploy.energy.report`). ``progress(iterable, total,
    description)`` may wrap the video loop (as in :func:`sparsity`)."""
    from svformer_deploy._atomic import refuse_existing
    from svformer_deploy.energy.report import ReportOptions, write_report
    from svformer_deploy.models.checkpoint import require_checkpoint

    require_checkpoint(user_path(checkpoint))  # the message every command gives
    refuse_existing(user_path(out), force, inputs=(user_path(checkpoint),), folder=True,  # before the counting
                    kind="energy-report")
    opts = ReportOptions(checkpoint=user_path(checkpoint), data=data_spec(data), videos=videos, clips=clips,
                         crops=crops, profile=_profile_spec(profile), fold_bn=fold_bn,
                         accuracy=None if accuracy is None else user_path(accuracy), out=user_path(out), force=force,
                         **({"baselines": tuple(baselines)} if baselines else {}))
    out_dir, summary = write_report(opts, progress=progress)
    return EnergyReportOutcome(out_dir, {name: out_dir / name for name in REPORT_FILES}, summary)


@dataclass(frozen=True)
class PriceOutcome:
    """A what-if price: the JSON-ready summary, its markdown rendering, and where the JSON was written (if asked)."""

    summary: dict[str, Any]
    markdown: str
    json_path: Path | None = None


def parse_views(views: Sequence[str]) -> list[tuple[int, int]]:
    """``["1x1", "5x3"]`` -> ``[(1, 1), (5, 3)]`` (CLIPSxCROPS); anything else is an :class:`EnergyError`."""
    parsed = []
    for v in views:
        a, _, b = v.lower().partition("x")
        if not (a.isdigit() and b.isdigit()):
            raise EnergyError(f"--views {v!r}: write CLIPSxCROPS, e.g. 5x3")
        parsed.append((int(a), int(b)))
    return parsed


def _is_price_summary(path: Path) -> bool:
    """Whether ``path`` is a JSON summary written by ``energy price`` (``per_view`` and ``per_video`` tables;
    ``per_clip`` in files written before the key was renamed)."""
    import json

    try:
        d = json.loads(read_user_text(path))
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "per_video" in d and ("per_view" in d or "per_clip" in d)


def energy_price(model: str, rates: PathLike | Mapping[str, float], *, profile: str | PathLike = "45nm-fp32",
                 views: Sequence[tuple[int, int]] = ((1, 1), (5, 3)), json_out: PathLike | None = None,
                 ) -> PriceOutcome:
    """Price registered model ``model`` from stated firing ``rates`` (a ``name,rate`` CSV or a mapping) under
    every convention and the memory model, per clip and per video for each (clips, crops) in ``views``
    (:func:`svformer_deploy.energy.price.price_rates`); write the summary as JSON to ``json_out`` if given."""
    from svformer_deploy._atomic import atomic_write_json, refuse_existing_file
    from svformer_deploy.energy.price import price_markdown, price_rates

    if not isinstance(rates, Mapping):
        rates = user_path(rates)
    if json_out is not None:  # an earlier price summary is replaced, never another file
        refuse_existing_file(user_path(json_out), True, kind="`energy price` summary", is_kind=_is_price_summary,
                             inputs=() if isinstance(rates, Mapping) else (rates,))
    summary = price_rates(model, rates, _profile_spec(profile), list(views))
    path = None
    if json_out is not None:
        path = atomic_write_json(user_path(json_out), dict(summary))
    return PriceOutcome(summary, price_markdown(summary), path)


# ---------------------------------------------------------------------------------------------------- sparsity
@dataclass(frozen=True)
class SparsityOutcome:
    """A sparsity analysis (firing rates per layer, timestep, video; predictions; optional energy) and the
    figures and tables written to ``out_dir``."""

    analysis: "SparsityAnalysis"
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)


def sparsity(checkpoint: PathLike, out: PathLike, *, data: PathLike = "moving-digits", videos: int = 20,
             clips: int = 1, crops: int = 1, energy: bool = True, profile: str | PathLike | None = None,
             baselines: Sequence[str] | None = None, force: bool = False,
             progress: Progress | None = None) -> SparsityOutcome:
    """Spike sparsity of ``checkpoint`` on ``videos`` real videos of ``data`` (``clips x crops`` views each):
    PNG figures and a tidy CSV (layer, timestep, video, rate) in ``out``; with ``energy`` also the ops/energy
    breakdown against ``baselines`` (default: the ANN twin). ``progress(iterable, total, description)`` may wrap
    the video loops."""
    from svformer_deploy._atomic import refuse_existing, refuse_file_in_the_way
    from svformer_deploy.analysis.report import write_sparsity_report
    from svformer_deploy.analysis.sparsity import analyse_checkpoint

    out = user_path(out)
    refuse_file_in_the_way(out)
    refuse_existing(out, force, inputs=(user_path(checkpoint),), folder=True,  # before the analysis, not after it
                    kind="sparsity-report")
    analysis = analyse_checkpoint(user_path(checkpoint), data_spec(data), num_videos=videos, clips=clips,
                                  crops=crops, energy=energy,
                                  profile=None if profile is None else _profile_spec(profile),
                                  baselines=tuple(baselines) if baselines else DEFAULT_BASELINES, progress=progress)
    return SparsityOutcome(analysis, out, write_sparsity_report(analysis, out, force=force))


# ------------------------------------------------------------------------------------------------------- train
def train(config: "TrainConfig", *, resume: PathLike | None = None, force: bool = False, command: str | None = None,
          progress: bool = True, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> "TrainResult":
    """Train ``config.model`` on ``config.data`` (:class:`~svformer_deploy.training.TrainConfig`); write last.pt,
    best.pt, metrics.csv and metrics.json to ``config.out_dir``. ``command`` is stored in the checkpoints;
    ``on_epoch`` receives each epoch's metrics row."""
    from svformer_deploy.training import train as _train

    config = replace(config, out_dir=str(user_path(config.out_dir)), data=data_spec(config.data))
    return _train(config, resume=None if resume is None else user_path(resume), force=force, command=command,
                  progress=progress, on_epoch=on_epoch)


# ---------------------------------------------------------------------------------------------------- finetune
def finetune(checkpoint: PathLike, config: "FinetuneConfig", *, budgets: Sequence[float] = (), resume: bool = False,
             force: bool = False, command: str | None = None, progress: bool = True,
             on_epoch: Callable[[dict[str, Any]], None] | None = None,
             ) -> "tuple[list[FinetuneResult], Path | None]":
    """Distil ``checkpoint`` into a student (:class:`~svformer_deploy.training.finetune.FinetuneConfig`): shared BN
    from the time-averaged map (``config.bn == "shared"``) and/or one run per spike budget in ``budgets``.
    Returns the runs and, with budgets, the accuracy-vs-energy curve CSV (its PNG beside it), else None."""
    from svformer_deploy.training.finetune import finetune as _finetune
    from svformer_deploy.training.finetune import finetune_budgets

    checkpoint = user_path(checkpoint)
    config = replace(config, out_dir=str(user_path(config.out_dir)), data=data_spec(config.data))
    if budgets:
        return finetune_budgets(checkpoint, config, list(budgets), resume=resume, force=force, command=command,
                                progress=progress, on_epoch=on_epoch)
    return [_finetune(checkpoint, config, resume=resume, force=force, command=command, progress=progress,
                      on_epoch=on_epoch)], None
