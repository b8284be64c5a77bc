"""``--videos`` larger than the split: every command that reads validation videos uses all the split has, says
so in one line on stderr (with why), and what it records states the videos really used."""

from __future__ import annotations

import json

import pytest
import torch

import svformer_deploy.data.moving_digits as md
from svformer_deploy.assets import default_checkpoint
from svformer_deploy.data import eval_video_count
from svformer_deploy.exporters.bundle import VERIFICATION_NAME
from svformer_deploy.models import load_checkpoint
from tests.helpers import run_cli

SPLIT = 2  # videos in the (patched) moving-digits val split
NOTE = f"note: --videos 5 asks for more videos than the val split has; used all {SPLIT} of them"


@pytest.fixture()
def small_split(monkeypatch):
    monkeypatch.setattr(md, "NUM_VAL_CLIPS", SPLIT)
    torch.set_num_threads(1)


def _note(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]


def test_eval_video_count_is_what_iter_eval_videos_yields(small_split):
    model, _ = load_checkpoint(default_checkpoint())
    assert eval_video_count("moving-digits", model.config, num_videos=5) == SPLIT
    assert eval_video_count("moving-digits", model.config, num_videos=1) == 1
    assert eval_video_count("moving-digits", model.config) == SPLIT


def test_export_and_verify_record_and_say_the_videos_really_used(small_split, tmp_path, capsys):
    out = tmp_path / "big ü"
    assert run_cli(["export", str(default_checkpoint()), "--to", "onnx", "--out", str(out), "--videos", "5"]) in (0, None)
    assert _note(capsys) == [NOTE]
    record = json.loads((out / VERIFICATION_NAME).read_text(encoding="utf-8"))
    assert record["data"] == f"moving-digits, split val, {SPLIT} videos, 1 view each"
    assert run_cli(["verify", str(out), "--videos", "5"]) in (0, None)
    assert _note(capsys) == [NOTE]
    assert run_cli(["verify", str(out), "--videos", "1"]) in (0, None)  # fewer than the split: no note
    assert _note(capsys) == []
    assert json.loads((out / VERIFICATION_NAME).read_text())["data"].startswith("moving-digits, split val, 1 videos")


@pytest.mark.parametrize("argv", [
    ["evaluate", "{ckpt}", "--out", "{out}", "--videos", "5"],
    ["sparsity", "{ckpt}", "--out", "{out}", "--videos", "5", "--no-energy"],
    ["energy", "report", "{ckpt}", "--out", "{out}", "--videos", "5", "--baseline", "svformer-ann"],
], ids=["evaluate", "sparsity", "energy-report"])
def test_other_commands_say_they_used_fewer_videos(argv, small_split, tmp_path, capsys):
    argv = [a.format(ckpt=default_checkpoint(), out=tmp_path / "out") for a in argv]
    assert run_cli(argv) in (0, None)
    assert _note(capsys) == [NOTE]
