"""The ``svformer-deploy`` command line: a thin layer of Typer commands over the library.

Each command lives in its own module and registers itself on :data:`app`; this module only wires them
together and turns :class:`~svformer_deploy.errors.SVFormerDeployError` into one line on stderr and a
non-zero exit (``--debug`` shows the full traceback instead).
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer
from typer import Abort
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from svformer_deploy.errors import SVFormerDeployError

app = typer.Typer(
    name="svformer-deploy",
    help="Take a spiking video transformer (SVFormer) from a PyTorch checkpoint to neuromorphic formats, "
    "and report what it costs in energy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_STATE = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
) -> None:
    _STATE["debug"] = debug


# Command modules register themselves on ``app`` when imported.
from svformer_deploy.cli import info as _info  # noqa: E402,F401
from svformer_deploy.cli import train as _train  # noqa: E402,F401
from svformer_deploy.cli import demo as _demo  # noqa: E402,F401
from svformer_deploy.cli import energy as _energy  # noqa: E402,F401
from svformer_deploy.cli import export as _export  # noqa: E402,F401
from svformer_deploy.cli import finetune as _finetune  # noqa: E402,F401
from svformer_deploy.cli import sparsity as _sparsity  # noqa: E402,F401
from svformer_deploy.cli import chip as _chip  # noqa: E402,F401


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (``kill``, ``timeout``, a batch scheduler) exits with 143 through Python's unwinding, as Ctrl-C
    does, so temporary folders and unverified bundles are removed instead of left behind. Not under torchrun,
    whose SIGTERM to the other workers after a failure must stop them at once, even inside a collective."""
    import os
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and "TORCHELASTIC_RUN_ID" not in os.environ:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _threads_first(callback):
    """``callback`` preceded by :func:`~svformer_deploy._threads.configure_threads`, which imports torch: only a
    command that runs pays for it, never ``--help`` or a usage error (``svformer-deploy --help`` stays well under
    a second)."""

    @functools.wraps(callback)
    def run(*args, **kwargs):
        from svformer_deploy._threads import configure_threads

        configure_threads()
        return callback(*args, **kwargs)

    return run


def _configure_threads_in_commands(command) -> None:
    for sub in getattr(command, "commands", {}).values():
        _configure_threads_in_commands(sub)
    if not hasattr(command, "commands") and command.callback is not None:
        command.callback = _threads_first(command.callback)


def build_command():
    """The click command tree of :data:`app`, with the help labels of :func:`~svformer_deploy.cli._options.tidy_help`;
    every command sets torch's thread count (:func:`~svformer_deploy._threads.configure_threads`) before it runs."""
    from svformer_deploy.cli._options import tidy_help

    command = tidy_help(typer.main.get_command(app))
    _configure_threads_in_commands(command)
    return command


def _command_path(command, args: list[str]) -> str:
    """``svformer-deploy`` and the subcommand names that lead ``args`` (for a usage error raised without a
    context, such as an option given without its value)."""
    path = ["svformer-deploy"]
    for arg in args:
        sub = command.commands.get(arg) if hasattr(command, "commands") else None
        if sub is None:
            if arg.startswith("-"):
                continue  # a group's own option (--debug)
            break
        path.append(arg)
        command = sub
    return " ".join(path)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and exit with its status code."""
    _STATE["debug"] = "--debug" in (sys.argv[1:] if argv is None else argv)
    _exit_cleanly_on_sigterm()
    command = build_command()
    try:
        # --help, Ctrl-C (130) and typer.Exit come back as an exit code; a command's own sys.exit passes through
        code = command.main(args=argv, prog_name="svformer-deploy", standalone_mode=False)
    except NoArgsIsHelpError as err:  # a bare command group: its help, as before
        err.show()
        sys.exit(err.exit_code)
    except UsageError as err:  # a typo, a missing or malformed option: one line, like every other bad input
        from svformer_deploy.cli._options import usage_message

        args = sys.argv[1:] if argv is None else argv
        where = err.ctx.command_path if err.ctx is not None else _command_path(command, args)
        typer.echo(f"error: {usage_message(err)}; see `{where} --help`", err=True)
        sys.exit(err.exit_code)
    except Abort:  # end of input at a prompt
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except SVFormerDeployError as err:
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except OSError as err:  # a path the user gave cannot be read or written (a parent is a file, permissions, disk)
        if _STATE["debug"]:
            raise
        where = f" {err.filename}" if err.filename else ""
        typer.echo(f"error: cannot use{where}: {err.strerror or err}; check the path you passed (is a parent folder "
                   "a file? is it writable? is the disk full?)", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
