"""The energy report CLI: real moving-digits videos, hand-checked figures, byte-identical outputs, clear errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from svformer_deploy.energy import get_profile, load_profile
from svformer_deploy.errors import ProfileError
from svformer_deploy.models import create_model, record_spikes, save_checkpoint
from tests.helpers import run_cli

BASE = ["--baseline", "svformer-ann", "--baseline", "r3d_18", "--baseline", "s3d"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("ck") / "m.pt"
    m = create_model("svformer_tiny")
    with torch.no_grad():
        for w in m.parameters():  # make the neurons fire
            if w.dim() > 1:
                w.mul_(4)
    save_checkpoint(p, m)
    return p


@pytest.fixture(scope="module")
def report(ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    args = ["energy", "report", str(ckpt), "--videos", "2", "--clips", "2", *BASE]
    assert run_cli(args + ["--out", str(d / "a")]) == 0
    assert run_cli(args + ["--out", str(d / "b")]) == 0
    return d


def test_report_is_byte_identical_and_complete(report):
    a, b = report / "a", report / "b"
    for f in ("per_layer.csv", "per_video.csv", "spiking.csv", "summary.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    for f in ("report.md", "energy_per_layer.png", "energy_per_timestep.png", "snn_vs_baselines.png"):
        assert (a / f).stat().st_size > 0
    s = json.loads((a / "summary.json").read_text())
    assert s["views_per_video"] == 2 and s["videos"] == 2 and s["T"] == 8
    assert s["profile"]["energy_pj"]["mac"] == 4.6 and "Horowitz" in s["profile"]["source"]
    assert s["uncounted_ops"] == {}
    pv = pd.read_csv(a / "per_video.csv")
    pl = pd.read_csv(a / "per_layer.csv")
    assert list(pl.columns) == ["layer", "timestep", "op_class", "count", "energy_pj"]
    assert pv["views"].tolist() == [2, 2]
    assert pl["count"].sum() == pv[[c for c in pv.columns if c in set(pl.op_class)]].to_numpy().sum()
    md = (a / "report.md").read_text()
    assert "docs/energy.md" not in md  # the installed package carries no docs: the report is self-contained
    assert "| `plif` | PLIF |" in md and "| `convolution` |" in md  # the rules it used, from the rule table


def test_headline_is_compute_plus_memory_per_video_and_clip(report):
    s = json.loads((report / "a" / "summary.json").read_text())
    pv = pd.read_csv(report / "a" / "per_video.csv")
    pl = pd.read_csv(report / "a" / "per_layer.csv")
    h = s["headline"]
    assert h["per_video_mj"]["compute_mj"] == pytest.approx(pl["energy_pj"].sum() / 2 * 1e-9)
    assert h["per_video_mj"]["memory_mj"] == pytest.approx(pv["memory_pj"].mean() * 1e-9)
    assert h["per_video_mj"]["total_mj"] == pytest.approx(h["per_video_mj"]["compute_mj"] + h["per_video_mj"]["memory_mj"])
    assert h["per_clip_mj"]["total_mj"] == pytest.approx(h["per_video_mj"]["total_mj"] / 2)
    assert sum(s["memory"]["parts_mj_per_video"].values()) == pytest.approx(h["per_video_mj"]["memory_mj"])
    md = (report / "a" / "report.md").read_text()
    assert f"**{h['per_video_mj']['total_mj']:.4g} mJ per video**" in md


def test_baselines_like_for_like_and_apart(report):
    s = json.loads((report / "a" / "summary.json").read_text())
    b = s["baselines"]
    assert b["r3d_18"]["same_input"] and b["r3d_18"]["input_shape"] == [3, 8, 64, 64]
    assert not b["s3d"]["same_input"] and b["s3d"]["input_shape"] == [3, 16, 224, 224]
    assert set(b) >= {"svformer-ann (dense)", "svformer-ann (sparsity-aware)", "svformer-ann (int8)",
                      "svformer-ann (int4)"}  # ceil(log2(8 + 1)) = 4 bits
    # r3d_18 counted on the SNN input (3x8x64x64), the same as a direct dense count
    from svformer_deploy.energy import count_ops
    from torchvision.models import video

    with torch.device("meta"):
        r3d = video.r3d_18(weights=None).eval()
    assert b["r3d_18"]["dense_macs_per_clip"] == count_ops(r3d, torch.empty(1, 3, 8, 64, 64, device="meta"),
                                                            dense=True, num_steps=None).dense_macs
    from svformer_deploy.energy import memory_energy
    from svformer_deploy.energy.baselines import baseline_counts

    dense = baseline_counts("svformer-ann", create_model("svformer_tiny").config)
    t = dense.totals()
    int8 = b["svformer-ann (int8)"]
    # int8: 0.23 pJ per MAC, 0.2 per mul, 0.03 per add; memory with 1-byte values (tiers by the smaller footprint)
    muls = t["neuron_mul"] + t["bn_mul"] + t["scale_mul"] + t["mul"]
    adds = t["neuron_add"] + t["bn_add"] + t["bias_add"] + t["residual_add"] + t["add"] + t["activation"]
    assert int8["compute_mj"] == pytest.approx((t["mac"] * 0.23 + muls * 0.2 + adds * 0.03) * 1e-9)
    assert int8["memory_mj"] == pytest.approx(memory_energy(dense, "45nm-int8").total_pj * 1e-9)
    assert b["svformer-ann (dense)"]["compute_mj"] == pytest.approx(
        (t["mac"] * 4.6 + muls * 3.7 + adds * 0.9) * 1e-9)
    md = (report / "a" / "report.md").read_text()
    ratio_table = md.split("Shown apart")[0]
    assert "| s3d" not in ratio_table and "| s3d |" in md.split("Shown apart")[1]
    snn = s["headline"]["per_clip_mj"]["total_mj"]
    assert f"{snn / b['r3d_18']['total_mj']:.3g} |" in ratio_table


def test_spiking_metrics_and_conventions_by_hand(ckpt, tmp_path, capsys):
    from svformer_deploy.data import iter_eval_videos
    from svformer_deploy.models import load_checkpoint

    out = tmp_path / "r"
    assert run_cli(["energy", "report", str(ckpt), "--videos", "1", "--baseline", "svformer-ann", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    h = s["headline"]["per_video_mj"]
    assert f"{h['total_mj']:.4g} mJ per video = compute {h['compute_mj']:.4g} + memory" in capsys.readouterr().out
    model, _ = load_checkpoint(ckpt)
    cfg = model.config
    views = next(iter(iter_eval_videos("moving-digits", cfg, num_videos=1))).views
    with record_spikes(model) as rec, torch.no_grad():
        model(views)
    spikes = sum(int(x.sum()) for x in rec.spikes.values())
    elems = sum(x.numel() for x in rec.spikes.values())
    assert s["spiking"]["mean_rate"] == pytest.approx(spikes / elems)
    assert s["spiking"]["input_rate_per_layer"]["blocks1.0.conv1"] == pytest.approx(
        float(rec.spikes["blocks1.0.lif"].float().mean()))
    # events per synapse: blocks1.0.conv1 (1x1 conv) sees nnz(spikes) x C_out events over C_in x C_out weights, ...
    pl = pd.read_csv(out / "per_layer.csv")
    mac_layers = set(pl.loc[pl.op_class == "mac", "layer"])
    e = pl.groupby("layer")["energy_pj"].sum()
    assert s["spiking"]["non_spike_input_energy_share"] == pytest.approx(e[list(mac_layers)].sum() / e.sum())
    # literal convention: only the stem is MAC: 16x16 outputs (64 px, k6 s4 p1) x 32 channels x 3 x 6 x 6 taps x 8 frames
    lit = s["conventions"]["literal"]
    assert lit["mac_layers"] == ["patch_embed1.conv"] and lit["mac_per_video"] == 16 * 16 * 32 * 3 * 36 * 8
    sp = s["conventions"]["spikformer"]
    assert sp["compute_mj_per_video"] == pytest.approx((sp["mac_per_video"] * 4.6 + sp["ac_per_video"] * 0.9) * 1e-9)
    assert "C_out / B" in (out / "report.md").read_text()


def test_accuracy_protocol_mismatch_is_warned(ckpt, tmp_path):
    acc = tmp_path / "eval.json"
    acc.write_text(json.dumps({"top1": 0.5, "clips": 5, "crops": 3, "num_videos": 7}))
    out = tmp_path / "r"
    assert run_cli(["energy", "report", str(ckpt), "--videos", "1", "--baseline", "svformer-ann", "--accuracy",
                    str(acc), "--fold-bn", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["protocol"]["accuracy_views"] == 15 and s["protocol"]["match"] is False
    assert s["protocol"]["per_video_at_accuracy_protocol_mj"]["total_mj"] == pytest.approx(
        15 * s["headline"]["per_clip_mj"]["total_mj"])
    md = (out / "report.md").read_text()
    assert "Warning" in md and "50.00%" in md
    assert s["fold_bn"] and s["totals_all_videos"]["bn_folded"] > 0  # svformer_tiny's BN is shared: foldable


def test_loihi_profile_keeps_anns_out_of_its_prices(ckpt, tmp_path):
    out = tmp_path / "r"
    assert run_cli(["energy", "report", str(ckpt), "--videos", "1", "--baseline", "svformer-ann", "--profile",
                    "loihi", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["ann_profile"] == "45nm-fp32" and s["headline"]["per_video_mj"]["memory_mj"] == 0
    md = (out / "report.md").read_text()
    assert "PRE-SILICON" in md and "not price ANN arithmetic" in md


@pytest.mark.parametrize("bad", [
    ["--profile", "no-such-chip"],
    ["--data", "/nonexistent/ucf101"],
    ["--baseline", "resnet9000"],
    ["--accuracy", "/nonexistent/eval.json"],
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


def test_quantised_profile_by_hand():
    from svformer_deploy.energy.profiles import quantised_profile

    q = quantised_profile(4)  # ceil(log2(8 + 1)) bits
    assert q.pj("mul") == pytest.approx(0.2 / 4) and q.pj("add") == pytest.approx(0.015)
    assert q.pj("mac") == pytest.approx(0.05 + 0.015) and q.bytes_per_value == 0.5
