"""`svformer-deploy map`, `verify --with sanafe`, `energy price --chip` as a user runs them."""

from __future__ import annotations

import csv
import json

import pytest

from svformer_deploy.chip.check import NARROW_FIX
from svformer_deploy.models import save_checkpoint
from tests.exporters.conftest import active_model
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def nir_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("map cli")
    ckpt = root / "my ckpt (v1).pt"
    save_checkpoint(ckpt, active_model(bn="shared", img_size=32), class_names=[f"d{i}" for i in range(10)])
    from svformer_deploy.api import export_and_verify

    export_and_verify(ckpt, "nir", root / "nir bundle", num_videos=2)
    export_and_verify(ckpt, "onnx", root / "onnx bundle", num_videos=2)
    return root


def test_map_writes_every_record_beside_the_bundle_with_relative_paths(nir_bundle, capsys, monkeypatch):
    monkeypatch.chdir(nir_bundle)
    assert run_cli(["map", "nir bundle", "--chip", "loihi", "--videos", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    folder = nir_bundle / "nir bundle-loihi-mapping"
    assert out[-1] == f"wrote {folder}"
    doc = json.loads((folder / "mapping.json").read_text())
    fig, prec = doc["figures"], doc["precision"]
    # the accuracy beside the energy: the chip model and the float model on the same videos, and their agreement
    assert f"top-1 on 2 video(s): chip model {fig['accuracy_of_the_chip_model']:.1%}, float model " \
           f"{fig['accuracy_of_the_float_model']:.1%}; same prediction on " \
           f"{fig['prediction_agreement_with_the_float_model']:.1%}" in out
    assert 0 <= fig["prediction_agreement_with_the_float_model"] <= 1
    assert any(ln.startswith(f"precision: {prec['share']:.1%} of {prec['weights']:,} non-zero weights round to 0")
               for ln in out)
    report = (folder / "report.md").read_text()
    assert "the checkpoint's float model" in report and "non-zero weights round to 0" in report
    rows = {r["layer"]: r for r in csv.DictReader((folder / "layers.csv").read_text().splitlines())}
    worst = prec["layers_most_rounded"][0]
    assert int(rows[worst["layer"]]["kernel_weights_rounded_to_0"]) == worst["rounded_to_0"]
    for f in ("mapping.json", "layers.csv", "cores.csv", "timesteps.csv", "report.md", "cores_per_layer.png",
              "energy_per_timestep.png", "latency_per_timestep.png"):
        assert (folder / f).is_file(), f
    assert doc["totals"]["cores"] == sum(1 for _ in open(folder / "cores.csv")) - 1
    assert fig["videos"] == 2 and fig["energy_per_video_mJ"]["chip"] > 0 and fig["average_power_mW"] > 0
    assert set(doc["host"]["host_ops"]) == {"blocks3.0.attn.product", "blocks4.0.attn.product", "head.readout"}
    rows = list(csv.DictReader(open(folder / "layers.csv")))
    assert {r["binding_limit"] for r in rows} <= {"neurons", "axons_in", "memory", "axons_out", "combined"}
    assert all(int(r["cores"]) >= 1 for r in rows)
    steps = list(csv.DictReader(open(folder / "timesteps.csv")))
    assert len(steps) == 8 and all(float(r["time_us"]) > 0 for r in steps)
    # refused without --force, replaced with it
    capsys.readouterr()
    assert run_cli(["map", "nir bundle", "--videos", "0"]) == 2
    assert "already exists; choose another --out or pass --force" in capsys.readouterr().err
    assert run_cli(["map", "nir bundle", "--videos", "0", "--force"]) == 0


def test_a_violation_exits_2_and_writes_nothing(nir_bundle, capsys):
    out = nir_bundle / "tn"
    assert run_cli(["map", str(nir_bundle / "nir bundle"), "--chip", "truenorth", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not fit IBM TrueNorth" in err and "blocks1.0.lif: neuron model" in err
    # TrueNorth takes no host currents, so --host-fallback (which sends them) is not offered as a fix
    fan_in = [ln for ln in err.splitlines() if ": fan-in (input axons of one neuron)" in ln]
    assert fan_in and all(ln.endswith("; fix: " + NARROW_FIX) for ln in fan_in)
    assert not out.exists()
    assert not [p for p in nir_bundle.iterdir() if p.name.startswith(".tn")]


def test_an_onnx_bundle_is_refused(nir_bundle, capsys):
    assert run_cli(["map", str(nir_bundle / "onnx bundle"), "--out", str(nir_bundle / "x")]) == 2
    assert "holds no neuromorphic partition" in capsys.readouterr().err


def test_verify_with_sanafe_passes_and_records(nir_bundle, capsys):
    pytest.importorskip("sanafe", reason="SANA-FE is not installed (pip install 'svformer-deploy[sanafe]')")
    folder = nir_bundle / "v"
    assert run_cli(["map", str(nir_bundle / "nir bundle"), "--out", str(folder), "--videos", "1"]) == 0
    capsys.readouterr()
    assert run_cli(["verify", str(folder), "--with", "sanafe", "--layer", "blocks4.0.attn.lif_q",
                    "--layer", "blocks2.0.mlp.lif2"]) == 0
    out = capsys.readouterr().out
    assert "blocks4.0.attn.lif_q" in out and "all equal" in out
    rec = json.loads((folder / "sanafe_verification.json").read_text())
    assert rec["passed"] and len(rec["units"]) == 2
    # the mapping folder can still be replaced: the SANA-FE records are the mapping's own
    assert run_cli(["map", str(nir_bundle / "nir bundle"), "--out", str(folder), "--videos", "0", "--force"]) == 0


def test_energy_price_with_chip_from_stated_rates(tmp_path, capsys):
    rates = tmp_path / "rates.csv"
    from svformer_deploy.energy.price import spike_input_layers
    from svformer_deploy.models import get_config

    cfg = get_config("svformer_tiny")
    names = spike_input_layers(cfg) + [f"blocks{s}.{b}.attn.lif_{x}" for s, d in ((3, cfg.depths[2]), (4, cfg.depths[3]))
                                       for b in range(d) for x in "qkv"]
    rows = [{"name": n, "rate": 0.1} for n in names]  # the format of the published rates file
    with open(rates, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "rate"])
        w.writeheader()
        w.writerows(rows)
    assert run_cli(["energy", "price", "--model", "svformer_tiny", "--rates", str(rates), "--chip", "loihi",
                    "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "## Chip mapping: Intel Loihi (1)" in out and "energy per video: chip" in out
    s = json.loads((tmp_path / "p.json").read_text())
    assert s["chip"]["figures"]["source"].startswith("expected counts")
    assert s["chip"]["figures"]["counts_per_video"]["spikes"] == pytest.approx(
        0.1 * 8 * s["chip"]["totals"]["neurons"], rel=1e-6)


def test_a_lava_bundle_maps_its_chains_with_the_host_neurons_as_inputs(nir_bundle):
    """Lava's chains leave each chain's source neuron to the host: its spikes enter as input groups."""
    from svformer_deploy.api import map_bundle
    from svformer_deploy.exporters import export_checkpoint

    ckpt = nir_bundle / "my ckpt (v1).pt"
    lava, _, _ = export_checkpoint(ckpt, "lava", nir_bundle / "lava bundle")  # written without the Lava runtime
    res = map_bundle(lava, "loihi", nir_bundle / "lava map", videos=1)
    doc = res.summary
    assert doc["totals"]["input_groups"] > 0 and doc["host"]["host_neurons"]
    f = doc["figures"]
    assert f["host_to_chip_per_timestep"]["host_to_chip_spikes"] > 0
    assert f["energy_per_video_mJ"]["chip"] > 0


def test_loihi2_maps_but_prints_no_energy_without_published_figures(nir_bundle, capsys):
    out = nir_bundle / "l2"
    assert run_cli(["map", str(nir_bundle / "nir bundle"), "--chip", "loihi2", "--out", str(out), "--videos", "1"]) == 0
    printed = capsys.readouterr().out
    assert "no per-event energy or latency with a public source" in printed
    doc = json.loads((out / "mapping.json").read_text())
    assert doc["figures"]["energy_per_video_mJ"] is None and "average_power_mW" not in doc["figures"]
    assert not (out / "energy_per_timestep.png").exists()
    assert "NO PUBLIC PER-EVENT FIGURES" in (out / "report.md").read_text()


def test_energy_report_with_chip_adds_the_section_beside_the_arithmetic_price(nir_bundle, capsys):
    out = nir_bundle / "energy with chip"
    assert run_cli(["energy", "report", str(nir_bundle / "my ckpt (v1).pt"), "--videos", "1", "--chip", "loihi",
                    "--baseline", "svformer-ann", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "on loihi (" in printed and "us per timestep" in printed
    s = json.loads((out / "summary.json").read_text())
    fig = s["chip"]["figures"]
    assert fig["videos"] == 1 and fig["energy_per_video_mJ"]["chip"] > 0
    assert fig["arithmetic_same_spikes_mJ_per_view"]["compute"] > 0
    assert "## Chip mapping: Intel Loihi (1)" in (out / "report.md").read_text()
    assert (out / "chip_cores_per_layer.png").is_file() and (out / "chip_energy_per_timestep.png").is_file()


def test_energy_report_with_a_chip_the_model_breaks_stops_before_counting(nir_bundle, capsys):
    out = nir_bundle / "energy tn"
    assert run_cli(["energy", "report", str(nir_bundle / "my ckpt (v1).pt"), "--videos", "1", "--chip", "truenorth",
                    "--out", str(out)]) == 2
    assert "does not fit IBM TrueNorth" in capsys.readouterr().err and not out.exists()


def test_a_bundle_whose_plan_was_edited_and_resealed_names_the_field(nir_bundle, tmp_path, capsys):
    import shutil

    from svformer_deploy.exporters.bundle import MANIFEST_NAME, manifest_digest

    path = tmp_path / "edited bundle"
    shutil.copytree(nir_bundle / "nir bundle", path)
    d = json.loads((path / MANIFEST_NAME).read_text())
    i = next(i for i, n in enumerate(d["plan"]["nodes"]) if n.get("tau"))
    d["plan"]["nodes"][i]["tau"] += 0.5
    d["integrity"] = manifest_digest(d)
    (path / MANIFEST_NAME).write_text(json.dumps(d))
    assert run_cli(["map", str(path), "--videos", "0", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert f"manifest field(s) plan.nodes[{i}].tau differ from the plan lowered from its checkpoint" in err
    assert err.count("\n") == 1 and not (tmp_path / "m").exists()
