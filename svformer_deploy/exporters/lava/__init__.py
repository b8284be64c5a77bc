"""Lava-DL netx export: Loihi fixed-point quantisation, a bit-exact emulation, netx files, a standalone Lava
runner, and verification in Lava's fixed_pt simulator (target ``lava`` of the exporter registry)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from svformer_deploy.exporters import Exporter
from svformer_deploy.exporters.lava.emulate import emulate_layer, emulate_partition
from svformer_deploy.exporters.lava.netx import read_netx, write_netx
from svformer_deploy.exporters.lava.quantize import FloatLayer, LoihiLayer, LoihiOverflowWarning, quantize_layer

__all__ = ["FloatLayer", "LoihiLayer", "LoihiOverflowWarning", "quantize_layer", "emulate_layer",
           "emulate_partition", "write_netx", "read_netx", "EXPORTER"]


def _env_count(name: str, default: int) -> int:
    """The positive integer in ``$name`` (``default`` when unset), or a :class:`ConfigError` naming the fix."""
    from svformer_deploy.errors import ConfigError

    text = os.environ.get(name, "").strip() or str(default)
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name}={os.environ.get(name)!r} is not a whole number >= 1; set it to e.g. {default}, or "
                          "unset it")
    return int(text)


def lava_run_settings() -> tuple[int, int]:
    """(clips through Lava per partition, parallel runner processes): ``$SVFORMER_LAVA_CLIPS`` (default 8) and
    ``$SVFORMER_LAVA_WORKERS`` (default 1), each a whole number >= 1."""
    return _env_count("SVFORMER_LAVA_CLIPS", 8), _env_count("SVFORMER_LAVA_WORKERS", 1)


def _export(model, out, *, checkpoint_sha256: str, checkpoint_path: str = "", class_names=None, force: bool = False,
            approximate_bn: bool = False) -> Path:
    from svformer_deploy.exporters.lava.crop import crop_policy
    from svformer_deploy.exporters.lava.export import export_lava

    crop_policy()  # a bad $SVFORMER_LAVA_CROP, CLIPS or WORKERS fails here, before anything is written
    lava_run_settings()
    path, _, _ = export_lava(model, out, checkpoint_sha256=checkpoint_sha256, checkpoint_path=checkpoint_path,
                             class_names=class_names, force=force, approximate_bn=approximate_bn)
    return path


def _progress(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(msg, markup=False, highlight=False)


def _verify(path, model, batches, data_desc: str = "") -> dict[str, Any]:
    """Lava verification on the clips of ``batches``; ``$SVFORMER_LAVA_CLIPS`` (default 8) of them go through
    Lava itself (one Lava run per partition over all of them), in ``$SVFORMER_LAVA_WORKERS`` (default 1)
    parallel runner processes, each partition on the window ``$SVFORMER_LAVA_CROP`` chooses (default ``auto``,
    see :func:`~svformer_deploy.exporters.lava.crop.crop_for`); all clips go into the accuracy comparison."""
    from svformer_deploy.exporters.lava.crop import crop_policy
    from svformer_deploy.exporters.lava.verify import verify_lava

    lava_clips, workers = lava_run_settings()
    return verify_lava(path, batches=batches, lava_clips=lava_clips, workers=workers, crop=crop_policy(),
                       progress=_progress, data_desc=data_desc)


def _format(report: dict[str, Any]) -> str:
    from svformer_deploy.exporters.lava.verify import format_lava_report

    return format_lava_report(report)


EXPORTER = Exporter(name="lava", description="Lava-DL netx HDF5 partitions (Loihi fixed point) + float host op",
                    export=_export, verify=_verify, format_report=_format)
