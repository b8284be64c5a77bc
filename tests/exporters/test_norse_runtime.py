"""The second NIR runtime: the same NIR bundle verified in norse through the same report."""

import copy
import json

import pytest
import torch

from svformer_deploy.exporters import export_checkpoint, verify_export
from svformer_deploy.exporters.bundle import VERIFICATION_NAME
from svformer_deploy.exporters.nir.norse import NORSE_RUNTIME, REPORT_NAME
from svformer_deploy.exporters.nir.lowering import DT, _lif_node
from svformer_deploy.models.neurons import PLIFParameters, plif_step
from tests.helpers import run_cli

from .conftest import clips


@pytest.fixture(scope="module")
def nir_bundle(tiny_ckpt, tmp_path_factory):
    path, model, _ = export_checkpoint(tiny_ckpt, "nir", tmp_path_factory.mktemp("norse") / "bundle")
    return path, model


def test_norse_lif_is_the_plif_step_except_at_ties():
    """norse's import of one exported LIF node, stepped with the bundle's dt, fires exactly where plif_step
    fires, except where H is at V_th (PLIF fires on equality, NIR's threshold is strict) or within float32
    rounding of it (norse computes dt * (1 / tau), PLIF sigmoid(w))."""
    g = torch.Generator().manual_seed(0)
    n, tau = 512, 1.7
    node = NORSE_RUNTIME.build("lif", _lif_node(tau, 1.0, (n,)), DT)
    p = PLIFParameters(torch.tensor(1 / tau, dtype=torch.float32), 1.0)
    state, differ, steps = None, 0, 0
    for _ in range(12):
        x = torch.rand(1, n, generator=g) * 3
        s, state = plif_step(x, state, p)
        z = node(x)
        tie = (state.h - 1.0).abs() <= 1e-5
        assert torch.equal(z[~tie], s[~tie]), "norse and PLIF differ away from the threshold"
        differ += int((z != s).sum())
        steps += int(s.sum())
        if differ:  # after a tie the two states differ; the comparison stops being about one step
            break
    assert steps > 50  # the neurons really fired


def test_same_bundle_same_report_second_runtime(nir_bundle, tmp_path):
    path, model = nir_bundle
    before = (path / VERIFICATION_NAME).read_bytes() if (path / VERIFICATION_NAME).exists() else None
    result = verify_export(path, target="nir-norse", model=model, batches=[(clips(2), torch.tensor([0, 1]))])
    r = result.report
    assert set(r["runtimes"].values()) == {"norse"} and "norse.torch.from_nir" in r["runtime_note"]["norse"]
    assert r["verdict"] in ("exact", "threshold") and r["passed"] is True and len(r["layers"]) == 25
    assert r["spike_agreement"] > 0.99 and result.report_path == path / REPORT_NAME
    assert json.loads((path / REPORT_NAME).read_text())["verdict"] == r["verdict"]
    after = (path / VERIFICATION_NAME).read_bytes() if (path / VERIFICATION_NAME).exists() else None
    assert before == after  # the snntorch report is not overwritten
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.blocks2[0].mlp.bn1.bias.add_(0.5)
    bad = verify_export(path, target="nir-norse", model=wrong, batches=[(clips(2), None)]).report
    assert bad["verdict"] == "failed" and bad["first_divergences"][0]["layer"] == "blocks2.0.mlp.lif2"


def test_cli_verify_with_norse_and_wrong_uses(nir_bundle, tiny_ckpt, tmp_path, capsys):
    path, _ = nir_bundle
    assert run_cli(["verify", str(path), "--target", "nir-norse", "--num-videos", "2"]) == 0
    assert "verdict: " in capsys.readouterr().out
    assert run_cli(["export", str(tiny_ckpt), "--to", "nir-norse", "--out", str(tmp_path / "x")]) == 2
    assert "only verifies" in capsys.readouterr().err and not (tmp_path / "x").exists()
    onnx_bundle, _, _ = export_checkpoint(tiny_ckpt, "onnx", tmp_path / "onnx")
    assert run_cli(["verify", str(onnx_bundle), "--target", "nir-norse", "--num-videos", "1"]) == 2
    assert "was exported --to onnx; target 'nir-norse' verifies bundles exported --to nir" in capsys.readouterr().err
