"""Exporters: NIR, ONNX and Lava-DL netx bundles, each verified after export in an independent runtime.

One registry maps a target name (``--to`` / ``--target``) to an :class:`Exporter`; targets are loaded lazily so
that no optional dependency is imported unless its target is used. Every target writes an export bundle
(:mod:`svformer_deploy.exporters.bundle`); a verifier-only target (``export=None``) runs the bundles another
target writes (``reads``) in a second runtime. To add a target, write one module that defines
``EXPORTER = Exporter(...)`` and add one line to :data:`_TARGETS`.

:func:`read_bundle` reads any bundle: its manifest stores the export plan, and the graph of steps is derived
from it by the ``graph`` function of the target that wrote it.

:func:`export_and_verify` is the one export-then-verify path: the CLI and the demo call it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from svformer_deploy.errors import ConfigError, DataError
from svformer_deploy.exporters import svformer_lowering  # noqa: F401  (registers SVFormer's lowerings with the plan)

if TYPE_CHECKING:
    from svformer_deploy.exporters.bundle import GraphOf, Manifest

__all__ = ["Exporter", "list_targets", "get_exporter", "graph_function", "read_bundle", "export_checkpoint",
           "eval_batches", "export_target_of", "source_checkpoint", "LOGIT_TOLERANCE", "ExportResult",
           "export_and_verify", "verify_export"]

LOGIT_TOLERANCE = 1e-4
"""Largest |logit difference| an exact export may show against PyTorch (float32 rounding of folded weights)."""


@dataclass(frozen=True)
class Exporter:
    """A target format.

    ``export(model, out, checkpoint_sha256=..., checkpoint_path=..., class_names=..., force=...,
    approximate_bn=...) -> Path`` writes atomically; ``verify(path, model, batches, data_desc=...) -> report``
    runs the target's checks on real clips and writes the report as JSON next to the export;
    ``format_report(report) -> str`` renders it for the terminal. ``graph(plan, config) -> Graph`` derives the
    steps of a bundle this target writes from its stored plan (:class:`~svformer_deploy.exporters.bundle.Graph`;
    required with ``export``). ``export=None`` marks a verifier-only target that runs bundles of target
    ``reads`` (default: its own name); ``report_name`` is the report's file name in the bundle.
    """

    name: str
    description: str
    export: Callable[..., Path] | None
    verify: Callable[..., dict[str, Any]]
    format_report: Callable[[dict[str, Any]], str]
    reads: str = ""
    report_name: str = "verification.json"
    graph: GraphOf | None = None

    @property
    def bundle_target(self) -> str:
        """The manifest ``target`` of the bundles this exporter verifies."""
        return self.reads or self.name


_TARGETS: dict[str, str] = {
    "nir": "svformer_deploy.exporters.nir",
    "onnx": "svformer_deploy.exporters.onnx_export",
    "lava": "svformer_deploy.exporters.lava",
    "nir-norse": "svformer_deploy.exporters.nir.norse",
}


def list_targets() -> list[str]:
    """Target names whose module is present in this installation."""
    return [k for k, mod in _TARGETS.items() if importlib.util.find_spec(mod) is not None]


def get_exporter(name: str) -> Exporter:
    if name not in list_targets():
        exporters = {t: getattr(importlib.import_module(_TARGETS[t]), "EXPORTER", None) for t in list_targets()}
        writes = [t for t, e in exporters.items() if isinstance(e, Exporter) and e.export is not None]
        checks = [t for t in exporters if t not in writes]
        raise ConfigError(f"unknown target {name!r}; export with --to {' | '.join(writes)}"
                          + (f"; verify-only runtimes (verify BUNDLE --target): {', '.join(checks)}" if checks else ""))
    exporter = getattr(importlib.import_module(_TARGETS[name]), "EXPORTER", None)
    if not isinstance(exporter, Exporter):
        raise ConfigError(f"export target {name!r} is not usable: {_TARGETS[name]} defines no EXPORTER "
                          "(an svformer_deploy.exporters.Exporter); finish or remove that module")
    if exporter.export is not None and exporter.graph is None:
        raise ConfigError(f"export target {name!r} is not usable: its EXPORTER writes bundles but has no graph "
                          "function to derive their steps from the stored plan; give it graph=...")
    return exporter


def graph_function(target: str) -> GraphOf:
    """The ``graph`` function of ``target``, the target that wrote a bundle (its manifest's ``target``)."""
    from svformer_deploy.errors import BundleFormatError

    exporter = get_exporter(target) if target in list_targets() else None
    if exporter is None or exporter.export is None:
        writers = [t for t in list_targets() if get_exporter(t).export is not None]
        raise BundleFormatError(f"the bundle was written by target {target!r}, which this svformer-deploy does not "
                                f"export (targets: {', '.join(writers)}); re-export it from its checkpoint with "
                                "`svformer-deploy export CHECKPOINT --to TARGET`")
    return exporter.graph


def read_bundle(path: str | os.PathLike) -> Manifest:
    """The checked manifest of the bundle at ``path``, with the graph its target derives from its plan
    (:func:`~svformer_deploy.exporters.bundle.read_manifest`)."""
    from svformer_deploy.exporters.bundle import read_manifest

    return read_manifest(path, graph_function)


def export_checkpoint(checkpoint: str | os.PathLike, to: str, out: str | os.PathLike, *, force: bool = False,
                      approximate_bn: bool = False) -> tuple[Path, nn.Module, dict[str, Any]]:
    """Load ``checkpoint`` and export it to target ``to`` at ``out``. Returns (path, model, checkpoint meta)."""
    from svformer_deploy._outputs import refuse_existing
    from svformer_deploy.exporters.bundle import BUNDLE_OUTPUT
    from svformer_deploy.models import load_checkpoint

    refuse_existing(out, force, inputs=(checkpoint,), output=BUNDLE_OUTPUT)
    exporter = get_exporter(to)
    if exporter.export is None:
        raise ConfigError(f"target {to!r} only verifies bundles of target {exporter.bundle_target!r}; export with "
                          f"--to {exporter.bundle_target}, then `svformer-deploy verify BUNDLE --target {to}`")
    model, meta = load_checkpoint(checkpoint)
    path = exporter.export(model, out, checkpoint_sha256=meta["sha256"], checkpoint_path=str(checkpoint),
                           class_names=meta.get("class_names"), force=force, approximate_bn=approximate_bn)
    return path, model, meta


def eval_batches(spec: str, config, num_videos: int | None, batch_size: int = 8,
                 ) -> Iterator[tuple[Tensor, Tensor]]:
    """Validation clips of ``spec`` (``"moving-digits"`` or a dataset folder) as (clips (B, C, T, H, W), labels),
    one view per video, from the data pipeline's ``iter_eval_videos``."""
    import torch

    try:
        from svformer_deploy.data import iter_eval_videos
    except ImportError as err:
        raise DataError("this installation has no data pipeline (svformer_deploy.data.iter_eval_videos); "
                        "install the full svformer-deploy package") from err
    xs, ys = [], []
    for sample in iter_eval_videos(spec, config, split="val", num_videos=num_videos):
        for view in sample.views:
            xs.append(view)
            ys.append(sample.label)
        if len(xs) >= batch_size:
            yield torch.stack(xs), torch.tensor(ys)
            xs, ys = [], []
    if xs:
        yield torch.stack(xs), torch.tensor(ys)


def export_target_of(path: str | os.PathLike) -> str:
    """The target that wrote an existing export bundle (its manifest's ``target``)."""
    return read_bundle(path).target


def source_checkpoint(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                      ) -> tuple[nn.Module, dict[str, Any]]:
    """Load the checkpoint a bundle was exported from (``checkpoint`` or the path recorded at export) and check
    that its SHA-256, config and class names are the ones the bundle records."""
    from svformer_deploy.errors import BundleFormatError, VerificationError
    from svformer_deploy.models import load_checkpoint

    m = read_bundle(path)
    ckpt = checkpoint or m.checkpoint_path
    if not ckpt:
        raise VerificationError(f"{path} does not record its source checkpoint; pass --checkpoint")
    if not checkpoint and not Path(ckpt).exists():
        raise VerificationError(f"{path} was exported from {ckpt}, which no longer exists; pass --checkpoint "
                                "with the checkpoint's new path (its SHA-256 must match)")
    model, meta = load_checkpoint(ckpt)
    fix = "re-export the bundle with `svformer-deploy export` instead of editing it"
    if not m.checkpoint_sha256:  # every export records it: a bundle without it cannot be tied to its source
        raise BundleFormatError(f"{path}: manifest.json records no checkpoint_sha256; {fix}")
    if meta["sha256"] != m.checkpoint_sha256:
        raise VerificationError(f"checkpoint {ckpt} (sha256 {meta['sha256'][:12]}...) is not the one {path} was "
                                f"exported from (sha256 {m.checkpoint_sha256[:12]}...); pass --checkpoint with the "
                                "original file")
    cfg = model.config.to_dict()
    diff = sorted(k for k in set(cfg) | set(m.config) if cfg.get(k) != m.config.get(k))
    if diff:
        raise BundleFormatError(f"{path}: the manifest's config differs from its checkpoint's in {diff}; {fix}")
    if m.class_names != meta.get("class_names"):
        raise BundleFormatError(f"{path}: the manifest's class names are not its checkpoint's; {fix}")
    return model, meta


@dataclass(frozen=True)
class ExportResult:
    """An export (or re-verification): the bundle, the verification report (also at ``report_path``) and its
    rendering for a terminal. ``passed`` is False when the verification missed its goal (None: approximate)."""

    path: Path
    report: dict[str, Any]
    report_path: Path
    summary: str
    videos: int | None = None
    """Videos verified on (fewer than asked when the split has fewer); None for clips the caller gave."""

    @property
    def passed(self) -> bool | None:
        return self.report.get("passed")


def verify_export(path: str | os.PathLike, *, target: str | None = None, checkpoint: str | os.PathLike | None = None,
                  model: nn.Module | None = None, data: str = "moving-digits", num_videos: int | None = 32,
                  batches=None, data_desc: str | None = None,
                  wrap_batches: Callable[[Any], Any] | None = None) -> ExportResult:
    """Verify an existing bundle with ``target``'s verifier (default: the target that wrote it) on real clips
    (``batches``, else ``num_videos`` validation videos of ``data``, one view each: all of them if the split has
    fewer, and the record states how many, as does ``result.videos``) against ``model`` (default: its source
    checkpoint, checked by :func:`source_checkpoint`). ``wrap_batches`` may wrap the clip iterator (progress)."""
    from svformer_deploy.errors import BundleFormatError

    path = Path(path)
    written_by = export_target_of(path)
    exporter = get_exporter(target or written_by)
    if exporter.bundle_target != written_by:
        raise BundleFormatError(f"{path} was exported --to {written_by}; target {exporter.name!r} verifies "
                                f"bundles exported --to {exporter.bundle_target} (use --target {written_by})")
    if model is None:
        model, _ = source_checkpoint(path, checkpoint)
    videos = None
    if batches is None:
        videos = _video_count(data, model.config, num_videos)
        batches = eval_batches(data, model.config, num_videos)
        data_desc = data_desc or _data_desc(data, videos)
    if wrap_batches is not None:
        batches = wrap_batches(batches)
    report = exporter.verify(path, model, batches, data_desc=data_desc or "")
    return ExportResult(path, report, path / exporter.report_name, exporter.format_report(report), videos)


def _video_count(data: str, config, num_videos: int | None) -> int:  # noqa: ANN001 (SVFormerConfig)
    """Videos of ``data``'s validation split a verification uses (``eval_video_count``)."""
    from svformer_deploy.data import eval_video_count

    return eval_video_count(data, config, split="val", num_videos=num_videos)


def _data_desc(data: str, videos: int) -> str:
    """What a verification record states it ran on: the videos really used, not the number asked for."""
    return f"{data}, split val, {videos} videos, 1 view each"


def export_and_verify(checkpoint: str | os.PathLike, target: str, out: str | os.PathLike, *, force: bool = False,
                      approximate_bn: bool = False, data: str = "moving-digits", num_videos: int | None = 32,
                      wrap_batches: Callable[[Any], Any] | None = None) -> ExportResult:
    """Export ``checkpoint`` to ``target`` at ``out``, then verify the bundle against the checkpoint's model on
    ``num_videos`` validation videos of ``data``. ``wrap_batches`` may wrap the clip iterator (progress bars)."""
    path, model, _ = export_checkpoint(checkpoint, target, out, force=force, approximate_bn=approximate_bn)
    try:
        return verify_export(path, target=target, model=model, data=data, num_videos=num_videos,
                             wrap_batches=wrap_batches)
    except (KeyboardInterrupt, SystemExit):  # interrupted (Ctrl-C, SIGTERM): no bundle that was never verified
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        raise
