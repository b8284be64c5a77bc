"""``--force`` on every command that takes it replaces only an empty folder or an earlier output of the same
command: a user's folder and another command's output are refused with one line (exit 2, before any work),
nothing deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from svformer_deploy._outputs import MARKER, mark_output, output_kinds, write_output_dir
from svformer_deploy.analysis.report import REPORT_OUTPUT as SPARSITY_REPORT
from svformer_deploy.assets import default_checkpoint
from svformer_deploy.energy.report import REPORT_OUTPUT as ENERGY_REPORT
from svformer_deploy.exporters.bundle import BUNDLE_OUTPUT
from svformer_deploy.training.outputs import EVALUATION, FINETUNE_RUN, TRAIN_RUN
from tests.helpers import run_cli


def _files(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("x")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(output, *names):
    """A folder of ``names`` that the command of ``output`` wrote there (marked first, as the command does)."""
    return lambda d: (mark_output(d, output), _files(d, *names))


KINDS = {  # how each kind of earlier output looks, as its command writes it (marker included)
    "users-folder": lambda d: _files(d, "thesis.txt"),
    "export": lambda d: write_output_dir(d, lambda tmp: _files(tmp, "model.nir"), BUNDLE_OUTPUT),
    "energy-report": lambda d: write_output_dir(
        d, lambda tmp: _files(tmp, "report.md", "summary.json", "per_layer.csv", "per_video.csv"), ENERGY_REPORT),
    "sparsity-report": lambda d: write_output_dir(
        d, lambda tmp: _files(tmp, "firing_rates.csv", "predictions.csv", "summary.json"), SPARSITY_REPORT),
    "train": _run(TRAIN_RUN, "last.pt", "metrics.csv", "metrics.json"),
    "finetune": _run(FINETUNE_RUN, "last.pt", "metrics.csv", "finetune.json"),
}

COMMANDS = {  # command -> (argv with OUT, the kind it writes)
    "energy report": (["energy", "report", "{ckpt}", "--out", "{out}", "--force", "--videos", "1"], "energy-report"),
    "sparsity": (["sparsity", "{ckpt}", "--out", "{out}", "--force", "--videos", "1"], "sparsity-report"),
    "export nir": (["export", "{ckpt}", "--to", "nir", "--out", "{out}", "--force", "--num-videos", "1"], "export"),
    "export onnx": (["export", "{ckpt}", "--to", "onnx", "--out", "{out}", "--force", "--num-videos", "1"], "export"),
    "demo": (["demo", "--pretrained", "--out", "{out}", "--force"], "demo"),
    "evaluate": (["evaluate", "{ckpt}", "--out", "{out}", "--force", "--num-videos", "1"], "evaluation"),
    "train": (["train", "--out", "{out}", "--force", "--epochs", "1"], "train"),
    "finetune": (["finetune", "{ckpt}", "--out", "{out}", "--force", "--epochs", "1"], "finetune"),
}
# A command that writes its own files into a folder (evaluate, train, finetune) deletes nothing and needs --force
# only where its own files are: a users-folder case for it is the other kinds holding such files.
CASES = [(cmd, kind) for cmd, (_, own) in COMMANDS.items() for kind in KINDS
         if kind != own and not (cmd in {"evaluate", "train", "finetune"} and kind == "users-folder")
         and not (cmd == "evaluate" and kind not in {"sparsity-report"})
         and not (cmd in {"train", "finetune"} and kind not in {"train", "finetune"})]


@pytest.mark.parametrize(("command", "kind"), CASES, ids=[f"{c}-over-{k}" for c, k in CASES])
def test_force_refuses_a_users_folder_and_another_commands_output(command, kind, tmp_path, capsys):
    out = tmp_path / "my papers ü"
    KINDS[kind](out)
    before = _tree(tmp_path)
    argv, _ = COMMANDS[command]
    argv = [a.format(ckpt=default_checkpoint(), out=out) for a in argv]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "remove that folder yourself" in err, err
    assert _tree(tmp_path) == before  # nothing deleted, nothing written (no marker either)


def test_the_reported_case_thesis_survives_energy_report_force(tmp_path, capsys):
    papers = tmp_path / "my papers"
    papers.mkdir()
    (papers / "thesis.txt").write_text("important")
    assert run_cli(["energy", "report", str(default_checkpoint()), "--out", str(papers), "--force",
                    "--videos", "1"]) == 2
    assert "did not write (it holds thesis.txt)" in capsys.readouterr().err
    assert (papers / "thesis.txt").read_text() == "important"


def test_evaluate_force_replaces_its_own_files_beside_a_training_run(tmp_path, capsys):
    out = tmp_path / "run é"
    KINDS["train"](out)  # a training run
    argv = ["evaluate", str(default_checkpoint()), "--out", str(out), "--num-videos", "2"]
    assert run_cli(argv) in (0, None)
    assert output_kinds(out) == ["train", "evaluation"] and (out / MARKER).is_file()
    assert run_cli(argv) == 2 and "--force" in capsys.readouterr().err
    (out / "eval.json").write_text("old")
    assert run_cli([*argv, "--force"]) in (0, None)
    assert (out / "eval.json").read_text() != "old" and (out / "last.pt").read_text() == "x"


FOREIGN = {  # folders holding files train / finetune / evaluate did not write (beside a run of kind `run`)
    "users-folder": lambda d, run: _files(d, "thesis.txt", "notes.md"),
    "lone-checkpoint": lambda d, run: _files(d, "best.pt"),  # a user's copy: train would write over it
    "run-with-users-file": lambda d, run: (KINDS[run](d), _files(d, "thesis.txt")),
}


@pytest.mark.parametrize("force", [False, True], ids=["", "force"])
@pytest.mark.parametrize("folder", list(FOREIGN))
@pytest.mark.parametrize("command", ["train", "finetune", "evaluate"])
def test_run_commands_never_write_among_a_users_files(command, folder, force, tmp_path, capsys):
    """`train --out DIR --force` into a folder of a user's files trained there (deleting nothing, but writing
    last.pt, best.pt, metrics beside them, or over a file of the same name) although its help said --force acts
    "only" on an earlier run. train, finetune and evaluate now refuse such a folder before any work, with or
    without --force, naming the files and the fix."""
    out = tmp_path / "my papers ü"
    FOREIGN[folder](out, "finetune" if command == "finetune" else "train")
    before = _tree(tmp_path)
    argv, _ = COMMANDS[command]
    argv = [a.format(ckpt=default_checkpoint(), out=out) for a in argv if force or a != "--force"]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err, err
    named = {"users-folder": "notes.md, thesis.txt", "lone-checkpoint": "best.pt",
             "run-with-users-file": "thesis.txt"}[folder]
    assert f"holds {named}, which svformer-deploy train/finetune/evaluate did not write" in err, err
    assert "Choose another --out, or move those files out of it" in err
    assert "--force" not in err  # not a way out, and not what the user may have typed
    assert _tree(tmp_path) == before  # nothing written, not even a marker


@pytest.mark.parametrize("force", [False, True], ids=["", "force"])
@pytest.mark.parametrize(("command", "other"), [("train", "finetune"), ("finetune", "train")])
def test_train_and_finetune_never_share_a_folder_as_their_help_says(command, other, force, tmp_path, capsys):
    """The reported case: `train --out ft/budget-0.1` (a fine-tuning run with an evaluation beside it) was refused
    with a message about --force (given or not) although train's --out help accepted "earlier
    train/finetune/evaluate outputs". Both write last.pt and metrics, so neither goes into the other's folder; the
    help and the error state the same rule (run_folder_rule), and the error names --force only as the help does."""
    from typer.main import get_command

    from svformer_deploy._outputs import run_folder_rule
    from svformer_deploy.cli import app

    out = tmp_path / "ft" / "budget-0.1"
    KINDS[other](out)
    mark_output(out, EVALUATION)
    (out / "eval.json").write_text("{}")
    before = _tree(tmp_path)
    argv, _ = COMMANDS[command]
    argv = [a.format(ckpt=default_checkpoint(), out=out) for a in argv if force or a != "--force"]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    words = {"train": "a training run (svformer-deploy train)", "finetune": "a fine-tuning run (svformer-deploy "
             "finetune)"}[other]
    assert len(err.splitlines()) == 1 and f"--out {out} is {words} and evaluation results" in err, err
    rule = run_folder_rule({"train": TRAIN_RUN, "finetune": FINETUNE_RUN}[command])
    assert f"svformer-deploy {command} writes only into {rule}" in err, err
    assert "--force" not in err and "goes only into" not in err, err
    assert _tree(tmp_path) == before
    (option,) = [p for p in get_command(app).commands[command].params if p.name == "out"]
    assert rule in option.help and other.replace("finetune", "fine-tuning") in option.help


def test_evaluate_goes_beside_either_run(tmp_path):
    from svformer_deploy._outputs import refuse_whole_output, run_folder_rule

    for kind in ("train", "finetune"):
        KINDS[kind](tmp_path / kind)
        refuse_whole_output(tmp_path / kind, EVALUATION)  # no error
    assert "earlier train, finetune and evaluate outputs" in run_folder_rule(EVALUATION)


def test_commands_writing_one_file_replace_only_their_own_kind_of_file(tmp_path, capsys):
    """import-official --force replaces only an earlier svformer-deploy checkpoint; energy price --json only an
    earlier price summary; a user's file is never overwritten."""
    thesis = tmp_path / "thesis ü.txt"
    thesis.write_text("important")
    assert run_cli(["import-official", str(default_checkpoint()), "--out", str(thesis), "--force"]) == 2
    err = capsys.readouterr().err
    assert "is not an earlier svformer-deploy checkpoint" in err and "remove that file yourself" in err
    rates = Path(__file__).parents[1] / "energy" / "data" / "svformer_ucf101_published_rates.csv"
    price = ["energy", "price", "--model", "svformer_ucf101", "--rates", str(rates), "--json"]
    assert run_cli([*price, str(thesis)]) == 2
    assert "is not an earlier `energy price` summary" in capsys.readouterr().err
    assert thesis.read_text() == "important"
    summary = tmp_path / "price.json"
    assert run_cli([*price, str(summary)]) in (0, None)
    import json

    earlier = json.loads(summary.read_text())
    summary.write_text(json.dumps({**earlier, "stale": True}))
    assert run_cli([*price, str(summary)]) in (0, None)  # an earlier summary: replaced
    assert json.loads(summary.read_text()) == earlier


@pytest.mark.parametrize("marker", [True, False], ids=["with-marker", "without-a-marker"])
def test_force_keeps_files_a_user_added_to_an_earlier_output(marker, tmp_path, capsys):
    """--force deletes the whole folder: an earlier export with the user's notes (or figures) added is refused."""
    out = tmp_path / "paper draft"
    if marker:
        KINDS["export"](out)
    else:  # an energy report's files without a marker: a folder svformer-deploy did not write
        _files(out, "report.md", "summary.json", "per_layer.csv", "per_video.csv")
    _files(out, "thesis.txt")
    (out / "figures").mkdir()
    (out / "figures" / "fig1.svg").write_text("x")
    before = _tree(tmp_path)
    argv = (["export", str(default_checkpoint()), "--to", "nir", "--out", str(out), "--force", "--videos", "1"]
            if marker else ["energy", "report", str(default_checkpoint()), "--out", str(out), "--force",
                            "--videos", "1"])
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "remove that folder yourself" in err
    assert ("thesis.txt" in err) if marker else ("did not write" in err)  # the marker lists what its command wrote
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("command", ["evaluate", "train", "finetune"])
def test_commands_writing_into_a_folder_stay_out_of_another_commands_output(command, tmp_path, capsys):
    """evaluate / train / finetune write their own files into --out; into a report or bundle they would change an
    output that its own --force then no longer recognises: refused before any work, even without --force."""
    out = tmp_path / "report ü"
    KINDS["energy-report"](out)
    before = _tree(tmp_path)
    argv, _ = COMMANDS[command]
    argv = [a.format(ckpt=default_checkpoint(), out=out) for a in argv if a != "--force"]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "energy report" in err and "Choose another --out" in err
    assert _tree(tmp_path) == before and output_kinds(out) == ["energy-report"]
