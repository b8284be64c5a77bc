"""ANN baselines (dense MAC counts) and the published-convention audits.

* :data:`TORCHVISION_BASELINES`: torchvision video models built with ``weights=None`` (no download), counted on
  the SNN's own input when they can run there (like for like), else at the input size their GMACs were
  published with (``weights.meta["_ops"]``, read from the enum, no download), to be shown apart.
* ``svformer-ann``: the SVFormer ANN twin (``neuron="relu"``), same clip as the SNN.
* :func:`fvcore_count`: what fvcore reports for a model (one fused multiply-add = one flop; conv, linear,
  matmul/bmm counted; eval BatchNorm with affine = 2 flops per element; element-wise ops and neurons ignored).

Dense counts run on the ``meta`` device: shapes only, no arithmetic, no memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from svformer_deploy.energy.counter import OpCounts, count_ops
from svformer_deploy.errors import EnergyError

__all__ = ["Baseline", "TORCHVISION_BASELINES", "list_baselines", "baseline_counts", "fvcore_count", "published_gmacs"]


@dataclass(frozen=True)
class Baseline:
    name: str
    builder: str  # torchvision.models.video function name
    weights_enum: str
    frames: int
    size: int


TORCHVISION_BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("r3d_18", "r3d_18", "R3D_18_Weights", 16, 112),
    Baseline("mc3_18", "mc3_18", "MC3_18_Weights", 16, 112),
    Baseline("r2plus1d_18", "r2plus1d_18", "R2Plus1D_18_Weights", 16, 112),
    Baseline("s3d", "s3d", "S3D_Weights", 16, 224),
    Baseline("mvit_v2_s", "mvit_v2_s", "MViT_V2_S_Weights", 16, 224),
    Baseline("swin3d_t", "swin3d_t", "Swin3D_T_Weights", 16, 224),
)}


def list_baselines() -> list[str]:
    return ["svformer-ann", *TORCHVISION_BASELINES]


def published_gmacs(name: str) -> float:
    """torchvision's published 'GFLOPS' (GMACs, FlopCounterMode/2) for one clip, from the weights enum."""
    from torchvision.models import video

    b = TORCHVISION_BASELINES[name]
    return float(getattr(video, b.weights_enum).DEFAULT.meta["_ops"])


def baseline_counts(name: str, svformer_config=None, input_shape: tuple[int, ...] | None = None) -> OpCounts:
    """Dense counts of one clip for a baseline: a torchvision model on ``input_shape`` (C, T, H, W; default its
    published input size), or ``"svformer-ann"`` (needs ``svformer_config``: the SNN's config; same clip shape).
    A torchvision model that cannot run on ``input_shape`` raises :class:`EnergyError`."""
    if name == "svformer-ann":
        if svformer_config is None:
            raise EnergyError("the svformer-ann baseline needs the SNN's config (same architecture and clip)")
        from svformer_deploy.models import create_model

        model = create_model(svformer_config.replace(neuron="relu")).eval().to("meta")
        x = torch.empty((1, *svformer_config.input_shape), device="meta")
        return count_ops(model, x, dense=True)
    if name not in TORCHVISION_BASELINES:
        raise EnergyError(f"unknown baseline {name!r}; choose from {list_baselines()}")
    from torchvision.models import video

    b = TORCHVISION_BASELINES[name]
    with torch.device("meta"):
        model: nn.Module = getattr(video, b.builder)(weights=None).eval()
    shape = tuple(input_shape) if input_shape is not None else (3, b.frames, b.size, b.size)
    try:
        return count_ops(model, torch.empty((1, *shape), device="meta"), dense=True, num_steps=None)
    except (RuntimeError, ValueError) as err:
        raise EnergyError(f"baseline {name} cannot run on input {'x'.join(map(str, shape))}: "
                          f"{str(err).splitlines()[0][:120]}") from err


def fvcore_count(dense: OpCounts) -> dict[str, int]:
    """fvcore's total from a dense count: MACs (conv, linear, matmul) + 2 x eval-BN elements; with its parts."""
    t = dense.totals()
    bn = t["bn_mul"] + t["bn_folded"]
    return {"mac": t["mac"], "batchnorm": 2 * bn, "total": t["mac"] + 2 * bn}
