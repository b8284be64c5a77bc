"""Lava-DL netx export: Loihi fixed-point quantisation, a bit-exact emulation, netx files, a standalone Lava
runner, and verification in Lava's fixed_pt simulator (target ``lava`` of the exporter registry)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from svformer_deploy.exporters import Exporter
from svformer_deploy.exporters.lava._env import env_setting
from svformer_deploy.exporters.lava.emulate import emulate_layer, emulate_partition
from svformer_deploy.exporters.lava.netx import read_netx, write_netx
from svformer_deploy.exporters.lava.quantize import FloatLayer, LoihiLayer, LoihiOverflowWarning, quantize_layer

__all__ = ["FloatLayer", "LoihiLayer", "LoihiOverflowWarning", "quantize_layer", "emulate_layer",
           "emulate_partition", "write_netx", "read_netx", "EXPORTER", "default_lava_workers", "lava_run_settings",
           "env_setting"]


def _env_count(name: str, default: int) -> int:
    """The whole number >= 1 in ``$name`` (ASCII digits, whitespace around them ignored: ``" 2 "`` is 2);
    ``default`` when ``$name`` is unset or empty (:func:`env_setting`); anything else is a :class:`ConfigError`
    naming the fix."""
    from svformer_deploy.errors import ConfigError

    text = env_setting(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ConfigError(f"{name}={os.environ.get(name)!r} is not a whole number >= 1; set it to e.g. {default}, or "
                          "unset it")
    return int(text)


RUNNER_MEMORY = 1 << 30
"""Memory one Lava runner process tree may need (bytes), for the default worker count: the runner and the ~9
processes of Lava's runtime hold 0.6 GiB (PSS) on ``svformer_tiny``'s partitions, 8 clips each."""


def _mem_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """``MemAvailable`` of ``meminfo`` (``/proc/meminfo``: ``MemAvailable:  N kB``) in bytes, or None where it
    cannot be read."""
    try:
        for line in meminfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "MemAvailable":
                return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_lava_workers() -> int:
    """Runner processes when ``$SVFORMER_LAVA_WORKERS`` is unset:
    ``max(1, min(usable_cpus(), MemAvailable // RUNNER_MEMORY))`` -- the CPUs this process may use (affinity and
    cgroup quota, :func:`svformer_deploy._threads.usable_cpus`), no more than the free memory holds runner
    process trees (no memory cap where ``/proc/meminfo`` cannot be read). The verification uses at most one per
    partition (:func:`~svformer_deploy.exporters.lava.verify.run_lava`)."""
    from svformer_deploy._threads import usable_cpus

    workers = usable_cpus()
    mem = _mem_available()
    if mem is not None:
        workers = min(workers, mem // RUNNER_MEMORY)
    return max(1, workers)


def lava_run_settings() -> tuple[int, int]:
    """(clips through Lava per partition, parallel runner processes): ``$SVFORMER_LAVA_CLIPS`` (default 8) and
    ``$SVFORMER_LAVA_WORKERS`` (default :func:`default_lava_workers`), each a whole number >= 1; an empty value
    means the default."""
    return _env_count("SVFORMER_LAVA_CLIPS", 8), _env_count("SVFORMER_LAVA_WORKERS", default_lava_workers())


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
    """One progress line of the Lava verification (the runners' ``[lava-runner] ...`` lines) on stderr, whole:
    never wrapped at the terminal's width, so a number is never split across lines."""
    import sys

    print(msg, file=sys.stderr, flush=True)


def _verify(path, model, batches, data_desc: str = "") -> dict[str, Any]:
    """Lava verification on the clips of ``batches``; ``$SVFORMER_LAVA_CLIPS`` (default 8) of them go through
    Lava itself (one Lava run per partition over all of them), in ``$SVFORMER_LAVA_WORKERS`` (default
    :func:`default_lava_workers`: the usable CPUs) parallel runner processes, each partition on the window
    ``$SVFORMER_LAVA_CROP`` chooses (default ``auto``, see :func:`~svformer_deploy.exporters.lava.crop.crop_for`);
    all clips go into the accuracy comparison."""
    from svformer_deploy.exporters.lava.crop import crop_policy
    from svformer_deploy.exporters.lava.verify import verify_lava

    lava_clips, workers = lava_run_settings()
    return verify_lava(path, batches=batches, lava_clips=lava_clips, workers=workers, crop=crop_policy(),
                       progress=_progress, data_desc=data_desc)


def _graph(plan, config: dict):  # noqa: ANN001, ANN202 (Plan -> Graph, imported only when a Lava bundle is read)
    from svformer_deploy.exporters.lava.export import lava_graph

    return lava_graph(plan, config)


def _format(report: dict[str, Any]) -> str:
    from svformer_deploy.exporters.lava.verify import format_lava_report

    return format_lava_report(report)


EXPORTER = Exporter(name="lava", description="Lava-DL netx HDF5 partitions (Loihi fixed point) + float host op",
                    export=_export, verify=_verify, format_report=_format, graph=_graph)
