"""The service layer: typed results, user paths resolved once, and the CLI and the demo as thin callers of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from svformer_deploy import api
from svformer_deploy.assets import default_checkpoint
from svformer_deploy.errors import EnergyError
from svformer_deploy.exporters import ExportResult
from tests.helpers import run_cli

RATES = Path(__file__).parent / "energy" / "data" / "svformer_ucf101_published_rates.csv"


@pytest.fixture()
def cwd(tmp_path, monkeypatch) -> Path:
    """A fresh working directory holding a copy of the shipped checkpoint as ``ckpt.pt``."""
    shutil.copyfile(default_checkpoint(), tmp_path / "ckpt.pt")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    return tmp_path.resolve()


def _recorder(calls: list, result):
    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return result

    return fake


def test_export_and_verify_cli_and_demo_step_call_the_service_layer(cwd, monkeypatch, capsys):
    from svformer_deploy import demo

    calls: list = []
    fake = ExportResult(cwd / "b", {"passed": True}, cwd / "b" / "verification.json", "all good")
    monkeypatch.setattr(api, "export_and_verify", _recorder(calls, fake))
    assert run_cli(["export", "ckpt.pt", "--to", "nir", "--out", "b", "--num-videos", "3"]) == 0
    assert "all good" in capsys.readouterr().out
    (args, kwargs), = calls
    assert args == (Path("ckpt.pt"), "nir", Path("b")) and kwargs["num_videos"] == 3
    demo.demo_steps()["export-onnx"](cwd / "ckpt.pt", cwd / "step")
    assert calls[1][0] == (cwd / "ckpt.pt", "onnx", cwd / "step" / "bundle")


def test_verify_cli_calls_the_service_layer_and_a_failed_verification_exits_1(cwd, monkeypatch):
    calls: list = []
    fake = ExportResult(cwd / "b", {"passed": False}, cwd / "b" / "verification.json", "spikes differ")
    monkeypatch.setattr(api, "verify", _recorder(calls, fake))
    assert run_cli(["verify", "b", "--target", "nir-norse", "--num-videos", "1"]) == 1
    (args, kwargs), = calls
    assert args == (Path("b"),) and kwargs["target"] == "nir-norse" and kwargs["num_videos"] == 1


def test_evaluate_resolves_relative_paths_and_returns_a_typed_result(cwd):
    res = api.evaluate("ckpt.pt", "moving-digits", out="ev", num_videos=4, progress=False)
    assert isinstance(res, api.EvalOutcome) and 0.0 <= res.top1 <= res.top5 <= 1.0
    assert res.report["checkpoint"] == str(cwd / "ckpt.pt") and res.report["num_videos"] == 4
    assert all(p.is_absolute() and p.parent == cwd / "ev" and p.is_file() for p in res.paths.values())


def test_energy_price_writes_json_at_a_resolved_path_and_renders_markdown(cwd):
    shutil.copyfile(RATES, cwd / "rates.csv")
    res = api.energy_price("svformer_ucf101", "rates.csv", views=api.parse_views(["1x1", "5x3"]),
                           json_out="out/price.json")
    assert res.json_path == cwd / "out" / "price.json"
    assert json.loads(res.json_path.read_text())["per_video"].keys() == {"1x1", "5x3"}
    assert "| convention |" in res.markdown and "per video 5x3" in res.markdown
    assert res.summary["model"] == "svformer_ucf101"


@pytest.mark.parametrize("bad", ["five", "5x", "x3", "5by3"])
def test_parse_views_names_the_fix(bad):
    with pytest.raises(EnergyError, match="CLIPSxCROPS"):
        api.parse_views([bad])


def test_profile_files_are_resolved_and_names_are_kept(cwd):
    (cwd / "chip.yaml").write_text("name: chip\nsource: test\nenergy_pj: {mac: 1, ac: 1, mul: 1, add: 1}\n")
    assert api._profile_spec("chip.yaml") == str(cwd / "chip.yaml")
    assert api._profile_spec("45nm-fp32") == "45nm-fp32"
