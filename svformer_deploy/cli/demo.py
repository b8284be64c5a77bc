"""``svformer-deploy demo``: train (or load the shipped checkpoint), evaluate, and run every export and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svformer_deploy.cli._app import app


@app.command("demo")
def demo_cmd(
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Use the shipped checkpoint instead of training one.")] = False,
    out: Annotated[Path, typer.Option(metavar="DIR", help="Folder for every artefact (and demo.json listing them).")] = Path("demo-out"),
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier demo folder at --out (nothing else: a folder it did not write is refused).")] = False,
) -> None:
    """The whole project on the built-in moving digits, in under 10 minutes on 2 CPU cores; prints every artefact."""
    from svformer_deploy.demo import run_demo

    report = run_demo(out, pretrained=pretrained, force=force, echo=typer.echo)
    if report.failures:
        typer.echo(f"error: {len(report.failures)} demo step(s) failed: {', '.join(report.failures)}", err=True)
        raise typer.Exit(1)
