"""``svformer-deploy finetune``: converts a per-timestep-BN checkpoint, prints the comparison, clear errors."""

from __future__ import annotations

import json

import pytest

from svformer_deploy.models import load_checkpoint, save_checkpoint
from tests.exporters.conftest import active_model
from tests.helpers import run_cli

FAST = ["--epochs", "1", "--train-clips", "8", "--batch-size", "8", "--eval-videos", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def pt_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "pt.pt"
    save_checkpoint(path, active_model(0, bn="per_timestep", img_size=32, num_frames=4),
                    class_names=[f"c{i}" for i in range(10)], data="moving-digits")
    return path


def test_converts_and_prints_the_three_models(pt_ckpt, tmp_path, capsys):
    out = tmp_path / "ft"
    assert run_cli(["finetune", str(pt_ckpt), "--bn", "shared", "--data", "moving-digits", "--out", str(out),
                    *FAST]) in (0, None)
    text = capsys.readouterr().out
    for name in ("original", "naive_fold", "finetuned", "4 videos"):
        assert name in text
    report = json.loads((out / "finetune.json").read_text())
    assert report["bn"] == {"original": "per_timestep", "finetuned": "shared"}
    model, _ = load_checkpoint(out / "finetuned.pt")
    assert model.config.bn == "shared"
    # a second run into the same folder is refused with the two ways out
    assert run_cli(["finetune", str(pt_ckpt), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "--force" in err


@pytest.mark.parametrize("args, words", [
    (["--spike-budget", "2"], "between 0 and 1"),
    (["--bn", "per_timestep"], "--bn"),
    (["--resume"], "nothing to resume in --out"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--train-clips", "-5"], "--train-clips -5"),
    (["--budget-weight", "-1", "--spike-budget", "0.05"], "--budget-weight"),
    (["--eval-videos", "0"], "--videos 0"),
    (["--profile", "nope", "--spike-budget", "0.05"], "unknown energy profile 'nope'"),
])
def test_bad_options_are_one_line_errors(pt_ckpt, tmp_path, capsys, args, words):
    assert run_cli(["finetune", str(pt_ckpt), "--out", str(tmp_path / "x"), *FAST, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err
    assert not (tmp_path / "x" / "finetuned.pt").exists()


def test_missing_checkpoint(tmp_path, capsys):
    assert run_cli(["finetune", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("bn", ["shared", "keep"])
def test_nothing_to_convert_and_no_budget_is_refused_before_training(bn, tmp_path, capsys):
    from svformer_deploy.assets import default_checkpoint  # shared BN already

    out = tmp_path / "x"
    assert run_cli(["finetune", str(default_checkpoint()), "--bn", bn, "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "into itself" in err and "--spike-budget" in err
    assert not out.exists() or not any(out.iterdir())
