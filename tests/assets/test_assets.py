"""The shipped checkpoint: a trained svformer_tiny (bn='shared') on moving digits, with its provenance."""

from __future__ import annotations

import torch

from svformer_deploy.assets import default_checkpoint
from svformer_deploy.models import load_checkpoint
from svformer_deploy.training.evaluate import evaluate_model


def test_shipped_checkpoint_provenance_and_accuracy():
    torch.set_num_threads(1)
    path = default_checkpoint()
    assert path.stat().st_size < 5 * 2**20
    raw = torch.load(path, weights_only=True)
    assert raw["extra"] == {}  # no optimizer state shipped
    model, meta = load_checkpoint(path)
    assert meta["model_name"] == "svformer_tiny" and model.config.bn == "shared" and model.config.num_frames == 8
    assert meta["command"].startswith("svformer-deploy train --model svformer_tiny --data moving-digits")
    assert f"--seed {meta['seed']}" in meta["command"]
    assert meta["metrics"]["val_top1"] >= 0.95 and meta["data"] == "moving-digits"
    assert meta["class_names"][4] == "orbit-clockwise"
    # the stored figure holds on the validation clips (first 300 of the 1,000)
    res = evaluate_model(model, "moving-digits", num_videos=300, class_names=meta["class_names"], progress=False)
    assert res.top1 >= 0.93
