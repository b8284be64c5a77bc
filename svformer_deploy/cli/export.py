"""``svformer-deploy export`` and ``svformer-deploy verify``: write an export, then check it on real clips."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from svformer_deploy.cli import app

_DATA = typer.Option("--data", help="Validation data: 'moving-digits' (built-in) or a UCF101/HMDB51 folder.")
_NUM = typer.Option("--num-videos", min=1, help="Number of validation videos to verify on.")


def _verify_and_print(exporter, path: Path, model, data: str, num_videos: int) -> None:
    from rich.progress import track

    from svformer_deploy.exporters import eval_batches

    batches = list(track(eval_batches(data, model.config, num_videos), description=f"loading {data} clips"))
    report = exporter.verify(path, model, track(batches, description="verifying"),
                             data_desc=f"{data}, split val, {num_videos} videos, 1 view each")
    typer.echo(exporter.format_report(report))
    if report.get("passed") is False:
        sys.exit(1)


@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by svformer-deploy.")],
    to: Annotated[str, typer.Option("--to", help="Target format: nir, onnx (or lava where installed).")],
    out: Annotated[Path, typer.Option("--out", help="Output: a bundle directory (nir) or a .onnx file.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    approximate_bn: Annotated[bool, typer.Option(
        "--approximate-bn", help="Fold per-timestep BatchNorm with its time average (not exact; the cost is "
        "reported).")] = False,
    data: Annotated[str, _DATA] = "moving-digits",
    num_videos: Annotated[int, _NUM] = 32,
) -> None:
    """Export a checkpoint, then verify the export against PyTorch on real validation clips.

    Exits 1 when verification misses its goal (NIR: 100 % spikes and logits within 1e-4; ONNX: logits within 1e-4).
    """
    from svformer_deploy._paths import data_spec, user_path
    from svformer_deploy.exporters import export_checkpoint, get_exporter

    path, model, _ = export_checkpoint(user_path(checkpoint), to, user_path(out), force=force,
                                       approximate_bn=approximate_bn)
    typer.echo(f"wrote {path}")
    _verify_and_print(get_exporter(to), path, model, data_spec(data), num_videos)


@app.command("verify")
def verify_cmd(
    path: Annotated[Path, typer.Argument(help="An export bundle directory or a .onnx file.")],
    data: Annotated[str, _DATA] = "moving-digits",
    num_videos: Annotated[int, _NUM] = 32,
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="Source checkpoint (default: the path recorded at export; its SHA-256 must match).")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="Verifier to use (default: the export's own).")] = None,
) -> None:
    """Re-check an export: re-read its files, run it on real clips, compare with the PyTorch model (JSON + table)."""
    from svformer_deploy._paths import data_spec, user_path
    from svformer_deploy.exporters import export_target_of, get_exporter, source_checkpoint

    path = user_path(path)
    exporter = get_exporter(target or export_target_of(path))
    model, _ = source_checkpoint(path, checkpoint and user_path(checkpoint))
    _verify_and_print(exporter, path, model, data_spec(data), num_videos)
