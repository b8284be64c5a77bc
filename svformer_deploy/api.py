"""The service layer: one typed function per capability, called by the CLI (``cli/``) and the demo (``demo.py``).

Each function takes typed arguments, resolves every user path once, here (:func:`~svformer_deploy._paths.user_path`,
:func:`~svformer_deploy.data.data_spec`; the library below takes resolved paths as they are), calls the library
and returns a typed result; it prints nothing and never exits. Bad input raises an
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
map_bundle          a NIR or Lava bundle onto a chip's cores and chips; time, energy, power from real spikes
verify_mapping      a chip mapping checked against the SANA-FE architecture simulator
import_official     an official SVFormer checkpoint as a self-describing svformer-deploy checkpoint
==================  ==========================================================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svformer_deploy._paths import read_user_text, user_path
from svformer_deploy.errors import EnergyError

if TYPE_CHECKING:  # pragma: no cover - types only
    from svformer_deploy.training.finetune import FinetuneConfig, FinetuneResult
    from svformer_deploy.analysis.sparsity import SparsityAnalysis
    from svformer_deploy.exporters import ExportResult
    from svformer_deploy.training import TrainConfig, TrainResult

__all__ = ["export_and_verify", "verify", "evaluate", "EvalOutcome", "energy_report", "EnergyReportOutcome",
           "energy_price", "PriceOutcome", "parse_views", "sparsity", "SparsityOutcome", "train", "finetune",
           "import_official", "ImportOutcome", "DEFAULT_BASELINES", "map_bundle", "MapOutcome", "verify_mapping",
           "MappingCheck"]

PathLike = str | os.PathLike
BatchWrapper = Callable[[Iterable[Any]], Iterable[Any]]
Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]

DEFAULT_BASELINES: tuple[str, ...] = ("svformer-ann",)
"""ANN baselines the sparsity analysis compares with when none are named."""


def _data(spec: PathLike) -> str:
    """A ``--data`` argument resolved (:func:`svformer_deploy.data.data_spec`; imported here, not at the top, as
    the data package loads torch)."""
    from svformer_deploy.data import data_spec

    return data_spec(spec)


def _profile_spec(profile: str | PathLike) -> str:
    """An energy profile as the energy package takes it: a profile file as its resolved path, else the name."""
    return str(user_path(profile)) if Path(profile).is_file() else str(profile)


# ------------------------------------------------------------------------------------------------ export, verify
def export_and_verify(checkpoint: PathLike, target: str, out: PathLike | None = None, *, force: bool = False,
                      approximate_bn: bool = False, data: PathLike = "moving-digits", num_videos: int | None = 32,
                      wrap_batches: BatchWrapper | None = None) -> "ExportResult":
    """Export ``checkpoint`` to ``target`` (see :func:`~svformer_deploy.exporters.list_targets`) as a bundle at
    ``out`` (default: beside the checkpoint, ``<checkpoint name>-<target>``,
    :func:`svformer_deploy._outputs.default_out`), then verify it against the checkpoint's model on
    ``num_videos`` validation videos of ``data`` (one view each). ``result.passed`` is False when the verification missed its goal."""
    from svformer_deploy._outputs import default_out
    from svformer_deploy.exporters import export_and_verify as _export_and_verify

    checkpoint = user_path(checkpoint)
    out = default_out(checkpoint, target) if out is None else user_path(out)
    return _export_and_verify(checkpoint, target, out, force=force,
                              approximate_bn=approximate_bn, data=_data(data), num_videos=num_videos,
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
    return verify_export(bundle, target=target, model=model, data=_data(data), num_videos=num_videos,
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

    report, paths = evaluate_checkpoint(user_path(checkpoint), None if data is None else _data(data),
                                        out_dir=user_path(out), split=split, clips=clips, crops=crops,
                                        num_videos=num_videos, device=device, progress=progress, force=force)
    return EvalOutcome(report, paths)


# ------------------------------------------------------------------------------------------------------ energy
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
                  force: bool = False, progress: Progress | None = None, chip: str | PathLike | None = None,
                  host_fallback: bool = False, fps: float = 25.0) -> EnergyReportOutcome:
    """Count every operation of ``checkpoint`` on ``videos`` real videos (``clips x crops`` views each), price
    it under ``profile`` (a registered name or a YAML/JSON file) beside ``baselines`` (default: all), and write
    the report folder ``out`` (see :mod:`svformer_deploy.energy.report`). ``progress(iterable, total,
    description)`` may wrap the video loop (as in :func:`sparsity`). ``chip`` (a registered chip or a SANA-FE
    file) adds the section of the same views on that chip (:mod:`svformer_deploy.chip.energy`)."""
    from svformer_deploy.energy.report import REPORT_OUTPUT, ReportOptions, write_report
    from svformer_deploy.models.checkpoint import require_checkpoint

    checkpoint, out = user_path(checkpoint), user_path(out)
    require_checkpoint(checkpoint)  # the message every command gives; write_report checks --out before counting
    opts = ReportOptions(checkpoint=checkpoint, data=_data(data), videos=videos, clips=clips,
                         crops=crops, profile=_profile_spec(profile), fold_bn=fold_bn,
                         accuracy=None if accuracy is None else user_path(accuracy), out=out, force=force,
                         sections=_chip_sections(chip, host_fallback, fps),
                         **({"baselines": tuple(baselines)} if baselines else {}))
    out_dir, summary = write_report(opts, progress=progress)
    return EnergyReportOutcome(out_dir, {name: out_dir / name for name in REPORT_OUTPUT.files}, summary)


def _chip_sections(chip: str | PathLike | None, host_fallback: bool, fps: float) -> tuple[Any, ...]:
    """The chip section of an energy report (none without ``chip``)."""
    if chip is None:
        return ()
    from svformer_deploy.chip.energy import ChipSection

    return (ChipSection(str(user_path(chip)) if Path(chip).is_file() else str(chip), host_fallback, fps),)


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
                 chip: str | PathLike | None = None, host_fallback: bool = False, fps: float = 25.0,
                 ) -> PriceOutcome:
    """Price registered model ``model`` from stated firing ``rates`` (a ``name,rate`` CSV or a mapping) under
    every convention and the memory model, per clip and per video for each (clips, crops) in ``views``
    (:func:`svformer_deploy.energy.price.price_rates`); write the summary as JSON to ``json_out`` if given.
    ``chip`` adds the model's figures on that chip from the same rates (:func:`svformer_deploy.chip.energy.
    price_section`), in ``summary["chip"]`` and a section of the markdown."""
    from svformer_deploy._atomic import atomic_write_json
    from svformer_deploy._outputs import refuse_existing_file
    from svformer_deploy.energy.price import price_markdown, price_rates

    if not isinstance(rates, Mapping):
        rates = user_path(rates)
    if json_out is not None:  # an earlier price summary is replaced, never another file
        json_out = user_path(json_out)
        refuse_existing_file(json_out, True, kind="`energy price` summary", is_kind=_is_price_summary,
                             inputs=() if isinstance(rates, Mapping) else (rates,))
    summary = price_rates(model, rates, _profile_spec(profile), list(views))
    markdown = price_markdown(summary)
    if chip is not None:
        from svformer_deploy.chip.energy import price_section
        from svformer_deploy.energy.price import read_rates_csv

        rate_map = dict(rates) if isinstance(rates, Mapping) else read_rates_csv(rates)
        spec = str(user_path(chip)) if Path(chip).is_file() else str(chip)
        summary = {**summary}
        summary["chip"], chip_md = price_section(model, rate_map, spec, host_fallback, fps, _profile_spec(profile))
        markdown += "\n" + chip_md
    path = None
    if json_out is not None:
        path = atomic_write_json(json_out, dict(summary))
    return PriceOutcome(summary, markdown, path)


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
    from svformer_deploy._outputs import refuse_existing, refuse_file_in_the_way
    from svformer_deploy.analysis.report import REPORT_OUTPUT, write_sparsity_report
    from svformer_deploy.analysis.sparsity import analyse_checkpoint

    checkpoint, out = user_path(checkpoint), user_path(out)
    refuse_file_in_the_way(out)
    refuse_existing(out, force, inputs=(checkpoint,), output=REPORT_OUTPUT)  # before the analysis, not after
    analysis = analyse_checkpoint(checkpoint, _data(data), num_videos=videos, clips=clips,
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

    config = replace(config, out_dir=str(user_path(config.out_dir)), data=_data(config.data))
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
    config = replace(config, out_dir=str(user_path(config.out_dir)), data=_data(config.data))
    if budgets:
        return finetune_budgets(checkpoint, config, list(budgets), resume=resume, force=force, command=command,
                                progress=progress, on_epoch=on_epoch)
    return [_finetune(checkpoint, config, resume=resume, force=force, command=command, progress=progress,
                      on_epoch=on_epoch)], None


# ------------------------------------------------------------------------------------------------ chips
@dataclass(frozen=True)
class MapOutcome:
    """A chip mapping folder (``mapping.json``, ``layers.csv``, ``cores.csv``, ``timesteps.csv``, ``report.md``,
    figures), its ``mapping.json`` content, and the videos its figures come from (None: structure only)."""

    path: Path
    summary: dict[str, Any]
    videos: int | None


def default_mapping_out(bundle: PathLike, chip: str) -> Path:
    """The default mapping folder, by the rule of :func:`svformer_deploy._outputs.default_out`: beside the bundle,
    named after it and what is made (``<bundle>-<chip>-mapping``; a bundle is a folder, so its whole name)."""
    from svformer_deploy._outputs import default_out

    b = user_path(bundle)
    return default_out(b.parent / (b.name + ".bundle"), f"{Path(str(chip)).stem}-mapping")


def map_bundle(bundle: PathLike, chip: str | PathLike = "loihi", out: PathLike | None = None, *,
               checkpoint: PathLike | None = None, data: PathLike = "moving-digits", videos: int = 4,
               fps: float = 25.0, host_fallback: bool = False, profile: str | PathLike = "45nm-fp32",
               force: bool = False, wrap_batches: BatchWrapper | None = None) -> MapOutcome:
    """Map the NIR or Lava bundle ``bundle`` onto ``chip`` (a registered name or a SANA-FE architecture file),
    check it against the chip's limits first (every violation one line of a
    :class:`~svformer_deploy.chip.check.ChipConstraintError`), place it, run ``videos`` validation videos of
    ``data`` through it (0: structure only) and write the folder ``out`` (default: beside the bundle)."""
    from svformer_deploy._outputs import refuse_existing, write_output_dir
    from svformer_deploy.chip.arch import load_chip
    from svformer_deploy.chip.report import MAPPING_OUTPUT, write_mapping
    from svformer_deploy.chip.service import chip_figures, float_reference, mapping_from_bundle
    from svformer_deploy.exporters import eval_batches

    from svformer_deploy.errors import ConfigError

    if videos < 0:
        raise ConfigError(f"videos={videos}: give a number of validation videos >= 0 (0: the mapping only)")
    bundle_path = user_path(bundle)
    chip_spec = str(user_path(chip)) if Path(chip).is_file() else str(chip)
    out_path = user_path(out) if out is not None else default_mapping_out(bundle_path, chip_spec)
    refuse_existing(out_path, force, inputs=(bundle_path,), output=MAPPING_OUTPUT)  # before the work
    spec = load_chip(chip_spec)
    mapping, model, meta, manifest = mapping_from_bundle(bundle_path, spec, checkpoint=checkpoint,
                                                         host_fallback=host_fallback)
    fig, used = None, None
    if videos > 0:
        from svformer_deploy.data import eval_video_count

        used = eval_video_count(_data(data), model.config, split="val", num_videos=videos)
        batches = eval_batches(_data(data), model.config, videos, batch_size=4)
        if wrap_batches is not None:
            batches = wrap_batches(batches)
        fig = chip_figures(mapping, batches, fps=fps, profile=_profile_spec(profile), config=model.config.to_dict(),
                           reference=float_reference(model))
    provenance = {"bundle": str(bundle_path), "bundle_target": manifest.target, "model": model.config.name,
                  "checkpoint_sha256": meta["sha256"], "chip": chip_spec, "host_fallback": host_fallback,
                  "data": str(_data(data)), "videos": used, "fps": fps, "host_profile": str(profile),
                  "bn_fold": mapping.network.plan.bn_fold,
                  "approximations": [a.text for a in manifest.approximations]}
    doc: dict[str, Any] = {}

    def build(tmp: Path) -> None:
        doc.update(write_mapping(tmp, mapping, fig, provenance))

    path = write_output_dir(out_path, build, MAPPING_OUTPUT, force=force)
    return MapOutcome(path, doc, used)


@dataclass(frozen=True)
class MappingCheck:
    """A SANA-FE check of a mapping: per-unit results and where they were written."""

    path: Path
    report: dict[str, Any]
    passed: bool


def verify_mapping(mapping_dir: PathLike, *, layers: Sequence[str] | None = None, checkpoint: PathLike | None = None,
                   videos: int = 1, max_saved: int = 200_000, progress: Callable[[Any], None] | None = None
                   ) -> MappingCheck:
    """Rebuild the mapping recorded in ``mapping_dir`` (its bundle, chip and options), run the first ``videos``
    validation videos through it and check every chip layer (or ``layers``) in SANA-FE on each
    (:mod:`svformer_deploy.chip.sanafe_verify`); write ``sanafe_verification.json`` (``complete``: every layer was
    checked) and ``sanafe/`` (the networks in SANA-FE's format) into the folder."""
    import json
    import shutil

    from svformer_deploy._atomic import atomic_write_json
    from svformer_deploy.chip.arch import load_chip
    from svformer_deploy.chip.run import run_chip
    from svformer_deploy.chip.sanafe_verify import ENERGY_TOLERANCE, sanafe_available, verify_units
    from svformer_deploy.chip.service import mapping_from_bundle
    from svformer_deploy.errors import VerificationError
    from svformer_deploy.exporters import eval_batches

    folder = user_path(mapping_dir)
    rec = folder / "mapping.json"
    if not rec.is_file():
        raise VerificationError(f"{folder} is not a chip mapping (no mapping.json); pass the folder written by "
                                "`svformer-deploy map`")
    problem = sanafe_available()
    if problem:
        raise VerificationError(problem)
    try:
        doc = json.loads(read_user_text(rec))
        prov = doc["provenance"]
    except (ValueError, KeyError, TypeError) as err:
        raise VerificationError(f"{rec} is damaged ({err}); write the mapping again with `svformer-deploy map`") from None
    spec = load_chip(prov["chip"])
    mapping, model, _, _ = mapping_from_bundle(prov["bundle"], spec, checkpoint=checkpoint,
                                               host_fallback=bool(prov.get("host_fallback")))
    if mapping.cores_used != doc["totals"]["cores"] or mapping.placement.method != doc["placement"]["method"]:
        raise VerificationError(f"{folder}: the bundle now maps to {mapping.cores_used} cores, the record says "
                                f"{doc['totals']['cores']}; write the mapping again with `svformer-deploy map`")
    unknown = [n for n in (layers or []) if n not in mapping.fixed]
    if unknown:
        raise VerificationError(f"no chip layer {unknown[0]!r} in this mapping; chip layers: "
                                f"{', '.join(mapping.fixed)}")
    clips, labels = next(iter(eval_batches(prov.get("data") or "moving-digits", model.config, 1, batch_size=1)))
    from svformer_deploy.chip.service import host_nodes

    run = run_chip(mapping.network, mapping.fixed, spec.number_format, clips, model.config.to_dict(),
                   host_nodes(mapping))
    sf_dir = folder / "sanafe"
    tmp = folder / ".sanafe.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        results = []
        for v in range(len(clips)):
            results += verify_units(mapping, run, tmp if v == 0 else None, layers=list(layers) if layers else None,
                                    video=v, max_saved=max_saved, progress=progress)
        shutil.rmtree(sf_dir, ignore_errors=True)
        tmp.rename(sf_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    passed = all(r.passed for r in results)
    det = [abs(o - s) / s for r in results for o, s in zip(r.ours["time_detailed"], r.sanafe["time_detailed"])
           if s > 0]
    all_layers = [layer.name for layer in mapping.network.layers]
    checked = sorted({r.layer for r in results}, key=all_layers.index)
    report = {"simulator": "SANA-FE", "sanafe_version": _sanafe_version(), "units": [r.to_dict() for r in results],
              "passed": passed, "layers_checked": len(checked), "layers_in_mapping": len(all_layers),
              "complete": len(checked) == len(all_layers), "videos": len(clips), "tolerance": {"counts": "equal", "energy": ENERGY_TOLERANCE,
                                              "time_simple": ENERGY_TOLERANCE},
              "detailed_time_difference": {"max": max(det, default=0.0), "mean": float(sum(det) / len(det))
                                           if det else 0.0},
              "data": f"the first {len(clips)} validation video(s) of {prov.get('data')}"}
    path = atomic_write_json(folder / "sanafe_verification.json", report)
    return MappingCheck(path, report, passed)


def _sanafe_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sanafe")
    except PackageNotFoundError:
        return "unknown"
# --------------------------------------------------------------------------------------------- import-official
@dataclass(frozen=True)
class ImportOutcome:
    """An imported official checkpoint: the svformer-deploy checkpoint written and what the import matched."""

    path: Path
    report: Any


def import_official(path: PathLike, out: PathLike, *, model: str = "svformer_ucf101",
                    force: bool = False) -> ImportOutcome:
    """Convert the official SVFormer checkpoint ``path`` (SlowFast ``.pyth``) for registered config ``model`` into
    a self-describing svformer-deploy checkpoint at ``out`` (an earlier svformer-deploy checkpoint there is
    replaced only with ``force``, never another file)."""
    from svformer_deploy._outputs import refuse_existing_file
    from svformer_deploy.models import save_checkpoint
    from svformer_deploy.models.checkpoint import is_checkpoint
    from svformer_deploy.models.official import import_official as _import_official

    path, out = user_path(path), user_path(out)
    refuse_existing_file(out, force, kind="svformer-deploy checkpoint", is_kind=is_checkpoint, inputs=(path,))
    net, report = _import_official(path, model)
    save_checkpoint(out, net, source=str(path), import_report=str(report))
    return ImportOutcome(out, report)
