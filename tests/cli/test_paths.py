"""Relative user paths: every command resolves them once, so exports, their verification (the Lava runner runs in
a temporary folder) and the reports work from any working directory, and what they record is absolute."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from svformer_deploy._paths import user_path
from svformer_deploy.data import data_spec
from svformer_deploy.assets import default_checkpoint
from svformer_deploy.exporters import read_bundle
from svformer_deploy.exporters.bundle import VERIFICATION_NAME
from tests.helpers import run_cli


def test_user_path_is_absolute_and_expanded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_path("a/../b") == tmp_path.resolve() / "b"
    assert user_path("~/x") == tmp_path.resolve() / "home" / "x"
    assert data_spec("moving-digits") == "moving-digits"
    assert data_spec("ucf") == str(tmp_path.resolve() / "ucf")


@pytest.fixture()
def fresh_cwd(tmp_path, monkeypatch) -> Path:
    """A fresh working directory holding a copy of the shipped checkpoint as ``ckpt.pt``."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    shutil.copyfile(default_checkpoint(), cwd / "ckpt.pt")
    monkeypatch.chdir(cwd)
    torch.set_num_threads(1)
    return cwd.resolve()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["nir", "onnx", "lava"])
def test_export_with_relative_out_and_checkpoint(target, fresh_cwd, capsys):
    out = f"out/{target}"
    assert run_cli(["export", "ckpt.pt", "--to", target, "--out", out, "--num-videos", "2"]) == 0, \
        capsys.readouterr().err
    assert f"wrote {fresh_cwd / out}" in capsys.readouterr().out
    assert read_bundle(fresh_cwd / out).checkpoint_path == str(fresh_cwd / "ckpt.pt")
    report = json.loads((fresh_cwd / out / VERIFICATION_NAME).read_text())
    assert report.get("passed") is not False, report
    # verify with relative paths again, from another directory
    (fresh_cwd / "elsewhere").mkdir()
    import os

    os.chdir(fresh_cwd / "elsewhere")
    assert run_cli(["verify", f"../{out}", "--checkpoint", "../ckpt.pt", "--num-videos", "1"]) == 0, \
        capsys.readouterr().err


@pytest.mark.slow
def test_demo_pretrained_with_relative_out_runs_every_step(fresh_cwd, capsys):
    """`svformer-deploy demo --pretrained --out rel/dir` from a fresh directory: every step, Lava included."""
    from svformer_deploy import demo as demo_mod

    assert run_cli(["demo", "--pretrained", "--out", "rel/demo"]) == 0, capsys.readouterr().err
    out = fresh_cwd / "rel" / "demo"
    listed = json.loads((out / "demo.json").read_text())
    assert listed["failures"] == {}
    assert set(demo_mod.demo_steps()) <= set(listed["artefacts"]) and "export-lava" in listed["artefacts"]
    for step in listed["artefacts"].values():
        for path in step.values():
            assert Path(path).is_absolute() and Path(path).exists(), path
    lava = json.loads((out / "export-lava" / "bundle" / VERIFICATION_NAME).read_text())
    assert lava["passed"] is True
    assert json.loads((out / "export-nir" / "bundle" / VERIFICATION_NAME).read_text())["verdict"] == "exact"
    assert (out / "export-onnx" / "bundle" / "model.onnx").stat().st_size > 100_000
    summary = json.loads((out / "energy" / "report" / "summary.json").read_text())
    assert summary["videos"] == demo_mod.DEMO_VIDEOS and summary["views_per_video"] == 1
    assert (out / "sparsity" / "report" / "rate_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert listed["artefacts"]["export-onnx"]["verification"] == str(out / "export-onnx" / "bundle" / VERIFICATION_NAME)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("argv", [
    ["export", "ckpt.pt", "--to", "onnx", "--out", ".", "--force", "--num-videos", "1"],
    ["export", "ckpt.pt", "--to", "nir", "--out", "..", "--force", "--num-videos", "1"],
    ["energy", "report", "ckpt.pt", "--out", ".", "--force", "--videos", "1"],
    ["sparsity", "ckpt.pt", "--out", ".", "--force", "--videos", "1"],
    ["demo", "--pretrained", "--out", ".", "--force"],
    ["export", "ckpt.pt", "--to", "onnx", "--out", "victim.pt", "--force", "--num-videos", "1"],
    ["export", "ckpt.pt", "--to", "onnx", "--out", "held", "--force", "--num-videos", "1"],
    ["export", "held/ckpt.pt", "--to", "onnx", "--out", "held", "--force", "--num-videos", "1"],
    ["energy", "report", "held/ckpt.pt", "--out", "held", "--force", "--videos", "1"],
], ids=["export-cwd", "export-parent", "energy-cwd", "sparsity-cwd", "demo-cwd", "export-onto-a-file",
        "export-onto-a-file-2", "export-over-its-checkpoint", "energy-over-its-checkpoint"])
def test_force_never_deletes_the_working_folder_an_input_or_a_file(argv, fresh_cwd, capsys):
    """``--force`` replaces an earlier output folder only: never the current folder or one above it, never a
    folder holding the command's checkpoint, never a file where a folder would be written; one line, exit 2,
    before any work, nothing touched."""
    (fresh_cwd / "notes.txt").write_text("keep me")
    shutil.copyfile(fresh_cwd / "ckpt.pt", fresh_cwd / "victim.pt")
    (fresh_cwd / "held").mkdir()
    shutil.copyfile(fresh_cwd / "ckpt.pt", fresh_cwd / "held" / "ckpt.pt")
    if argv[argv.index("--out") + 1] == "held" and argv[1] == "ckpt.pt":
        argv = [*argv[:argv.index("--out") + 1], "held/ckpt.pt", *argv[argv.index("--out") + 2:]]
    before = _tree(fresh_cwd.parent)
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--force" in err and "--out" in err, err
    assert _tree(fresh_cwd.parent) == before
    assert (fresh_cwd / "notes.txt").read_text() == "keep me"
