"""ANN baselines (dense MAC counts) and the published-convention audits.

* :data:`TORCHVISION_BASELINES`: torchvision video models built with ``weights=None`` (no download), counted on
  the SNN's own input when they can run there (like for like), else at the input size their GMACs were
  published with (``weights.meta["_ops"]``, read from the enum, no download), to be shown apart.
* ``svformer-ann``: the SVFormer ANN twin (``neuron="relu"``), same clip as the SNN.
* :func:`place_baseline`: the one rule both ``energy report`` and ``sparsity`` use to set a baseline beside the
  SNN: on the SNN's own input when it runs there, else at its published input and marked ``same_input=False``
  (shown apart, never in a ratio or a shared chart); :func:`ann_profile_for` is the profile its arithmetic is
  priced under.
* :func:`fvcore_count`: what fvcore reports for a model (one fused multiply-add = one flop; conv, linear,
  matmul/bmm counted; eval BatchNorm with affine = 2 flops per element; element-wise ops and neurons ignored).

Dense counts run on the ``meta`` device: shapes only, no arithmetic, no memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from svformer_deploy.energy.counter import OpCounts, count_ops
from svformer_deploy.energy.profiles import HardwareProfile, get_profile
from svformer_deploy.errors import EnergyError

__all__ = ["Baseline", "TORCHVISION_BASELINES", "ANN_TWIN", "FALLBACK_ANN_PROFILE", "PlacedBaseline", "list_baselines",
           "baseline_counts", "place_baseline", "ann_profile_for", "fvcore_count", "published_gmacs"]

ANN_TWIN = "svformer-ann"
#: The profile ANN arithmetic is priced under when the SNN's profile does not price ANNs (``prices_ann=False``).
FALLBACK_ANN_PROFILE = "45nm-fp32"


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


def baseline_counts(name: str, svformer_config=None, input_shape: tuple[int, ...] | None = None, *,
                    fold_bn: bool = False) -> OpCounts:
    """Dense counts of one clip for a baseline: a torchvision model on ``input_shape`` (C, T, H, W; default its
    published input size), or ``"svformer-ann"`` (needs ``svformer_config``: the SNN's config; same clip shape).
    ``fold_bn`` counts time-invariant BatchNorms as folded into the preceding layer, as for the SNN.
    A torchvision model that cannot run on ``input_shape`` raises :class:`EnergyError`."""
    if name == ANN_TWIN:
        if svformer_config is None:
            raise EnergyError("the svformer-ann baseline needs the SNN's config (same architecture and clip)")
        from svformer_deploy.models import create_model

        model = create_model(svformer_config.replace(neuron="relu")).eval().to("meta")
        x = torch.empty((1, *svformer_config.input_shape), device="meta")
        return count_ops(model, x, dense=True, fold_bn=fold_bn)
    if name not in TORCHVISION_BASELINES:
        raise EnergyError(f"unknown baseline {name!r}; choose from {list_baselines()}")
    from torchvision.models import video

    b = TORCHVISION_BASELINES[name]
    with torch.device("meta"):
        model: nn.Module = getattr(video, b.builder)(weights=None).eval()
    shape = tuple(input_shape) if input_shape is not None else (3, b.frames, b.size, b.size)
    try:
        return count_ops(model, torch.empty((1, *shape), device="meta"), dense=True, num_steps=None, fold_bn=fold_bn)
    except (RuntimeError, ValueError) as err:
        raise EnergyError(f"baseline {name} cannot run on input {'x'.join(map(str, shape))}: "
                          f"{str(err).splitlines()[0][:120]}") from err


@dataclass(frozen=True)
class PlacedBaseline:
    """A baseline's dense one-clip counts and where they were taken.

    Attributes:
        name: the baseline's name.
        counts: dense counts of one clip (one view: one clip x one crop).
        same_input: True when counted on the SNN's own input (like for like: may stand in a ratio or share a
            chart with the SNN); False when it cannot run there and was counted at its published input.
        why: the reason it cannot run on the SNN's input (empty when ``same_input``).
    """

    name: str
    counts: OpCounts
    same_input: bool
    why: str = ""


def place_baseline(name: str, svformer_config, *, fold_bn: bool = False) -> PlacedBaseline:
    """Count ``name`` like for like: on the SNN's own input ``svformer_config.input_shape`` when it runs there,
    else at its published input (``same_input=False``: shown apart, never in a ratio or a shared chart)."""
    if name == ANN_TWIN:
        return PlacedBaseline(name, baseline_counts(name, svformer_config, fold_bn=fold_bn), True)
    try:
        return PlacedBaseline(name, baseline_counts(name, svformer_config, tuple(svformer_config.input_shape),
                                                    fold_bn=fold_bn), True)
    except EnergyError as err:
        return PlacedBaseline(name, baseline_counts(name, svformer_config, fold_bn=fold_bn), False, str(err))


def ann_profile_for(profile: HardwareProfile) -> HardwareProfile:
    """The profile ANN arithmetic is priced under beside an SNN priced under ``profile``: the same one when it
    prices ANNs (``prices_ann``), else :data:`FALLBACK_ANN_PROFILE` (a neuromorphic chip's figures say nothing
    about dense arithmetic)."""
    return profile if profile.prices_ann else get_profile(FALLBACK_ANN_PROFILE)


def fvcore_count(dense: OpCounts) -> dict[str, int]:
    """fvcore's total from a dense count: MACs (conv, linear, matmul) + 2 x eval-BN elements; with its parts."""
    t = dense.totals()
    bn = t["bn_mul"] + t["bn_folded"]
    return {"mac": t["mac"], "batchnorm": 2 * bn, "total": t["mac"] + 2 * bn}
