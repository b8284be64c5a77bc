"""How the commands are declared and shown in ``--help``, through Typer's public extension points only.

Every command of the CLI is declared on an :class:`App` (a ``typer.Typer`` whose commands are of class
:class:`Command`, whose groups are of class :class:`Group`: typer's documented ``cls=``). They give each parameter
the label a user reads, by one rule, when typer builds them:

* a flag (``--force``, ``--energy/--no-energy``, ``--help``) takes no value and shows no label;
* an option keeps the metavar it was declared with (``metavar="DIR"``), else shows its value's kind:
  ``PATH`` (a path), ``N`` (a whole number), ``FLOAT`` or ``TEXT``;
* a repeatable option shows the label of one value and its help says "repeatable";
* an argument shows the framework's own label of its type (``<path>``, ``<str>``): typer offers no public way
  to change it;
* an old spelling of an option (:data:`HIDDEN_ALIASES`) keeps working but is not shown: :meth:`Command.parse_args`
  reads it as ``--videos`` (the option declares only its one name);
* a command's help is its docstring re-flowed (:func:`reflow`): each paragraph one flowing text that the terminal
  wraps at its width, list items kept one to a line; its line in its group's list is the first paragraph;
* a help text may name a registry list (:data:`HELP_LISTS`: ``{profiles}``, ``{baselines}``, ``{targets}``,
  ``{verifiers}``, ``{chips}``), filled from the registry when the help is shown, so the CLI starts without loading them.

:func:`usage_message` words a usage error (an unknown option or command) for the one error line: a close name is
suggested only when it really is close (:data:`CLOSE_MATCH`), never the framework's loose guess.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterable
from pathlib import PurePath
from typing import Any, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["App", "Command", "Group", "CLOSE_MATCH", "HELP_LISTS", "HIDDEN_ALIASES", "close_names",
           "note_fewer_videos", "progress_bar", "reflow", "usage_message", "value_label", "videos_option",
           "profile_option", "is_usage_error"]

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


def _profiles() -> str:
    from svformer_deploy.energy.profiles import list_profiles

    return ", ".join(list_profiles())


def _baselines() -> str:
    from svformer_deploy.energy.baselines import list_baselines

    return ", ".join(list_baselines())


def _targets(writes: bool) -> str:
    from svformer_deploy.exporters import get_exporter, list_targets

    return ", ".join(t for t in list_targets() if (get_exporter(t).export is not None) == writes)


def _chips() -> str:
    from svformer_deploy.chip.arch import list_chips

    return ", ".join(list_chips())


HELP_LISTS: dict[str, Callable[[], str]] = {
    "{chips}": _chips,
    "{profiles}": _profiles,
    "{baselines}": _baselines,
    "{targets}": lambda: _targets(writes=True),
    "{verifiers}": lambda: _targets(writes=False),
}
"""Placeholders a help text may hold -> the registry list that replaces it when ``--help`` is shown: the energy
profiles, the ANN baselines, the export targets, the verify-only runtimes and the registered chips."""

DEFAULT_PROFILE = "45nm-fp32"
"""The default ``--profile``: the energy module's :data:`svformer_deploy.energy.profiles.DEFAULT_PROFILE` (a test
holds them equal; the CLI starts without importing the energy module)."""
PROFILE_HELP = ("Energy profile: a name `svformer-deploy energy profiles` lists ({profiles}), 45nm-int<N> "
                "(N = 1..32 bits), or a YAML/JSON file.")


def profile_option(**kwargs: Any):
    """``--profile NAME|FILE``, the one help text of every command that prices energy (its default, shown by
    ``--help``, is :data:`DEFAULT_PROFILE`)."""
    return typer.Option("--profile", metavar="NAME|FILE", help=PROFILE_HELP, **kwargs)


def videos_option(help: str, **kwargs: Any):
    """``--videos N``, the one name of "how many videos this command works on" (its old spellings,
    :data:`HIDDEN_ALIASES`, are read by :meth:`Command.parse_args`)."""
    return typer.Option("--videos", help=help, **kwargs)


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
    """Every option name ``--help`` of ``ctx``'s command shows, ``--help`` included."""
    params = [*ctx.command.params, ctx.command.get_help_option(ctx)]
    return [opt for p in params if p is not None and p.param_type_name == "option" and not p.hidden
            for opt in (*p.opts, *p.secondary_opts)]


def is_usage_error(err: BaseException) -> bool:
    """Whether ``err`` is a usage error of the parser (an unknown option or command, a missing or malformed
    value). Typer re-exports none of its click's usage errors but ``BadParameter``, so they are known by click's
    documented protocol: ``format_message()``, ``exit_code`` and the ``ctx`` they were raised in."""
    return callable(getattr(err, "format_message", None)) and isinstance(getattr(err, "exit_code", None), int) \
        and hasattr(err, "ctx")


def usage_message(err) -> str:
    """The problem of a usage error ``err`` in words, without a final full stop. An unknown option (click's
    ``NoSuchOption``: it carries ``option_name`` and ``possibilities``) names itself and, only when one is close
    (:func:`close_names`), the option(s) ``--help`` shows that it may be a typo of."""
    if not hasattr(err, "possibilities") or err.ctx is None:
        return err.format_message().rstrip(".")
    close = close_names(err.option_name, _shown_options(err.ctx))
    return f"No such option: {err.option_name}" + (f" (did you mean {' or '.join(close)}?)" if close else "")


def _label(param) -> None:
    """Give an option its help label (see the module docstring); arguments keep the framework's."""
    if not isinstance(param, TyperOption):
        return
    if param.is_flag:
        if param.metavar is None:
            param.metavar = ""
    elif param.metavar is None:
        param.metavar = value_label(param.type_descriptor.annotation)
    if param.multiple and "repeatable" not in (param.help or ""):
        param.help = f"{param.help or ''} (repeatable)".strip()


def _help_texts(help: str | None, short_help: str | None) -> tuple[str | None, str | None]:
    """A command's help re-flowed (:func:`reflow`) and its short help: the first paragraph as one text."""
    if not help:
        return help, short_help
    help = reflow(help)
    return help, short_help or " ".join(help.split("\n\n")[0].split())


def _fill_lists(command, ctx) -> None:
    """Replace the :data:`HELP_LISTS` placeholders in the help of ``command``'s parameters (at ``--help``)."""
    for param in command.get_params(ctx):
        text = getattr(param, "help", None) or ""
        for key, names in HELP_LISTS.items():
            if key in text:
                text = text.replace(key, names())
                param.help = text


def _unalias(args: list[str]) -> list[str]:
    """``args`` with every old spelling of ``--videos`` (:data:`HIDDEN_ALIASES`, also as ``--old=N``) written as
    ``--videos``; nothing after ``--`` is touched."""
    out, rest = [], False
    for arg in args:
        name, eq, value = arg.partition("=")
        if not rest and name in HIDDEN_ALIASES:
            arg = f"--videos{eq}{value}"
        rest = rest or arg == "--"
        out.append(arg)
    return out


class _Labelled:
    """What :class:`Command` and :class:`Group` share: every parameter (``--help`` too) labelled by
    :func:`_label`, help texts re-flowed by :func:`_help_texts`."""

    def __init__(self, *args: Any, params: list | None = None, help: str | None = None,
                 short_help: str | None = None, **kwargs: Any) -> None:
        for param in params or []:
            _label(param)
        help, short_help = _help_texts(help, short_help)
        super().__init__(*args, params=params, help=help, short_help=short_help, **kwargs)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            _label(option)
        return option


class Command(_Labelled, TyperCommand):
    """A command of this CLI: labelled options, re-flowed help, registry lists in its help, ``--videos``'s old
    spellings (see the module docstring)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if any("--videos" in getattr(p, "opts", ()) for p in self.params):
            args = _unalias(args)
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter) -> None:
        _fill_lists(self, ctx)
        super().format_help(ctx, formatter)


class Group(_Labelled, TyperGroup):
    """A command group of this CLI: labelled options and re-flowed help as :class:`Command`; an unknown command is
    answered with a suggestion only when it is close (:func:`close_names`; the framework suggests at a looser
    cutoff); a bare group shows its help and exits 2."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["suggest_commands"] = False  # close_names answers, at a stricter cutoff (resolve_command)
        super().__init__(**kwargs)

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            text = ctx.get_help()  # rich prints the help itself and returns ""
            if text:
                typer.echo(text)
            ctx.exit(2)
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx, args: list[str]):
        name = args[0] if args else None
        if name and name[:1].isalnum() and self.get_command(ctx, name) is None and not ctx.resilient_parsing:
            close = close_names(name, self.list_commands(ctx))
            ctx.fail(f"No such command {name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)"
                                                      if close else ""))
        return super().resolve_command(ctx, args)


class App(typer.Typer):
    """``typer.Typer`` whose groups are :class:`Group` and whose commands are :class:`Command` (typer's ``cls=``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=Group, **kwargs)

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any):
        return super().command(name, cls=cls or Command, **kwargs)
