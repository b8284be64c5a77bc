"""A pure-PyTorch, bit-exact emulation of Lava's fixed-point pipeline for a chain of netx conv layers.

Per layer and timestep, exactly as ``lava.proc.conv.models.PyConvModelFixed`` and
``lava.proc.lif.models.PyLifModelBitAcc`` compute it (all integers)::

    a[t] = wrap24(conv2d(s[t], w_int))                          conv synapse, signed 24-bit wrap-around
    c    = rtz(u[t-1] * (4096 - (du + 1))) + (a[t] << 6)        du = iDecay - 1 = 4095  ->  c = a[t] << 6
    u[t] = c - 2^24 if c > 2^23; then c + 2^24 if (that) <= -2^23   (Lava's one-step wrap, written literally)
    v'   = rtz(v[t-1] * (4096 - dv)) + u[t] + (bias << 6)
    v'   = clip(v', -(2^23 - 1), 2^23 - 1)
    s[t] = v' > (vThMant << 6)          (strict)
    v[t] = 0 where s[t] else v'

with ``rtz(x) = sign(x) * (|x| >> 12)`` (rounding toward zero). Time here is the model's: layer ``l`` at
step ``t`` sees its input at step ``t``. In Lava every synapse delays by one step, so the output of an
``L``-layer chain fed at steps 1..T appears at Lava steps L+1..L+T (the runner removes that latency).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from svformer_deploy.exporters.lava.quantize import DECAY_UNITY, LoihiLayer

__all__ = ["emulate_layer", "emulate_partition", "rtz_decay"]

_UV_MAX = 1 << 23


def rtz_decay(x: Tensor, decay: int) -> Tensor:
    """``sign(x) * ((|x| * (4096 - decay)) >> 12)``: Loihi's decay, rounding toward zero (int64)."""
    p = x * (DECAY_UNITY - decay)
    return torch.sign(p) * (p.abs() >> 12)


def _wrap24(a: Tensor) -> Tensor:
    """Lava's conv ``signed_clamp(x, 24)``: ``(x + 2^23) mod 2^24 - 2^23``."""
    return torch.remainder(a + _UV_MAX, 2 * _UV_MAX) - _UV_MAX


def _synapse(layer: LoihiLayer, s: Tensor) -> Tensor:
    """Integer conv of binary spikes (N, C, H, W) -> int64 (N, C_out, H', W').

    Every partial sum is an integer of magnitude <= max|w| * fan_in, so float32 is exact while that bound is
    below 2^24 (8-bit weights: fan_in < 2^17; Lava's own conv computes in float32 too), float64 beyond."""
    w = torch.as_tensor(layer.weight)
    fan_in = w[0].numel()
    dtype = torch.float32 if int(w.abs().max()) * fan_in < (1 << 24) else torch.float64
    out = F.conv2d(s.to(dtype), w.to(dtype), stride=layer.stride, padding=layer.padding, groups=layer.groups)
    return _wrap24(out.round().to(torch.int64))


def emulate_layer(layer: LoihiLayer, spikes: Tensor) -> Tensor:
    """Output spikes (T, B, C_out, H', W') int8 of one quantised layer for input spikes (T, B, C_in, H, W)."""
    T, B = spikes.shape[:2]
    a_all = _synapse(layer, spikes.reshape(T * B, *spikes.shape[2:])).reshape(T, B, *layer.out_shape)
    bias = torch.as_tensor(layer.bias, dtype=torch.int64).view(1, -1, 1, 1) << 6
    vth = layer.vth_mant << 6
    v = torch.zeros(B, *layer.out_shape, dtype=torch.int64)
    u = torch.zeros_like(v)
    out = torch.empty(T, B, *layer.out_shape, dtype=torch.int8)
    for t in range(T):
        c = rtz_decay(u, layer.i_decay) + (a_all[t] << 6)  # effective current decay du + 1 = iDecay (4096: u -> 0)
        u = torch.where(c > _UV_MAX, c - 2 * _UV_MAX, c)
        u = torch.where(u <= -_UV_MAX, c + 2 * _UV_MAX, u)
        v = (rtz_decay(v, layer.v_decay) + u + bias).clamp(-_UV_MAX + 1, _UV_MAX - 1)
        fired = v > vth
        out[t] = fired.to(torch.int8)
        v = v.masked_fill(fired, 0)
    return out


def emulate_partition(layers: Sequence[LoihiLayer], spikes: Tensor, return_all: bool = False) -> Tensor | list[Tensor]:
    """Run a netx chain in the emulation: input spikes (T, B, C, H, W) in {0, 1} -> output spikes (T, B, C', H', W').

    With ``return_all`` the spikes of every layer are returned (list, first layer first).
    """
    if spikes.dim() != 5:
        raise ValueError(f"spikes must be (T, B, C, H, W), got shape {tuple(spikes.shape)}")
    outs = []
    x = spikes
    for layer in layers:
        x = emulate_layer(layer, x)
        outs.append(x)
    return outs if return_all else outs[-1]
