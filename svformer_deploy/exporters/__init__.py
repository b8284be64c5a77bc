"""Exporters: NIR bundles, ONNX (and Lava-DL netx), each verified after export.

One registry maps a target name (``--to``) to an :class:`Exporter`; targets are loaded lazily so that no
optional dependency is imported unless its target is used. To add a target, write a module that defines
``EXPORTER = Exporter(...)`` and add one line to :data:`_TARGETS`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from svformer_deploy.errors import ConfigError, DataError

__all__ = ["Exporter", "list_targets", "get_exporter", "export_checkpoint", "eval_batches", "export_target_of",
           "source_checkpoint", "LOGIT_TOLERANCE"]

LOGIT_TOLERANCE = 1e-4
"""Largest |logit difference| an exact export may show against PyTorch (float32 rounding of folded weights)."""


@dataclass(frozen=True)
class Exporter:
    """A target format.

    ``export(model, out, checkpoint_sha256=..., checkpoint_path=..., class_names=..., force=...,
    approximate_bn=...) -> Path`` writes atomically; ``verify(path, model, batches, data_desc=...) -> report``
    runs the target's checks on real clips and writes the report as JSON next to the export;
    ``format_report(report) -> str`` renders it for the terminal.
    """

    name: str
    description: str
    export: Callable[..., Path]
    verify: Callable[..., dict[str, Any]]
    format_report: Callable[[dict[str, Any]], str]


_TARGETS: dict[str, str] = {
    "nir": "svformer_deploy.exporters.nir_export",
    "onnx": "svformer_deploy.exporters.onnx_export",
    "lava": "svformer_deploy.exporters.lava",
}


def list_targets() -> list[str]:
    """Target names whose module is present in this installation."""
    return [k for k, mod in _TARGETS.items() if importlib.util.find_spec(mod) is not None]


def get_exporter(name: str) -> Exporter:
    if name not in list_targets():
        raise ConfigError(f"unknown export target {name!r}; available: {', '.join(list_targets())}")
    exporter = getattr(importlib.import_module(_TARGETS[name]), "EXPORTER", None)
    if not isinstance(exporter, Exporter):
        raise ConfigError(f"export target {name!r} is not usable: {_TARGETS[name]} defines no EXPORTER "
                          "(an svformer_deploy.exporters.Exporter); finish or remove that module")
    return exporter


def export_checkpoint(checkpoint: str | os.PathLike, to: str, out: str | os.PathLike, *, force: bool = False,
                      approximate_bn: bool = False) -> tuple[Path, nn.Module, dict[str, Any]]:
    """Load ``checkpoint`` and export it to target ``to`` at ``out``. Returns (path, model, checkpoint meta)."""
    from svformer_deploy._paths import user_path
    from svformer_deploy.models import load_checkpoint

    checkpoint, out = user_path(checkpoint), user_path(out)
    exporter = get_exporter(to)
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
    """The target of an existing export: ``onnx`` for a .onnx file, else the bundle manifest's ``target``."""
    from svformer_deploy.exporters.bundle import read_manifest

    if Path(path).suffix == ".onnx":
        return "onnx"
    return read_manifest(path).target


def source_checkpoint(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                      ) -> tuple[nn.Module, dict[str, Any]]:
    """Load the checkpoint an export was made from (``checkpoint`` or the path recorded at export) and check
    that its SHA-256 is the one recorded in the export."""
    from svformer_deploy.errors import VerificationError
    from svformer_deploy.models import load_checkpoint

    if Path(path).suffix == ".onnx":
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        recorded, want = meta.get("checkpoint_path", ""), meta.get("checkpoint_sha256", "")
    else:
        from svformer_deploy.exporters.bundle import read_manifest

        m = read_manifest(path)
        recorded, want = m.checkpoint_path, m.checkpoint_sha256
    ckpt = checkpoint or recorded
    if not ckpt:
        raise VerificationError(f"{path} does not record its source checkpoint; pass --checkpoint")
    model, meta = load_checkpoint(ckpt)
    if want and meta["sha256"] != want:
        raise VerificationError(f"checkpoint {ckpt} (sha256 {meta['sha256'][:12]}...) is not the one {path} was "
                                f"exported from (sha256 {want[:12]}...); pass --checkpoint with the original file")
    return model, meta
