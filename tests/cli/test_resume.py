"""``train --resume FILE`` and ``finetune --resume``: a checkpoint that is not a resumable run of the command's own
kind, or nothing to resume, is one clear error line (exit 2) naming what it is and the fix, before any work and
with nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from svformer_deploy.models import save_checkpoint
from tests.exporters.conftest import active_model
from tests.helpers import run_cli

TRAIN = ["train", "--epochs", "1", "--train-clips", "16", "--val-videos", "2", "--batch-size", "8", "--set",
         "img_size=32", "--set", "num_frames=4", "--precise-bn-batches", "0", "--device", "cpu"]
FINETUNE = ["--bn", "keep", "--epochs", "1", "--train-clips", "8", "--batch-size", "8", "--eval-videos", "2",
            "--device", "cpu"]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real training run and a real spike-budget fine-tuning run (one epoch each)."""
    root = tmp_path_factory.mktemp("runs")
    teacher = root / "teacher.pt"
    save_checkpoint(teacher, active_model(0, bn="per_timestep", img_size=32, num_frames=4),
                    class_names=[f"c{i}" for i in range(10)], data="moving-digits")
    assert run_cli([*TRAIN, "--out", str(root / "run")]) in (0, None)
    assert run_cli(["finetune", str(teacher), *FINETUNE, "--spike-budget", "0.1", "--out", str(root / "ft")]) in (0, None)
    return root


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_train_resume_from_a_fine_tuning_runs_last_pt_names_finetune_resume(runs, tmp_path, capsys):
    """The reported case: KeyError 'scaler' (a traceback, exit 1) before the fix."""
    before = _tree(runs)
    last = runs / "ft" / "budget-0.1" / "last.pt"
    assert run_cli([*TRAIN, "--out", str(tmp_path / "newrun"), "--resume", str(last)]) == 2
    err = _error(capsys)
    assert "is the last.pt of a fine-tuning run (svformer-deploy finetune)" in err, err
    assert f"svformer-deploy finetune {runs / 'teacher.pt'} --out {runs / 'ft'} --resume" in err, err
    assert not (tmp_path / "newrun").exists() and _tree(runs) == before


def test_finetune_resume_into_a_training_run_names_train_resume(runs, capsys):
    before = _tree(runs)
    assert run_cli(["finetune", str(runs / "teacher.pt"), *FINETUNE, "--rate-weight", "1", "--out", str(runs / "run"),
                    "--resume"]) == 2
    err = _error(capsys)
    assert "is the last.pt of a training run (svformer-deploy train)" in err, err
    assert f"svformer-deploy train --resume {runs / 'run' / 'last.pt'}" in err, err
    assert _tree(runs) == before


@pytest.mark.parametrize("drop", ["scaler", "best_top1", "rng"])
def test_train_resume_from_a_last_pt_lacking_resume_state_names_what_is_missing(runs, tmp_path, capsys, drop):
    raw = torch.load(runs / "run" / "last.pt", weights_only=True)
    del raw["extra"][drop]
    damaged = tmp_path / "last.pt"
    torch.save(raw, damaged)
    assert run_cli([*TRAIN, "--out", str(tmp_path / "newrun"), "--resume", str(damaged)]) == 2
    err = _error(capsys)
    assert f"lacks the resume state svformer-deploy train needs ({drop})" in err and "drop --resume" in err, err
    assert not (tmp_path / "newrun").exists()


def test_finetune_resume_from_a_last_pt_lacking_resume_state_names_what_is_missing(runs, tmp_path, capsys):
    raw = torch.load(runs / "ft" / "budget-0.1" / "last.pt", weights_only=True)
    del raw["extra"]["rng"]["python"]
    out = tmp_path / "ft"
    out.mkdir()
    torch.save(raw, out / "last.pt")
    before = _tree(tmp_path)
    assert run_cli(["finetune", str(runs / "teacher.pt"), *FINETUNE, "--rate-weight", "1", "--out", str(out),
                    "--resume"]) == 2
    assert "lacks the resume state svformer-deploy finetune needs (rng.python)" in _error(capsys)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("budgets", [[], ["--spike-budget", "0.1"], ["--spike-budget", "0.1", "--spike-budget", "0.05"]])
def test_finetune_resume_with_nothing_to_resume_is_an_error(runs, tmp_path, capsys, budgets):
    """The reported case: `finetune CKPT --bn keep --spike-budget 0.1 --out nothere3 --resume` started a new run."""
    args = budgets or ["--rate-weight", "1"]
    assert run_cli(["finetune", str(runs / "teacher.pt"), *FINETUNE, *args, "--out", str(tmp_path / "nothere3"),
                    "--resume"]) == 2
    missing = "last.pt in " + " or ".join(f"budget-{r}" for r in budgets[1::2]) if budgets else "last.pt"
    assert f"nothing to resume in --out {tmp_path / 'nothere3'}: no {missing}; drop --resume to start a new run" \
        in _error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_finetune_resume_of_a_curve_continues_and_adds_a_new_budget(runs, tmp_path):
    """--resume of a curve with one finished budget is no error: the finished run is reused, a new budget starts."""
    ft = tmp_path / "ft"
    shutil.copytree(runs / "ft", ft)
    before = (ft / "budget-0.1" / "finetune.json").read_bytes()
    assert run_cli(["finetune", str(runs / "teacher.pt"), *FINETUNE, "--spike-budget", "0.1", "--spike-budget", "0.05",
                    "--out", str(ft), "--resume"]) in (0, None)
    assert (ft / "budget-0.1" / "finetune.json").read_bytes() == before and (ft / "budget-0.05" / "finetune.json").is_file()


def test_train_resume_into_another_training_run_does_not_replace_its_last_pt(runs, tmp_path, capsys):
    """A new user's report: `train --resume A/last.pt --out B`, B holding another training run, wrote over B's
    last.pt. Now refused unless --force, naming both runs' ways on; resuming a run in its own folder still works."""
    other = tmp_path / "other"
    shutil.copytree(runs / "run", other)
    before = _tree(other)
    assert run_cli([*TRAIN, "--out", str(other), "--resume", str(runs / "run" / "last.pt")]) == 2
    err = _error(capsys)
    assert f"{other / 'last.pt'} is another run's last.pt" in err and f"--resume {other / 'last.pt'}" in err, err
    assert _tree(other) == before
    assert run_cli([*TRAIN[:2], "2", *TRAIN[3:], "--out", str(other), "--resume", str(other / "last.pt")]) in (0, None)
