"""``--help`` reads like a well-made CLI (no type noise, a word for each value), and ``--videos`` is the one name of
the video count, with the old spellings still accepted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.core import TyperGroup, TyperOption

from svformer_deploy.cli import build_command
from svformer_deploy.cli._options import HIDDEN_ALIASES, progress_bar, value_label
from tests.helpers import run_cli


def _commands(command=None, path=()):
    """(path, command) of every command of the CLI, groups included, found by walking the built tree."""
    command = command or build_command()
    yield path, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


COMMANDS = [path for path, _ in _commands()]
VIDEO_COMMANDS = [("export", "c.pt", "--to", "nir", "--out", "o"), ("verify", "bundle"), ("evaluate", "c.pt"),
                  ("finetune", "c.pt"), ("sparsity", "c.pt", "--out", "o"), ("energy", "report", "c.pt")]
TYPE_NOISE = re.compile(r"<(bool|int|float|str|path|list\[|int range|float range)[^>]*>")


def test_the_walk_finds_every_command():
    assert {(), ("export",), ("energy",), ("energy", "report"), ("energy", "price"), ("train",), ("info",)} \
        <= set(COMMANDS)
    assert len(COMMANDS) >= 14


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "root")
def test_help_has_no_type_noise_and_flags_take_no_label(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one row per option: a label is never wrapped away from its option
    assert run_cli([*path, "--help"]) == 0
    text = capsys.readouterr().out
    # the Arguments panel keeps typer's own type label (<path>, <str>): typer has no public way to change it
    options = re.sub(r"╭─ Arguments.*?╰─+╯\n", "", text, flags=re.S)
    assert "<bool>" not in options and "<list[" not in options and not TYPE_NOISE.search(options), text
    assert re.search(r"--help +Show this message and exit\.", text), text
    assert "--no-force" not in text  # --force is spelled alike on every command (a flag, no --no- twin)
    for hidden in HIDDEN_ALIASES:
        assert hidden not in text
    command = dict(_commands())[path]
    for param in command.params:
        if not isinstance(param, TyperOption) or param.hidden:
            continue
        name = re.escape(param.opts[0])
        row = next(line for line in text.splitlines() if re.match(rf"\W*(\*\s+)?{name}\b", line))
        if param.is_flag:  # the option name(s), then straight to the help text
            assert param.metavar == "" and re.search(rf"{name}(\s+--no-\S+)?\s{{2,}}[A-Z]", row), row
        else:  # the option name(s), then one word for its value
            assert re.fullmatch(r"[A-Za-z][\w|,=]*", param.metavar), param.metavar
            assert re.search(rf"{name}(\s+-\w)?\s+{re.escape(param.metavar)}\s", row), row
        if param.multiple:
            assert "repeatable" in param.help, param.opts


@pytest.mark.parametrize("group, summary", [
    ((), "Distil a checkpoint into an exportable student: shared BN (starting from the time-averaged map that "
         "--approximate-bn folds) and/or a spike budget."),
    (("energy",), "under every convention and the memory model; print a markdown report.")])
def test_a_group_lists_each_command_with_its_summary_as_flowing_text(group, summary, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    assert run_cli([*group, "--help"]) == 0
    assert summary in capsys.readouterr().out
    assert all("\n" not in command.short_help for _, command in _commands() if command.help)


def test_value_options_say_what_they_take():
    """The labels a user reads for the common options: a folder, a file, a count, a name."""
    labels = {(path, opt): p.metavar for path, cmd in _commands() for p in cmd.params
              if isinstance(p, TyperOption) for opt in p.opts}
    assert labels[("export",), "--out"] == "DIR" and labels[("export",), "--videos"] == "N"
    assert labels[("import-official",), "--out"] == "FILE"
    assert labels[("energy", "report"), "--baseline"] == "NAME" and labels[("finetune",), "--lr"] == "FLOAT"
    assert labels[("train",), "--set"] == "KEY=VALUE" and labels[("energy", "price"), "--views"] == "CLIPSxCROPS"


@pytest.mark.parametrize("annotation, label", [(Path, "PATH"), (int, "N"), (float, "FLOAT"), (str, "TEXT"),
                                               (list[float], "FLOAT"), (list[str], "TEXT"), (list[Path], "PATH")])
def test_value_label(annotation, label):
    assert value_label(annotation) == label


def _videos(argv: tuple[str, ...]) -> int | None:
    """The video count ``argv`` parses to, without running the command."""
    command, path = build_command(), list(argv)
    while isinstance(command, TyperGroup):
        command = command.commands[path.pop(0)]
    (name,) = [p.name for p in command.params if "--videos" in p.opts]
    return command.make_context("svformer-deploy", path).params[name]


@pytest.mark.parametrize("argv", VIDEO_COMMANDS, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("spelling", ["--videos", "--num-videos", "--eval-videos"])
def test_every_command_takes_videos_and_its_old_spellings(argv, spelling):
    assert _videos((*argv, spelling, "7")) == _videos((*argv, f"{spelling}=7")) == _videos((*argv, "--videos", "7")) == 7
    assert _videos((*argv, spelling, "3")) == 3 != _videos(argv)


@pytest.mark.parametrize("argv", VIDEO_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_help_names_videos_once(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    path = argv[:2] if argv[0] == "energy" else argv[:1]
    assert run_cli([*path, "--help"]) == 0
    text = capsys.readouterr().out
    assert len(re.findall(r"--videos\b", text)) == 1 and "--num-videos" not in text and "--eval-videos" not in text


def test_an_old_spelling_reaches_the_command(tmp_path, capsys):
    """The old spelling runs through the whole CLI (a value the command refuses shows it was received)."""
    assert run_cli(["export", str(tmp_path / "missing.pt"), "--to", "nir", "--out", str(tmp_path / "o"),
                    "--num-videos", "0"]) == 2
    assert "'--videos'" in capsys.readouterr().err


def test_progress_off_a_terminal_is_plain_lines_on_stderr(capsys):
    # pytest's captured stderr is not a terminal: a redrawn bar would show nothing until the end
    assert list(progress_bar(iter(range(3)), 3, "counting", every_s=0)) == [0, 1, 2]
    cap = capsys.readouterr()
    assert cap.out == "" and [line.split(" (")[0] for line in cap.err.splitlines()] == [
        "counting: 1/3", "counting: 2/3", "counting: 3/3"]
    assert list(progress_bar(range(2), 5, "videos", every_s=3600)) == [0, 1]  # fewer than announced
    assert [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()] == ["videos: 1/5", "videos: 2/2"]


WIDTH = 100  # COLUMNS of the help tests below; rich pads the description by one column each side


def _premature_breaks(rows: list[str], width: int) -> list[tuple[str, str]]:
    """Pairs of consecutive wrapped ``rows`` of one paragraph where the next row's first word would still have fit
    on the row before within ``width`` columns: the break came from the source's line breaks, not from the
    terminal width (a row that starts a list item or is a ``[default: ...]`` note is a break by design)."""
    from svformer_deploy.cli._options import LIST_ITEM

    return [(a, b) for a, b in zip(rows, rows[1:])
            if b.strip() and not LIST_ITEM.match(b) and not b.lstrip().startswith("[")
            and len(a.rstrip()) + 1 + len(b.split()[0]) <= width]


def _help_layout(text: str) -> tuple[list[list[str]], list[list[str]]]:
    """The description paragraphs (rows without the left padding) and the panels' rows (the text between the box
    sides) of one rendered ``--help``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))
    paragraphs: list[list[str]] = [[]]
    for line in lines[start:end]:
        if line.strip():
            paragraphs[-1].append(line[1:].rstrip())
        elif paragraphs[-1]:
            paragraphs.append([])
    panels: list[list[str]] = []
    for line in lines[end:]:
        if line.startswith("╭"):
            panels.append([])
        elif line.startswith("│"):
            panels[-1].append(line[1:line.rindex("│")].rstrip())
    return [p for p in paragraphs if p], panels


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "root")
def test_help_paragraphs_are_reflowed_at_the_terminal_width(path, capsys, monkeypatch):
    """Every paragraph of a command's help wraps at the terminal width, never where the docstring's lines happened
    to end (``export --help`` and ``sparsity --help`` showed "Exits 1 / only when" and "wrong, Q/K/V / sparsity"
    broken mid-sentence), and the docstring's paragraphs stay separate paragraphs."""
    import inspect

    monkeypatch.setenv("COLUMNS", str(WIDTH))
    assert run_cli([*path, "--help"]) == 0
    paragraphs, panels = _help_layout(capsys.readouterr().out)
    source = [" ".join(p.split()) for p in inspect.cleandoc(dict(_commands())[path].help).split("\n\n")]
    assert [" ".join(" ".join(rows).split()) for rows in paragraphs] == source
    for rows in paragraphs:
        assert max(map(len, rows)) <= WIDTH - 2, rows
        assert not _premature_breaks(rows, WIDTH - 2), rows
    for rows in panels:  # the help column is the last one: it reaches at least as far right as any row's text
        right = max(map(len, rows))
        for a, b in zip(rows, rows[1:]):
            if len(b) - len(b.lstrip()) > 4:  # a continuation row: blank where a new row has its name
                assert not _premature_breaks([a, b], right), (a, b)


def test_reflow_joins_lines_keeps_paragraphs_lists_and_unwrapped_blocks():
    from svformer_deploy.cli._options import reflow

    doc = """First line
        goes on.

        Goal: one
        sentence over
        three lines.

        Steps:
        * one item
          wrapped
        - two
        1. three

        \b
        kept
        as is
        """
    assert reflow(doc) == ("First line goes on.\n\nGoal: one sentence over three lines.\n\n"
                           "Steps:\n* one item wrapped\n- two\n1. three\n\n\b\nkept\nas is")


def test_every_profile_option_has_the_one_help_naming_the_int_family_and_its_default():
    """The reported case: `energy price`, `sparsity` and `finetune` described --profile without 45nm-int<N>, and
    sparsity's said "(default: the energy module's default)" without naming it."""
    from svformer_deploy.cli._options import DEFAULT_PROFILE, PROFILE_HELP
    from svformer_deploy.energy.profiles import DEFAULT_PROFILE as ENERGY_DEFAULT

    options = {path: p for path, command in _commands() for p in command.params if "--profile" in getattr(p, "opts", ())}
    assert {("energy", "report"), ("energy", "price"), ("sparsity",), ("finetune",)} <= set(options)
    assert DEFAULT_PROFILE == ENERGY_DEFAULT and "45nm-int<N>" in PROFILE_HELP
    for path, option in options.items():
        assert (option.help, option.metavar, option.default) == (PROFILE_HELP, "NAME|FILE", DEFAULT_PROFILE), path
