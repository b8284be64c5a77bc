"""The paper-size model (svformer_ucf101, 13.8 M parameters, T=16, 224x224, shared BN) exports to NIR and ONNX
and both verify on one real clip (moving digits rendered at 224x224)."""

from __future__ import annotations

import pytest
import torch

from svformer_deploy.exporters import eval_batches, export_checkpoint, get_exporter
from svformer_deploy.models import create_model, save_checkpoint


@pytest.fixture(scope="module")
def paper_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("svformer_ucf101", bn="shared", num_classes=10)
    path = tmp_path_factory.mktemp("paper") / "ucf101_shared.pt"
    save_checkpoint(path, model, class_names=[f"c{i}" for i in range(10)])
    return path


@pytest.fixture(scope="module")
def one_clip(paper_ckpt):
    from svformer_deploy.models import get_config

    return list(eval_batches("moving-digits", get_config("svformer_ucf101").replace(bn="shared", num_classes=10), 1))


@pytest.mark.slow
@pytest.mark.parametrize("target, out", [("nir", "bundle"), ("onnx", "model.onnx")])
def test_paper_size_export_verifies_on_one_clip(paper_ckpt, one_clip, tmp_path, target, out):
    torch.set_num_threads(2)
    path, model, _ = export_checkpoint(paper_ckpt, target, tmp_path / out)
    assert model.config.img_size == 224 and model.config.num_frames == 16
    report = get_exporter(target).verify(path, model, one_clip, data_desc="moving-digits, 1 clip")
    assert report["clips"] == 1 and report["passed"] is True
    # exact, or threshold: every divergence starts at a neuron within float rounding of V_th (docs/export.md)
    assert report["verdict"] in ("exact", "threshold")
    if target == "nir":
        assert report["coverage"]["problems"] == [] and report["approximations"] == []
        assert report["spike_agreement"] > 0.99
    assert report["top1_agreement"] == 1.0
