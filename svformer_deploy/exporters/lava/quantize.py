"""Loihi fixed-point quantisation of one synapse + PLIF layer (the netx 'conv' layer with a CUBA neuron).

The PLIF layer of the float model, per timestep (``k = 1/tau``, threshold ``V_th``)::

    H[t] = (1 - k) V[t-1] + k X[t],   X[t] = W * s[t] + b,   spike if H[t] >= V_th,   V[t] = H[t] (1 - spike)

maps onto Lava's bit-accurate CUBA LIF (``lava.proc.lif.models.PyLifModelBitAcc``) with

* ``iDecay = 4096``  -> ``du = 4095``, and with Loihi's ``ds_offset = 1`` the current decays fully every step:
  no current state, ``u[t] = a[t] << 6``;
* ``vDecay = dv = round(4096 k)`` (clamped to Loihi's 12-bit 0..4095);
* the input scaled by ``k`` (PLIF's ``decay_input``) and expressed in units of the threshold:
  ``W_eff = k W / V_th``, ``b_eff = k b / V_th``;
* **8-bit weight mantissas with a per-layer exponent** ``e``: ``w_int = round(W_eff 2^e)`` in [-128, 127], the
  threshold mantissa ``vThMant = 2^e`` (so the threshold is exactly 1.0 in weight units) and the bias mantissa
  ``bias = round(b_eff 2^e)`` in Loihi's 13-bit range [-4096, 4095] (netx fixes ``bias_exp = 6``, the same
  shift as the synaptic input).

Why not slayer's scheme: slayer fixes one global scale (1.0 = 64, weights in steps of 2/64 clamped to
[-256, 254], i.e. an 8-bit mantissa with a fixed exponent). That is the special case ``e = 5`` here. SVFormer's
BN-folded, 1/tau-scaled weights are mostly far below one threshold, so a fixed step of 1/32 threshold leaves
them a handful of levels; choosing ``e`` per layer from the weights gives every layer all 8 bits. ``e`` is the
largest value in [0, 16] (``vThMant`` is 17-bit) for which no weight and no bias is clipped; a fixed exponent can
be forced (``exponent=``), and whatever then overflows is clipped and reported by a
:class:`LoihiOverflowWarning` with the clipped fraction.

Lava's netx loader (``optimize_weight_bits``) re-packs dense weights in [-128, 127] losslessly and the conv
synapse uses them as they are, so the integers written here are the integers Lava computes with.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FloatLayer", "LoihiLayer", "LoihiOverflowWarning", "quantize_layer",
           "WEIGHT_MIN", "WEIGHT_MAX", "BIAS_MIN", "BIAS_MAX", "MAX_EXPONENT", "DECAY_UNITY"]

WEIGHT_MIN, WEIGHT_MAX = -128, 127        # 8-bit signed weight mantissa
BIAS_MIN, BIAS_MAX = -(1 << 12), (1 << 12) - 1  # 13-bit signed bias mantissa (Lava's bias_mant precision)
MAX_EXPONENT = 16                          # vThMant = 2^e must fit Loihi's 17-bit unsigned threshold
DECAY_UNITY = 4096                         # decays are 12-bit fractions of 4096


class LoihiOverflowWarning(UserWarning):
    """Weights or biases did not fit their Loihi mantissa after scaling and were clipped."""


@dataclass(frozen=True)
class FloatLayer:
    """One float synapse + PLIF layer of a partition: ``spikes -> conv2d(weight, bias) -> PLIF(tau)``.

    Attributes:
        name: human-readable description of the modules it came from (e.g. ``"patch_embed3.conv+bn"``).
        neuron: dotted name of the PLIF module whose spikes this layer produces.
        weight: (C_out, C_in / groups, kH, kW) float64, BatchNorm already folded in.
        bias: (C_out,) float64.
        stride, padding, groups: of the 2-D convolution (token-wise Linear layers are 1x1 convolutions).
        tau: the PLIF time constant (1 / sigmoid(w)).
        v_threshold: the PLIF firing threshold.
        in_shape: (C_in, H, W) of the input spikes.
        sources: dotted names of the modules folded into this layer, in order.
    """

    name: str
    neuron: str
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    tau: float
    v_threshold: float
    in_shape: tuple[int, int, int]
    sources: tuple[str, ...] = field(default=())

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """(C_out, H_out, W_out) of the standard convolution output-size formula."""
        _, h, w = self.in_shape
        kh, kw = self.weight.shape[2:]
        return (int(self.weight.shape[0]),
                (h + 2 * self.padding[0] - kh) // self.stride[0] + 1,
                (w + 2 * self.padding[1] - kw) // self.stride[1] + 1)


@dataclass(frozen=True)
class LoihiLayer:
    """The quantised layer: integers exactly as written to the netx file and used by Lava's fixed_pt models.

    ``vth_mant = 2^exponent``; ``i_decay = 4096`` (no current state); ``v_decay = round(4096 / tau)``.
    ``clipped_weights`` / ``clipped_biases`` are the fractions that had to be clipped (0.0 normally).
    """

    name: str
    neuron: str
    weight: np.ndarray  # int64 (C_out, C_in / groups, kH, kW) in [-128, 127]
    bias: np.ndarray    # int64 (C_out,) in [-4096, 4095]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    exponent: int
    v_decay: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    tau: float
    clipped_weights: float = 0.0
    clipped_biases: float = 0.0
    sources: tuple[str, ...] = field(default=())
    i_decay: int = DECAY_UNITY

    @property
    def vth_mant(self) -> int:
        return 1 << self.exponent

    def summary(self) -> dict:
        """JSON-able description (no arrays)."""
        return {"name": self.name, "neuron": self.neuron, "sources": list(self.sources),
                "kernel": list(self.weight.shape[2:]), "stride": list(self.stride), "padding": list(self.padding),
                "groups": self.groups, "in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
                "tau": self.tau, "weight_exponent": self.exponent, "vThMant": self.vth_mant,
                "vDecay": self.v_decay, "iDecay": self.i_decay,
                "weight_range": [int(self.weight.min()), int(self.weight.max())],
                "bias_range": [int(self.bias.min()), int(self.bias.max())],
                "clipped_weight_fraction": self.clipped_weights, "clipped_bias_fraction": self.clipped_biases}


def _fits(w: np.ndarray, b: np.ndarray, e: int) -> bool:
    wq, bq = np.round(w * 2.0 ** e), np.round(b * 2.0 ** e)
    return bool(wq.min(initial=0) >= WEIGHT_MIN and wq.max(initial=0) <= WEIGHT_MAX
                and bq.min(initial=0) >= BIAS_MIN and bq.max(initial=0) <= BIAS_MAX)


def choose_exponent(w_eff: np.ndarray, b_eff: np.ndarray) -> int:
    """The largest e in [0, 16] with every ``round(w 2^e)`` in [-128, 127] and ``round(b 2^e)`` in 13 bits (0 if none)."""
    for e in range(MAX_EXPONENT, -1, -1):
        if _fits(w_eff, b_eff, e):
            return e
    return 0


def quantize_layer(layer: FloatLayer, exponent: int | None = None) -> LoihiLayer:
    """Quantise ``layer`` for Loihi (see the module docstring). Clipping -> :class:`LoihiOverflowWarning`."""
    k = 1.0 / layer.tau
    w_eff = np.asarray(layer.weight, dtype=np.float64) * (k / layer.v_threshold)
    b_eff = np.asarray(layer.bias, dtype=np.float64) * (k / layer.v_threshold)
    if not (np.isfinite(w_eff).all() and np.isfinite(b_eff).all()):
        from svformer_deploy.errors import ExportError

        raise ExportError(f"{layer.name}: non-finite weights or bias after folding; check the checkpoint")
    e = choose_exponent(w_eff, b_eff) if exponent is None else int(exponent)
    if not 0 <= e <= MAX_EXPONENT:
        from svformer_deploy.errors import ExportError

        raise ExportError(f"weight exponent {e} outside [0, {MAX_EXPONENT}] (vThMant = 2^e is a 17-bit value)")
    wq = np.round(w_eff * 2.0 ** e)
    bq = np.round(b_eff * 2.0 ** e)
    w_clip = float(np.mean((wq < WEIGHT_MIN) | (wq > WEIGHT_MAX))) if wq.size else 0.0
    b_clip = float(np.mean((bq < BIAS_MIN) | (bq > BIAS_MAX))) if bq.size else 0.0
    if w_clip > 0 or b_clip > 0:
        warnings.warn(f"{layer.name} -> {layer.neuron}: after scaling by 2^{e} / (tau V_th), "
                      f"{w_clip:.4%} of weights overflow the 8-bit mantissa and {b_clip:.4%} of biases the 13-bit "
                      "mantissa; they were clipped (choose a smaller exponent or retrain with weight decay)",
                      LoihiOverflowWarning, stacklevel=2)
    v_decay = int(min(max(round(DECAY_UNITY * k), 0), DECAY_UNITY - 1))
    return LoihiLayer(
        name=layer.name, neuron=layer.neuron,
        weight=np.clip(wq, WEIGHT_MIN, WEIGHT_MAX).astype(np.int64),
        bias=np.clip(bq, BIAS_MIN, BIAS_MAX).astype(np.int64),
        stride=tuple(layer.stride), padding=tuple(layer.padding), groups=int(layer.groups), exponent=e,
        v_decay=v_decay, in_shape=tuple(layer.in_shape), out_shape=layer.out_shape, tau=float(layer.tau),
        clipped_weights=w_clip, clipped_biases=b_clip, sources=tuple(layer.sources))
