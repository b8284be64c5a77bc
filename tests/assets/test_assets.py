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


def test_shipped_per_timestep_checkpoint_provenance_and_accuracy():
    """The per-timestep-BN twin: T x C BatchNorm statistics that really differ over time, its training command."""
    from svformer_deploy.assets import per_timestep_checkpoint
    from svformer_deploy.models.norm import TemporalBatchNorm

    torch.set_num_threads(1)
    path = per_timestep_checkpoint()
    assert path.stat().st_size < 5 * 2**20
    assert torch.load(path, weights_only=True)["extra"] == {}
    model, meta = load_checkpoint(path)
    assert meta["model_name"] == "svformer_tiny" and model.config.bn == "per_timestep" and model.config.img_size == 32
    assert meta["command"].startswith("svformer-deploy train --model svformer_tiny --data moving-digits")
    assert "--set bn=per_timestep" in meta["command"] and f"--seed {meta['seed']}" in meta["command"]
    bns = [m for m in model.modules() if isinstance(m, TemporalBatchNorm)]
    spread = max(float(m.affine()[0].std(0).mean() / m.affine()[0].abs().mean()) for m in bns)
    assert spread > 0.05  # the per-timestep scales differ: a time-invariant graph cannot carry them
    assert meta["metrics"]["val_top1"] >= 0.65
    res = evaluate_model(model, "moving-digits", num_videos=300, class_names=meta["class_names"], progress=False)
    assert abs(res.top1 - meta["metrics"]["val_top1"]) < 0.06
