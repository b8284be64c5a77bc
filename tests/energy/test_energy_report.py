"""The energy report CLI: real moving-digits videos, hand-checked figures, byte-identical outputs, clear errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from svformer_deploy.energy import get_profile, load_profile
from svformer_deploy.energy.report import sig_figs
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
    assert list(pl.columns) == ["layer", "timestep", "op_class", "count", "energy_pj", "videos"]
    assert (pl["videos"] == 2).all()  # the CSV says over how many videos its counts are summed
    assert pv["views"].tolist() == [2, 2]
    assert pl["count"].sum() == pv[[c for c in pv.columns if c in set(pl.op_class)]].to_numpy().sum()
    md = (a / "report.md").read_text()
    assert "docs/energy.md" not in md  # the installed package carries no docs: the report is self-contained
    assert "| `plif` | PLIF |" in md and "| `convolution` |" in md  # the rules it used, from the rule table


def test_headline_is_compute_plus_memory_per_video_and_view(report):
    s = json.loads((report / "a" / "summary.json").read_text())
    pv = pd.read_csv(report / "a" / "per_video.csv")
    pl = pd.read_csv(report / "a" / "per_layer.csv")
    h = s["headline"]
    assert h["per_video_mj"]["compute_mj"] == pytest.approx(pl["energy_pj"].sum() / 2 * 1e-9)
    assert h["per_video_mj"]["memory_mj"] == pytest.approx(pv["memory_pj"].mean() * 1e-9)
    assert h["per_video_mj"]["total_mj"] == pytest.approx(h["per_video_mj"]["compute_mj"] + h["per_video_mj"]["memory_mj"])
    assert h["per_view_mj"]["total_mj"] == pytest.approx(h["per_video_mj"]["total_mj"] / 2)  # 2 clips x 1 crop
    assert "per_clip_mj" not in h
    assert sum(s["memory"]["parts_mj_per_video"].values()) == pytest.approx(h["per_video_mj"]["memory_mj"])
    md = (report / "a" / "report.md").read_text()
    assert f"**{sig_figs(h['per_video_mj']['total_mj'])} mJ per video**" in md
    assert f"Per view (one clip x one crop): {sig_figs(h['per_view_mj']['total_mj'])} mJ" in md
    assert "per clip" not in md.lower()


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
    assert b["r3d_18"]["dense_macs_per_view"] == count_ops(r3d, torch.empty(1, 3, 8, 64, 64, device="meta"),
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
    snn = s["headline"]["per_view_mj"]["total_mj"]
    # under one profile every row counts memory the SNN's way (the footprint tiers): the total ratio is printed,
    # the int rows under their own integer profiles, named in the row
    assert b["r3d_18"]["ratio_total"] == pytest.approx(snn / b["r3d_18"]["total_mj"])
    assert f"| {sig_figs(snn / b['r3d_18']['total_mj'], 3)} |" in ratio_table
    assert all(b[k]["ratio_total"] is not None for k in b if b[k]["same_input"])
    assert "| `45nm-int8` |" in ratio_table and "| `45nm-int4` |" in ratio_table
    assert b["s3d"]["ratio_total"] is None and b["s3d"]["ratio_compute"] is None


def test_spiking_metrics_and_conventions_by_hand(ckpt, tmp_path, capsys):
    from svformer_deploy.data import iter_eval_videos
    from svformer_deploy.models import load_checkpoint

    out = tmp_path / "r"
    assert run_cli(["energy", "report", str(ckpt), "--videos", "1", "--baseline", "svformer-ann", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    h = s["headline"]["per_video_mj"]
    cap = capsys.readouterr()
    assert f"{sig_figs(h['total_mj'])} mJ per video = compute {sig_figs(h['compute_mj'])} + memory" in cap.out
    assert cap.out.startswith("wrote ")  # no blank line before the first line
    assert "1 video, 1 view each" in cap.out
    md = (out / "report.md").read_text()
    assert "1 video, 1 clip x 1 crop = 1 view per video" in md and "1 videos" not in md and "1 views" not in md
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


def test_accuracy_protocol_mismatch_is_warned_and_fold_bn_is_like_for_like(ckpt, tmp_path):
    acc = tmp_path / "eval.json"  # user-written: no checkpoint_sha256
    acc.write_text(json.dumps({"top1": 0.5, "clips": 5, "crops": 3, "num_videos": 7, "data": "/data/UCF101",
                               "split": "test"}))
    out = tmp_path / "r"
    assert run_cli(["energy", "report", str(ckpt), "--videos", "1", "--baseline", "svformer-ann", "--baseline",
                    "r3d_18", "--accuracy", str(acc), "--fold-bn", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["protocol"]["accuracy_views"] == 15 and s["protocol"]["match"] is False
    assert s["protocol"]["per_video_at_accuracy_protocol_mj"]["total_mj"] == pytest.approx(
        15 * s["headline"]["per_view_mj"]["total_mj"])
    md = (out / "report.md").read_text()
    assert "Warning" in md and "50.00%" in md
    assert "source unverified" in md and s["accuracy"]["verified"] is False
    assert "Warning: the accuracy was measured on `/data/UCF101` (test split), the energy on `moving-digits`" in md
    assert s["fold_bn"] and s["totals_all_videos"]["bn_folded"] > 0  # svformer_tiny's BN is shared: foldable
    # the same BN convention on the ANN side: the twin and r3d_18 are counted with their BNs folded too
    from svformer_deploy.energy import energy_of
    from svformer_deploy.energy.baselines import baseline_counts

    cfg = create_model("svformer_tiny").config
    for name, key, shape in (("svformer-ann", "svformer-ann (dense)", None), ("r3d_18", "r3d_18", (3, 8, 64, 64))):
        folded = baseline_counts(name, cfg, shape, fold_bn=True)
        assert folded.totals()["bn_folded"] > 0 and folded.totals()["bn_mul"] == 0
        assert s["baselines"][key]["compute_mj"] == pytest.approx(energy_of(folded).compute_pj * 1e-9)
        assert s["baselines"][key]["compute_mj"] < energy_of(baseline_counts(name, cfg, shape)).compute_pj * 1e-9
    assert "`--fold-bn`" in md.split("## Headline")[0] and "in every baseline alike" in md.split("## Headline")[0]


def test_header_states_bn_counted_without_fold_bn(report):
    md = (report / "a" / "report.md").read_text()
    assert "no `--fold-bn`" in md.split("## Headline")[0]


@pytest.mark.parametrize("top1", [97.5, -0.1, 1.5])
def test_accuracy_as_percentage_is_refused(ckpt, tmp_path, capsys, top1):
    acc = tmp_path / "eval.json"
    acc.write_text(json.dumps({"top1": top1, "clips": 1, "crops": 1}))
    out = tmp_path / "r"
    assert run_cli(["energy", "report", str(ckpt), "--videos", "1", "--accuracy", str(acc), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fraction" in err and "e.g. 0.975" in err and f"{top1:g}" in err
    assert not out.exists()


def test_accuracy_of_another_checkpoint_is_refused(ckpt, tmp_path, capsys):
    from svformer_deploy import api

    ev = api.evaluate(ckpt, "moving-digits", out=tmp_path / "ev", num_videos=2, progress=False)
    eval_json = ev.paths["json"]
    other = tmp_path / "other.pt"
    torch.manual_seed(1)
    save_checkpoint(other, create_model("svformer_tiny"))
    out = tmp_path / "r"
    assert run_cli(["energy", "report", str(other), "--videos", "1", "--baseline", "svformer-ann", "--accuracy",
                    str(eval_json), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    sha = json.loads(eval_json.read_text())["checkpoint_sha256"]
    assert sha[:12] in err and "other.pt" in err and "THIS checkpoint" in err and not out.exists()
    # the eval.json evaluate wrote for THIS checkpoint is accepted and marked verified
    assert run_cli(["energy", "report", str(ckpt), "--videos", "1", "--baseline", "svformer-ann", "--accuracy",
                    str(eval_json), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["accuracy"]["verified"] is True and s["accuracy"]["top1"] == pytest.approx(ev.top1)
    assert s["accuracy"]["data_differs"] is False
    md = (out / "report.md").read_text()
    assert "SHA-256 verified" in md
    assert f"top-1 {ev.top1:.2%} on 2 videos with" in md  # the sample behind the accuracy is stated


def test_loihi_profile_keeps_anns_out_of_its_prices(ckpt, tmp_path):
    out = tmp_path / "r"
    assert run_cli(["energy", "report", str(ckpt), "--videos", "1", "--baseline", "svformer-ann", "--baseline",
                    "r3d_18", "--profile", "loihi", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["ann_profile"] == "45nm-fp32" and s["headline"]["per_video_mj"]["memory_mj"] == 0
    b, snn = s["baselines"], s["headline"]["per_view_mj"]
    # memory folded into Loihi's op figures vs the tiers on the ANN side: no total ratio, a compute ratio instead
    for name, row in b.items():
        assert row["ratio_total"] is None and "memory counted differently" in row["ratio_total_withheld"], name
        assert row["ratio_compute"] == pytest.approx(snn["compute_mj"] / row["compute_mj"])
    assert [b[k]["profile"] for k in ("svformer-ann (dense)", "svformer-ann (int8)", "svformer-ann (int4)",
                                      "r3d_18")] == ["45nm-fp32", "45nm-int8", "45nm-int4", "45nm-fp32"]
    md = (out / "report.md").read_text()
    table = md.split("## Like-for-like")[1].split("## Memory model")[0]
    assert "not printed" in table and "SNN / model (total) is not printed" in table
    assert "| `45nm-int8` |" in table and "ANN baselines are priced under" not in md
    assert "PRE-SILICON" in md and "not price ANN arithmetic" in md
    share = s["memory"]["mac_compute_share"]
    assert 0 < share < 1 and f"{share:.1%} of the SNN's compute is real-valued MACs" in md


def test_sig_figs_and_plural():
    from svformer_deploy.energy.report import plural

    assert [sig_figs(x) for x in (17.0, 16.93, 9.99996, 0.0196, 123456.0, 0.0001234, 0.0)] == [
        "17.00", "16.93", "10.00", "0.01960", "1.235e+05", "1.234e-04", "0"]
    assert (plural(1, "video"), plural(2, "view"), plural(0, "clip")) == ("1 video", "2 views", "0 clips")


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


def test_report_states_the_int_rows_profiles_from_the_registry(report):
    """The int4 and int8 rows' profiles appear in report.md where the rows do: every figure (from the registry,
    not copied by hand), the source and the derivation's caveat; summary.json carries them whole."""
    s = json.loads((report / "a" / "summary.json").read_text())
    assert set(s["row_profiles"]) == {"45nm-int8", "45nm-int4"}  # dense rows: the SNN's own 45nm-fp32
    for name, d in s["row_profiles"].items():
        assert d == get_profile(name).to_dict()
    md = (report / "a" / "report.md").read_text()
    table_end = md.index("Each row is priced under the profile in its column.")
    assert "`45nm-int4`" in md[:table_end]
    line = next(x for x in md[table_end:].splitlines() if x.startswith("- `45nm-int4`: "))
    assert "MAC 0.065 pJ, AC 0.015 pJ, multiply 0.05 pJ, add 0.015 pJ, 0.5 B per value" in line
    assert get_profile("45nm-int4").source in line and "DERIVED, NOT MEASURED" in line


def test_report_accepts_the_int4_profile_by_name(ckpt, tmp_path):
    out = tmp_path / "r"
    assert run_cli(["energy", "report", str(ckpt), "--videos", "1", "--baseline", "svformer-ann", "--profile",
                    "45nm-int4", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["profile"] == get_profile("45nm-int4").to_dict()
    assert "45nm-int4" not in s["row_profiles"] and "45nm-int8" in s["row_profiles"]


def test_quantised_profile_by_hand():
    from svformer_deploy.energy.profiles import quantised_profile

    q = quantised_profile(4)  # ceil(log2(8 + 1)) bits
    assert q.pj("mul") == pytest.approx(0.2 / 4) and q.pj("add") == pytest.approx(0.015)
    assert q.pj("mac") == pytest.approx(0.05 + 0.015) and q.bytes_per_value == 0.5


def test_accuracy_file_with_a_byte_order_mark_is_read(tmp_path):
    from svformer_deploy.energy.report import read_accuracy

    path = tmp_path / "eval (excel).json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"top1": 0.9, "clips": 5, "crops": 3}).encode("utf-8"))
    acc = read_accuracy(path)
    assert (acc["top1"], acc["clips"], acc["crops"]) == (0.9, 5, 3)


def test_a_profile_file_is_read_once_and_the_result_carries_the_summary(ckpt, tmp_path, monkeypatch):
    """The profile is resolved once (the report passes the object on) and the returned result holds the
    summary that summary.json holds."""
    from svformer_deploy import api
    from svformer_deploy.energy import profiles

    f = tmp_path / "chip.yaml"
    f.write_text("name: chip\nsource: my datasheet\nenergy_pj: {mac: 2, ac: 0.5, mul: 1.5, add: 0.5}\n")
    reads = []
    load = profiles.load_profile
    monkeypatch.setattr(profiles, "load_profile", lambda path: reads.append(path) or load(path))
    result = api.energy_report(ckpt, videos=1, profile=f, baselines=["svformer-ann"], out=tmp_path / "r")
    assert len(reads) == 1
    assert result.summary == json.loads(result.files["summary.json"].read_text(encoding="utf-8"))
    assert result.summary["profile"]["name"] == "chip"
    reads.clear()
    analysis = api.sparsity(ckpt, tmp_path / "s", videos=1, profile=f).analysis
    assert len(reads) == 1 and analysis.energy.profile == "chip"
