"""The one place where exporters turn model modules into plain synapse weights: BatchNorm folding, token-wise
Linear as a 1x1 convolution, depthwise kernels, a conv composed with a following 1x1 conv, and PLIF's tau.

Every function works in float64 (NumPy) and is exact in real arithmetic; callers round once (NIR to float32,
Lava to its integer mantissas). Used by the export plan's lowering and the Lava backend.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from svformer_deploy.errors import ExportError, UnsupportedLayerError

__all__ = ["SynapseParams", "synapse_params", "bn_affine", "fold_bn", "fold_bn_per_timestep", "dense_from_depthwise",
           "compose_then_1x1",
           "plif_tau", "PerTimestepBNError"]

SynapseParams = tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int], int]
"""(weight (O, I / groups, kH, kW), bias (O,), stride, padding, groups), float64."""


class PerTimestepBNError(ExportError):
    """The model has per-timestep BatchNorm, which a time-invariant graph cannot hold exactly."""


@torch.no_grad()
def synapse_params(m: nn.Module) -> SynapseParams:
    """A Conv2d as it is, or a token-wise ``nn.Linear`` as the 1x1 Conv2d on the (C, H, W) token map that
    computes the same dot products (``W[o, i, 0, 0] = W_lin[o, i]``); a missing bias is 0."""
    if isinstance(m, nn.Linear):
        w = m.weight.double()[:, :, None, None]
        b = m.bias.double() if m.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        return w.numpy(), b.numpy(), (1, 1), (0, 0), 1
    if isinstance(m, nn.Conv2d):
        if m.dilation != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UnsupportedLayerError(f"{type(m).__name__} with dilation/padding mode {m.dilation}/{m.padding_mode}:"
                                        " the exporters write dilation 1, zero padding only")
        w = m.weight.double()
        b = m.bias.double() if m.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        return w.numpy(), b.numpy(), tuple(m.stride), tuple(m.padding), int(m.groups)
    raise UnsupportedLayerError(f"{type(m).__name__}: not a Conv2d or Linear")


@torch.no_grad()
def bn_affine(bn: nn.Module, approximate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as ``y = scale x + shift`` (float64, per channel).

    ``TemporalBatchNorm``: its own float32 ``affine()`` (``scale = gamma / sqrt(var + eps)``, ``shift = beta -
    mean * scale``); per-timestep statistics raise :class:`PerTimestepBNError` unless ``approximate``, which
    takes the mean over T of scale and of shift. ``BatchNorm3d``: the same formula in float64.
    """
    if isinstance(bn, nn.BatchNorm3d):
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        return scale.numpy(), (bn.bias.double() - bn.running_mean.double() * scale).numpy()
    scale, shift = bn.affine()
    if scale.dim() == 2:  # per timestep (T, C)
        if not approximate:
            raise PerTimestepBNError("per-timestep BatchNorm cannot be folded into time-invariant weights; train with "
                                     "bn='shared' or pass --approximate-bn")
        return scale.double().mean(0).numpy(), shift.double().mean(0).numpy()
    return scale.double().numpy(), shift.double().numpy()


def fold_bn(w: np.ndarray, b: np.ndarray, bn: nn.Module | None, approximate: bool = False,
            rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """``BN(W x + b)`` = ``(s W) x + (s b + t)`` with (s, t) = :func:`bn_affine` restricted to output ``rows``
    (``w``, ``b`` are already those rows); ``bn=None`` returns them unchanged."""
    if bn is None:
        return w, b
    s, t = (a[rows] for a in bn_affine(bn, approximate))
    return w * s.reshape(-1, *([1] * (w.ndim - 1))), b * s + t


@torch.no_grad()
def fold_bn_per_timestep(w: np.ndarray, b: np.ndarray, bn: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Per-timestep BatchNorm folded exactly, one weight set per timestep: ``W_t = s_t W``, ``b_t = s_t b + t_t``
    with (s_t, t_t) the layer's float32 ``affine()`` at timestep t. Returns (T, *w.shape) and (T, *b.shape)."""
    scale, shift = (a.double().numpy() for a in bn.affine())
    if scale.ndim != 2:
        raise ExportError(f"{type(bn).__name__} keeps one set of statistics, not one per timestep")
    return (np.stack([w * s.reshape(-1, *([1] * (w.ndim - 1))) for s in scale]),
            np.stack([b * s + t for s, t in zip(scale, shift)]))


def dense_from_depthwise(w: np.ndarray) -> np.ndarray:
    """Block-diagonal dense kernel (C, C, k, k) equal to a depthwise kernel (C, 1, k, k): ``D[c, c] = w[c, 0]``."""
    c = w.shape[0]
    dense = np.zeros((c, c, *w.shape[2:]), dtype=w.dtype)
    dense[np.arange(c), np.arange(c)] = w[:, 0]
    return dense


def compose_then_1x1(w: np.ndarray, b: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A conv (W, b) followed by a 1x1, stride-1, unpadded conv (P (O, C, 1, 1), b2) as one conv:
    ``W'[o, i] = sum_c P[o, c] W[c, i]``, ``b' = P b + b2`` (exact: zero padding commutes with the per-channel
    bias). With a block-diagonal (depthwise) W this is ``P[o, i] W[i, i]``."""
    p = w2[:, :, 0, 0]
    return np.einsum("oc,cikl->oikl", p, w), p @ b + b2


def plif_tau(module: nn.Module) -> float:
    """tau of a PLIF layer in timesteps, from its float32 ``sigmoid(w)`` (the factor the model multiplies by)."""
    return float(1.0 / torch.sigmoid(module.w.detach()).double())
