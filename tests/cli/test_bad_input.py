"""What a new user passes by mistake (a missing file, a folder where a file goes, a file where a folder goes), with
spaces and non-ASCII letters in the names: one line on stderr naming the problem and the fix, exit 2, nothing
written, nothing touched."""

from __future__ import annotations

import pytest

from svformer_deploy.cli import build_command
from svformer_deploy.assets import default_checkpoint
from tests.helpers import run_cli

NAME = "mödel ü space"


@pytest.fixture()
def where(tmp_path):
    """A folder and a non-checkpoint file, both named with spaces and non-ASCII letters."""
    folder = tmp_path / f"{NAME} dir"
    folder.mkdir()
    file = tmp_path / f"{NAME}.txt"
    file.write_text("keep me")
    return {"dir": folder, "file": file, "missing": tmp_path / f"{NAME} missing", "ckpt": default_checkpoint(),
            "out": tmp_path / f"{NAME} out"}


CASES = [
    (["energy", "report", "{dir}", "--out", "{out}"], "{dir} is a folder, not a file"),
    (["energy", "report", "{ckpt}", "--accuracy", "{dir}", "--out", "{out}"], "accuracy file {dir} is a folder"),
    (["energy", "report", "{ckpt}", "--profile", "{dir}", "--out", "{out}"], "profile file {dir} is a folder"),
    (["energy", "report", "{ckpt}", "--data", "{file}", "--out", "{out}"], "data folder {file} is a file"),
    (["energy", "price", "--model", "svformer_tiny", "--rates", "{dir}"], "rates file {dir} is a folder"),
    (["import-official", "{dir}", "--out", "{out}"], "official checkpoint {dir} is a folder, not a file"),
    (["verify", "{missing}"], "export bundle {missing} does not exist"),
    (["verify", "{file}"], "export bundle {file} is a file, not a bundle folder"),
    (["info", "{dir}"], "checkpoint {dir} is a folder, not a file; pass the .pt file inside it"),
    (["export", "{dir}", "--to", "nir", "--out", "{out}"], "checkpoint {dir} is a folder, not a file"),
    (["export", "{missing}", "--to", "nir", "--out", "{out}"], "{missing} does not exist"),
    (["evaluate", "{ckpt}", "--out", "{file}", "--force"], "--out {file} is a file"),
    (["evaluate", "{ckpt}", "--data", "{missing}", "--out", "{out}"], "'{missing}' is neither 'moving-digits' nor a folder"),
    (["evaluate", "{ckpt}", "--out", "{file}/sub"], "--out {file}/sub lies below the file {file}"),
    (["train", "--out", "{file}", "--force"], "--out {file} is a file"),
    (["finetune", "{ckpt}", "--out", "{file}", "--spike-budget", "0.05"], "--out {file} is a file"),
    (["finetune", "{ckpt}", "--out", "{file}/sub", "--bn", "keep", "--rate-weight", "1"], "lies below the file {file}"),
]


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in enumerate(CASES)])
def test_a_wrong_path_is_one_line_naming_it_and_exit_2(argv, words, where, capsys):
    before = {p.name for p in where["file"].parent.iterdir()}
    assert run_cli([a.format(**where) for a in argv]) == 2
    out = capsys.readouterr()
    err = out.err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert words.format(**where) in err, err
    assert {p.name for p in where["file"].parent.iterdir()} == before  # nothing written
    assert where["file"].read_text() == "keep me" and not any(where["dir"].iterdir())
    assert "videos" not in out.out  # refused before any work: no progress bar


USAGE = [(["export"], "Missing argument 'checkpoint'", "svformer-deploy export"),
         # `export x.pt --to nir` without --out is no error any more (issue 26.5: a default folder)
         (["export", "x.pt"], "Missing option '--to'", "svformer-deploy export"),
         (["energy", "report", "x.pt", "--videos", "abc"], "Invalid value for '--videos'", "svformer-deploy energy report"),
         (["train", "--epochs", "0"], "Invalid value for '--epochs'", "svformer-deploy train"),
         (["sparsity", "x.pt", "--out", "o", "--vidoes", "3"], "No such option: --vidoes (did you mean --videos?)",
          "svformer-deploy sparsity"),
         (["energy", "report", "x.pt", "--profle", "loihi"], "No such option: --profle (did you mean --profile?)",
          "svformer-deploy energy report"),
         (["energy", "report", "--bogus"], "No such option: --bogus", "svformer-deploy energy report"),
         (["energy", "repot"], "No such command 'repot' (did you mean 'report'?)", "svformer-deploy energy"),
         (["bogus"], "No such command 'bogus'", "svformer-deploy"),
         # an option without its value is raised without a context: the command's help all the same (a new
         # user's report: these pointed to `svformer-deploy --help`)
         (["energy", "report", "x.pt", "--out"], "Option '--out' requires an argument",
          "svformer-deploy energy report"),
         (["train", "--epochs"], "Option '--epochs' requires an argument", "svformer-deploy train"),
         (["--debug", "energy", "price", "--rates"], "Option '--rates' requires an argument",
          "svformer-deploy energy price")]


@pytest.mark.parametrize("argv, problem, command", USAGE, ids=[" ".join(a) for a, _, _ in USAGE])
def test_a_usage_error_is_one_line_with_the_command_help_to_see(argv, problem, command, capsys):
    """A typo, a missing or malformed option: the same one-line form as every other bad input (was a framed
    panel after the usage line), exit 2."""
    assert run_cli(argv) == 2
    out = capsys.readouterr()
    err = out.err.strip()
    assert err == f"error: {err[7:]}" and len(err.splitlines()) == 1 and not out.out, err
    assert problem in err and err.endswith(f"; see `{command} --help`"), err
    assert "--num-videos" not in err and "--eval-videos" not in err  # suggestions name what help shows


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(build_command()))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "root" for p, _ in COMMANDS])
def test_an_unknown_option_is_named_and_only_a_close_one_suggested(path, command, capsys):
    """`energy report --bogus` said "(Possible options: --out)": the framework's suggestion at a 0.6 similarity.
    Every command names the unknown option and points to --help; it suggests an option only for a real typo."""
    assert run_cli([*path, "--bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: No such option: --bogus; see `{' '.join(('svformer-deploy', *path))} --help`", err
    longest = max((o for p in command.params if p.param_type_name == "option" for o in p.opts
                   if o.startswith("--")), key=len, default="--help")
    typo = longest[:len(longest) // 2 + 1] + longest[len(longest) // 2 + 2:]  # one letter dropped
    assert run_cli([*path, typo]) == 2
    err = capsys.readouterr().err.strip()
    assert f"No such option: {typo} (did you mean " in err and longest in err.split("did you mean", 1)[1], err


def test_help_and_a_bare_group_still_show_help(capsys):
    assert run_cli(["export", "--help"]) == 0
    assert "--videos" in capsys.readouterr().out
    assert run_cli(["energy"]) == 2  # a group without a command: its help (exit 2, as the framework does)
    assert "report" in capsys.readouterr().out
