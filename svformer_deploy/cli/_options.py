"""How the commands' options are declared and shown in ``--help``.

The typer in use labels every parameter with its Python type (``--force <bool>``, ``--baseline <list[str]>``,
``checkpoint <path>``), the ``--help`` flag included. :func:`tidy_help` walks the built command tree once and
gives each parameter the label a user reads instead, by one rule:

* a flag (``--force``, ``--energy/--no-energy``, ``--help``) takes no value and shows no label;
* an option keeps the metavar it was declared with (``metavar="DIR"``), else shows its value's kind:
  ``PATH`` (a path), ``N`` (a whole number), ``FLOAT`` or ``TEXT``;
* a repeatable option shows the label of one value and its help says "repeatable";
* an argument shows its value's kind (``PATH``, ``TEXT``) after its name;
* an old spelling of an option (:data:`HIDDEN_ALIASES`) keeps working but is not shown;
* a command's help is its docstring re-flowed (:func:`reflow`): each paragraph one flowing text that the terminal
  wraps at its width, list items kept one to a line (the typer in use keeps the docstring's own line breaks in
  every paragraph but the first, so ``--help`` showed lines broken mid-sentence);
* a command's line in its group's list is the first paragraph of its docstring as one flowing text.

:func:`usage_message` words a usage error (an unknown option or command) for the one error line: a close name is
suggested only when it really is close (:data:`CLOSE_MATCH`), never the framework's loose guess.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

__all__ = ["CLOSE_MATCH", "HIDDEN_ALIASES", "close_names", "note_fewer_videos", "progress_bar", "reflow",
           "tidy_help", "usage_message", "value_label", "videos_option"]

HIDDEN_ALIASES = frozenset({"--num-videos", "--eval-videos"})
"""Old spellings of ``--videos`` (``export``/``verify``/``evaluate`` had ``--num-videos``, ``finetune`` had
``--eval-videos``): accepted wherever ``--videos`` is, so existing scripts keep working, and left out of help."""

_KIND = {int: "N", float: "FLOAT", str: "TEXT"}
CLOSE_MATCH = 0.8
"""The least :class:`difflib.SequenceMatcher` ratio at which an unknown option or command name is answered with
"did you mean": ``--profle`` -> ``--profile`` (0.94), ``--ot`` -> ``--out`` (0.89); ``--bogus`` -> ``--out``
(0.5, what the framework's 0.6 cutoff let through) is not a suggestion."""
LIST_ITEM = re.compile(r"\s*(?:[*\u2022-]|\d+[.)])\s")
"""A line that starts a list item (``* ``, ``- ``, ``\u2022 ``, ``1. ``, ``1) ``): :func:`reflow` keeps it on a line of its own."""


DEFAULT_PROFILE = "45nm-fp32"
"""The default ``--profile``: the energy module's :data:`svformer_deploy.energy.profiles.DEFAULT_PROFILE` (a test
holds them equal; the CLI starts without importing the energy module)."""
PROFILE_HELP = ("Energy profile: a name `svformer-deploy energy profiles` lists (45nm-fp32, 45nm-fp16, 45nm-int8, "
                "loihi, ...), 45nm-int<N> (N = 1..32 bits), or a YAML/JSON file.")


def profile_option(**kwargs: Any):
    """``--profile NAME|FILE``, the one help text of every command that prices energy (its default, shown by
    ``--help``, is :data:`DEFAULT_PROFILE`)."""
    return typer.Option("--profile", metavar="NAME|FILE", help=PROFILE_HELP, **kwargs)


def videos_option(help: str, **kwargs: Any):
    """``--videos N``, the one name of "how many videos this command works on", with its old spellings."""
    return typer.Option("--videos", *sorted(HIDDEN_ALIASES), help=help, **kwargs)


def note_fewer_videos(asked: int | None, used: int, split: str = "val") -> None:
    """Say on stderr, in one line, that a command used fewer videos than ``--videos`` asked for, and why: the
    split has only ``used`` (every command reads the first ``--videos`` videos of the split, all if it has fewer)."""
    if asked is not None and used < asked:
        typer.echo(f"note: --videos {asked} asks for more videos than the {split} split has; used all {used} of them",
                   err=True)


def progress_bar(iterable: Iterable[Any], total: int, description: str, *, every_s: float = 10.0
                 ) -> Iterable[Any]:
    """The commands' progress over a loop of ``total`` items, the ``progress(iterable, total, description)`` the
    library takes: on a terminal rich's redrawn bar (``track``); otherwise (a log file, a pipe, CI), where a
    redrawn bar would show nothing until the end, one line ``description: i/total (elapsed s)`` on stderr at
    the first item, at most every ``every_s`` seconds, and at the end."""
    import sys
    import time

    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import track

        yield from track(iterable, total=total, description=description, console=Console(stderr=True))
        return
    start = last = time.monotonic()
    i = 0
    for i, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if i == 1 or now - last >= every_s or i == total:
            print(f"{description}: {i}/{total} ({now - start:.0f} s)", file=sys.stderr, flush=True)
            last = now
    if i and i != total:  # fewer items than announced (a small dataset)
        print(f"{description}: {i}/{i} ({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)


def value_label(annotation: Any) -> str:
    """The word for one value of ``annotation``: ``PATH`` for paths, ``N`` for ``int``, ``FLOAT``, else ``TEXT``;
    a ``list[X]`` (a repeatable option) is labelled by ``X``."""
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "PATH"
    return _KIND.get(annotation, "TEXT")


def reflow(text: str) -> str:
    """``text`` (a docstring) with every paragraph as one line, for the terminal to wrap at its width.

    Paragraphs are separated by blank lines and stay separate. Within one, a line that starts a list item
    (:data:`LIST_ITEM`) starts a new line and the lines after it up to the next item are joined to it; every other
    line break becomes a space. A paragraph that starts with ``\\b`` (click's "do not re-wrap") is kept as written.
    """
    paragraphs = []
    for paragraph in re.split(r"\n[ \t]*\n", inspect.cleandoc(text)):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph)
            continue
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not LIST_ITEM.match(line):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def close_names(name: str, names: Iterable[str]) -> list[str]:
    """The ``names`` that ``name`` is a likely typo of (similarity >= :data:`CLOSE_MATCH`), closest first, at most 3."""
    return difflib.get_close_matches(name, sorted(set(names)), n=3, cutoff=CLOSE_MATCH)


def _shown_options(ctx) -> list[str]:
    """Every option name ``--help`` of ``ctx``'s command shows (old spellings left out), ``--help`` included."""
    params = [*ctx.command.params, ctx.command.get_help_option(ctx)]
    return [opt for p in params if p is not None and p.param_type_name == "option" and not p.hidden
            for opt in (*p.opts, *p.secondary_opts)]


def usage_message(err) -> str:
    """The problem of a usage error ``err`` in words, without a final full stop. An unknown option names itself
    and, only when one is close (:func:`close_names`), the option(s) ``--help`` shows that it may be a typo of."""
    from typer._click.exceptions import NoSuchOption

    if not isinstance(err, NoSuchOption) or err.ctx is None:
        return err.format_message().rstrip(".")
    close = close_names(err.option_name, _shown_options(err.ctx))
    return f"No such option: {err.option_name}" + (f" (did you mean {' or '.join(close)}?)" if close else "")


class _Group(TyperGroup):
    """A command group whose answer to an unknown command suggests a command only when it is close
    (:func:`close_names`; the typer in use suggests at a looser cutoff)."""

    def resolve_command(self, ctx, args):
        from typer._click.parser import _split_opt

        name = args[0] if args else None
        if name is not None and self.get_command(ctx, name) is None and not _split_opt(name)[0] \
                and not ctx.resilient_parsing:
            close = close_names(name, self.list_commands(ctx))
            ctx.fail(f"No such command {name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)"
                                                      if close else ""))
        return super().resolve_command(ctx, args)


class _Argument(TyperArgument):
    """An argument whose help row shows the kind of its value (``PATH``) instead of typer's ``<path>``."""

    def display_type_rich(self, ctx) -> str:
        return value_label(self.type_descriptor.annotation)


class _AliasedOption(TyperOption):
    """An option whose old spellings (:attr:`hidden_opts`) are parsed but not listed in help."""

    hidden_opts: list[str]

    def add_to_parser(self, parser, ctx) -> None:
        shown = self.opts
        self.opts = [*shown, *self.hidden_opts]
        try:
            super().add_to_parser(parser, ctx)
        finally:
            self.opts = shown


def _tidy_param(param) -> None:
    if isinstance(param, TyperArgument):
        param.__class__ = _Argument
    elif isinstance(param, TyperOption):
        if param.is_flag:
            param.metavar = ""
        elif param.metavar is None:
            param.metavar = value_label(param.type_descriptor.annotation)
        if param.multiple and "repeatable" not in (param.help or ""):
            param.help = f"{param.help or ''} (repeatable)".strip()
        hidden = [opt for opt in param.opts if opt in HIDDEN_ALIASES]
        if hidden and len(hidden) < len(param.opts):
            param.__class__ = _AliasedOption
            param.hidden_opts = hidden
            param.opts = [opt for opt in param.opts if opt not in HIDDEN_ALIASES]


def tidy_help(command, name: str = "svformer-deploy"):
    """Give every parameter of ``command`` and of its subcommands its help label (see the module docstring);
    returns ``command``. The ``--help`` flag of each command is created here, so that it is tidied too."""
    from typer._click import Context

    if command.help:
        command.help = reflow(command.help)
        if not command.short_help:
            command.short_help = " ".join(command.help.split("\n\n")[0].split())
    for param in command.params:
        _tidy_param(param)
    help_option = command.get_help_option(Context(command, info_name=name))
    if help_option is not None:
        _tidy_param(help_option)
    if isinstance(command, TyperGroup):
        command.__class__ = _Group
        for sub_name, sub in command.commands.items():
            tidy_help(sub, sub_name)
    return command
