"""The published convention (Spikformer / SVFormer reference energy script), reproduced for the paper audit.

Per Conv/Linear layer: dense MACs (output elements x fan-in) x the layer's input firing rate, booked as ACs when
the input holds only {0, 1}; the full dense MACs as MACs otherwise (the analog first layer). The attention
product is added analytically per :class:`SpikeAttentionProduct`: ``T * heads * N * d^2 * (min(fr_K, fr_V) +
fr_Q)`` ACs per clip. BatchNorm, neuron updates, residual adds, the x0.125 scale and memory are ignored.
Firing rates are measured on the same clips (mean over all elements, all timesteps). Unlike the reference
script, the time-major layout is handled correctly (no C_out / B inflation).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from svformer_deploy.models.recording import forward_hooks
from svformer_deploy.models.svformer import SpikeAttentionProduct

__all__ = ["spikformer_counts"]


def _binary(x: Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def spikformer_counts(model: nn.Module, clips: Tensor) -> "OrderedDict[str, dict[str, float]]":
    """Per layer ``{"mac", "ac", "rate"}`` under the published convention, summed over the batch."""
    out: OrderedDict[str, dict[str, float]] = OrderedDict()

    def syn_hook(name: str):
        def hook(mod: nn.Module, args: tuple, y: Tensor) -> None:
            x = args[0]
            if isinstance(mod, nn.Linear):
                dense = y.numel() * mod.in_features
            else:
                dense = y.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
            if _binary(x):
                rate = float(x.float().mean())
                out[name] = {"mac": 0.0, "ac": dense * rate, "rate": rate}
            else:
                out[name] = {"mac": float(dense), "ac": 0.0, "rate": float("nan")}
        return hook

    def attn_hook(name: str):
        def hook(mod: nn.Module, args: tuple, y: Tensor) -> None:
            q, k, v = args
            T, B, h, N, d = q.shape
            fq, fk, fv = (float(t.float().mean()) for t in (q, k, v))
            out[name] = {"mac": 0.0, "ac": B * T * h * N * d * d * (min(fk, fv) + fq), "rate": fq}
        return hook

    hooks = [(mod, syn_hook(name)) for name, mod in model.named_modules()
             if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    hooks += [(mod, attn_hook(name)) for name, mod in model.named_modules() if isinstance(mod, SpikeAttentionProduct)]
    with forward_hooks(hooks), torch.no_grad():
        model.eval()(clips)
    return out
