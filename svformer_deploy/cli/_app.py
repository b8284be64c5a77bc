"""The root command group every ``svformer-deploy`` command registers on (its module imports :data:`app`)."""

from __future__ import annotations

from typing import Annotated

import typer

from svformer_deploy.cli._options import App

__all__ = ["app", "STATE"]

app = App(
    name="svformer-deploy",
    help="Take a spiking video transformer (SVFormer) from a PyTorch checkpoint to neuromorphic formats, "
    "and report what it costs in energy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

STATE = {"debug": False}
"""Whether ``--debug`` was given: :func:`svformer_deploy.cli.main` then shows tracebacks."""


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
) -> None:
    STATE["debug"] = debug
