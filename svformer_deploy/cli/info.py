"""``svformer-deploy info``: build a registered model (or load a checkpoint) and print its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svformer_deploy.cli._app import app


@app.command()
def info(
    name_or_ckpt: Annotated[str, typer.Argument(help="A registered model name (see `svformer-deploy models`) or a checkpoint file.")],
) -> None:
    """Print parameters, T, input size, per-layer output shapes and neuron layers of a model."""
    from rich.console import Console

    from svformer_deploy.models.summary import load_model_or_name, summarize

    model, meta = load_model_or_name(name_or_ckpt)
    Console().print(summarize(model, meta))


@app.command("models")
def models_cmd() -> None:
    """List the registered model configs and the paths of the shipped checkpoints."""
    from svformer_deploy.models import get_config, list_models

    for name in list_models():
        c = get_config(name)
        typer.echo(f"{name:18s} T={c.num_frames:<3d} {c.img_size}x{c.img_size}  widths={list(c.embed_dims)} "
                   f"depths={list(c.depths)} classes={c.num_classes} bn={c.bn}")
    from svformer_deploy.assets import default_checkpoint, per_timestep_checkpoint

    typer.echo("shipped checkpoints (pass one to export, energy, sparsity, evaluate):")
    typer.echo(f"  {default_checkpoint()}  (svformer_tiny on moving digits, shared BN)")
    typer.echo(f"  {per_timestep_checkpoint()}  (svformer_tiny on moving digits, per-timestep BN)")


@app.command("import-official")
def import_official_cmd(
    path: Annotated[Path, typer.Argument(help="A checkpoint saved by the official SVFormer code (SlowFast .pyth).")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Where to write the svformer-deploy checkpoint.")],
    model: Annotated[str, typer.Option(metavar="NAME", help="Registered config the weights belong to.")] = "svformer_ucf101",
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier svformer-deploy checkpoint at --out (nothing else).")] = False,
) -> None:
    """Convert an official SVFormer checkpoint into a self-describing svformer-deploy checkpoint."""
    from svformer_deploy.api import import_official

    result = import_official(path, out, model=model, force=force)
    typer.echo(f"{result.report}\nwrote {result.path}")
