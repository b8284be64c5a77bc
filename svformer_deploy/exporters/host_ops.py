"""Host operations: the parts of a bundle that run outside the neuromorphic partitions.

A registry maps the ``op`` name written in the manifest to a pure function
``f(inputs: list[Tensor], attrs: dict, params: dict[str, Tensor]) -> list[Tensor]``. Per-timestep ops see
(B, *shape) tensors; per-clip ops see (T, B, *shape) tensors. Each op's manifest entry also states its
equation, so a runtime without this package can implement it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from svformer_deploy.errors import BundleFormatError

__all__ = ["HOST_OPS", "register_host_op", "run_host_op"]

HostOpFn = Callable[[list[Tensor], dict[str, Any], dict[str, Tensor]], list[Tensor]]
HOST_OPS: dict[str, HostOpFn] = {}


def register_host_op(name: str) -> Callable[[HostOpFn], HostOpFn]:
    def deco(fn: HostOpFn) -> HostOpFn:
        HOST_OPS[name] = fn
        return fn

    return deco


def run_host_op(op: str, inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor]) -> list[Tensor]:
    if op not in HOST_OPS:
        raise BundleFormatError(f"bundle declares host op '{op}', which this svformer-deploy does not know "
                                f"(known: {', '.join(sorted(HOST_OPS))}); upgrade svformer-deploy")
    return HOST_OPS[op](inputs, attrs, params)


@register_host_op("spike_attention_product")
def spike_attention_product(inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor]) -> list[Tensor]:
    """``A_j = Q_j (K_j^T V_j) * scale`` per head j; q, k, v are (B, C, H, W) maps whose channels j*d..j*d+d-1
    hold head j, and whose H*W positions are the tokens. Output (B, C, H, W), channel j*d + i."""
    q, k, v = inputs
    B, C, H, W = q.shape
    h, d = attrs["num_heads"], attrs["head_dim"]

    def tokens(x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, h, N, d)
        return x.reshape(B, h, d, H * W).transpose(-2, -1)

    a = (tokens(q) @ (tokens(k).transpose(-2, -1) @ tokens(v))) * attrs["scale"]
    return [a.transpose(-2, -1).reshape(B, C, H, W)]


@register_host_op("concat")
def concat(inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor]) -> list[Tensor]:
    """Concatenate along the (batch-excluded) axis ``attrs["axis"]``."""
    return [torch.cat(inputs, dim=attrs["axis"] + 1)]


@register_host_op("temporal_head")
def temporal_head(inputs: list[Tensor], attrs: dict[str, Any], params: dict[str, Tensor]) -> list[Tensor]:
    """Grouped Conv3d over the whole (T, H', W') spike volume (BatchNorm3d folded in), then the classifier:
    spikes (T, B, C, H', W') -> logits (B, K)."""
    (s,) = inputs
    x = s.permute(1, 2, 0, 3, 4)  # (B, C, T, H, W)
    z = F.conv3d(x, params["conv3d_weight"], params["conv3d_bias"], groups=attrs["groups"]).flatten(1)
    return [F.linear(z, params["fc_weight"], params["fc_bias"])]
