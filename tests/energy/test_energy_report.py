"""The energy report CLI: real moving-digits videos, byte-identical outputs, clear errors, no partial output."""

from __future__ import annotations

import json

import pytest
import torch

from svformer_deploy.energy import get_profile, load_profile
from svformer_deploy.errors import ProfileError
from svformer_deploy.models import create_model, save_checkpoint
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("ck") / "m.pt"
    save_checkpoint(p, create_model("svformer_tiny"))
    return p


def test_report_is_byte_identical_and_complete(ckpt, tmp_path):
    args = ["energy", "report", str(ckpt), "--videos", "2", "--clips", "2", "--baseline", "svformer-ann",
            "--baseline", "r3d_18", "--convention", "spikformer"]
    assert run_cli(args + ["--out", str(tmp_path / "a")]) == 0
    assert run_cli(args + ["--out", str(tmp_path / "b")]) == 0
    for f in ("per_layer.csv", "per_video.csv", "summary.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    for f in ("report.md", "energy_per_layer.png", "energy_per_timestep.png", "snn_vs_baselines.png"):
        assert (tmp_path / "a" / f).stat().st_size > 0
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["views_per_video"] == 2 and s["videos"] == 2 and s["T"] == 8
    assert s["baselines"]["r3d_18"]["dense_macs_per_clip"] == 40_696_553_472
    assert s["profile"]["energy_pj"]["mac"] == 4.6 and "Horowitz" in s["profile"]["source"]
    assert s["uncounted_ops"] == {}
    import pandas as pd

    pv = pd.read_csv(tmp_path / "a" / "per_video.csv")
    pl = pd.read_csv(tmp_path / "a" / "per_layer.csv")
    assert list(pl.columns) == ["layer", "timestep", "op_class", "count", "energy_pj"]
    assert pv["views"].tolist() == [2, 2]
    assert pl["count"].sum() == pv[[c for c in pv.columns if c in set(pl.op_class)]].to_numpy().sum()
    assert "Published convention" in (tmp_path / "a" / "report.md").read_text()


@pytest.mark.parametrize("bad", [
    ["--profile", "no-such-chip"],
    ["--data", "/nonexistent/ucf101"],
    ["--baseline", "resnet9000"],
])
def test_bad_input_errors_leave_no_output(ckpt, tmp_path, bad, capsys):
    out = tmp_path / "r"
    assert run_cli(["energy", "report", str(ckpt), "--videos", "1", "--baseline", "svformer-ann", "--out", str(out)]
                + bad) == 2
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
    assert "error:" in capsys.readouterr().err


def test_wrong_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    assert run_cli(["energy", "report", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()
    assert "error:" in capsys.readouterr().err


def test_profiles_registry_and_user_files(tmp_path):
    p = get_profile("45nm-fp32")
    assert (p.pj("mac"), p.pj("ac"), p.pj("bn_folded")) == (4.6, 0.9, 0.0)
    assert get_profile("loihi").pj("ac") == 23.6
    f = tmp_path / "chip.yaml"
    f.write_text("name: chip\nsource: my datasheet\nenergy_pj: {mac: 2, ac: 0.5, mul: 1.5, add: 0.5}\n")
    assert get_profile(str(f)).pj("spike_product") == 0.5
    g = tmp_path / "bad.json"
    g.write_text('{"name": "x", "source": "s", "energy_pj": {"mac": -1, "ac": 1, "mul": 1, "add": 1}}')
    with pytest.raises(ProfileError, match="finite number"):
        load_profile(g)
    h = tmp_path / "bad2.yaml"
    h.write_text("energy_pj: {mac: 1}\nsource: s\n")
    with pytest.raises(ProfileError, match="lacks energies"):
        load_profile(h)
    with pytest.raises(ProfileError, match="unknown energy profile"):
        get_profile("nope")
