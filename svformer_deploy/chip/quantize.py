"""Fixed-point form of a chip layer, in the chip's number format (Loihi's by default, as in Lava's bit-accurate
models and svformer-deploy's Lava export, :mod:`svformer_deploy.exporters.lava.quantize`).

With ``k = 1 / tau`` and every input of the layer scaled by ``k / V_th`` (PLIF's decay_input, threshold 1.0)::

    w_int = round(k W / V_th * 2^e)        in the signed weight_bits range   (one exponent e for all terms)
    b_int = round(k beta / V_th * 2^e)      in the signed bias_bits range      (one bias per compartment)
    vth   = 2^e                             (threshold_bits)
    dv    = round(2^decay_bits * k)         voltage decay
    h_int = round(k I_host / V_th * 2^e)    host currents, each timestep: a bias mantissa << a bias exponent
                                            (:func:`svformer_deploy.chip.run.host_currents`)

``e`` is the largest exponent in [0, weight_exponent_max] at which no weight and no bias is clipped. The
dynamics (integers, rounding toward zero, ``rtz(x) = sign(x) (|x| >> decay_bits)``)::

    v' = rtz(v * (2^decay_bits - dv)) + ((sum_terms w_int * s + b_int + h_int) << 6)
    s  = v' > (vth << 6);   v = 0 where s else v'

is Lava's ``PyLifModelBitAcc`` with ``iDecay = 4096`` (no current state) and SANA-FE's ``leaky_integrate_fire``
with ``leak_decay = 1 - dv / 2^decay_bits``, ``threshold = vth``, bias ``b_int + h_int`` and weights ``w_int``:
SANA-FE keeps the potential in units of 1/64 (``v / 64``), truncates it toward zero after the leak and fires on
``>``, so both compute the same integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from svformer_deploy.chip.arch import NumberFormat
from svformer_deploy.chip.network import ChipLayer

__all__ = ["FixedLayer", "quantize_chip_layer"]


@dataclass(frozen=True)
class FixedLayer:
    """The integers of one chip layer: a weight per term, a bias per compartment, threshold and decay."""

    name: str
    exponent: int
    weights: tuple[np.ndarray, ...] = field(repr=False)  # int64, one per term, (C, C_in, k, k)
    bias: np.ndarray = field(repr=False)                 # int64 (C, H, W)
    vth: int
    v_decay: int
    host_scale: float
    """Multiplier from a host current (model units) to the integer current: ``k / V_th * 2^e``."""
    clipped_weights: int
    clipped_biases: int
    zeroed_weights: int
    """Non-zero float weights that round to 0 at the chosen exponent (lost connections)."""

    @property
    def weight_bits_used(self) -> int:
        """Signed bits the weights need: ``1 + max(bit_length(max w), bit_length(-min w - 1))`` (127 and -128: 8)."""
        hi = max((int(w.max(initial=0)) for w in self.weights), default=0)
        lo = min((int(w.min(initial=0)) for w in self.weights), default=0)
        return 1 + max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0)

    @property
    def distinct_weights(self) -> int:
        """Distinct non-zero integer weight values of the layer, all terms together."""
        vals = [np.unique(w[w != 0]) for w in self.weights]
        return int(np.unique(np.concatenate(vals)).size) if vals else 0

    def distinct_weights_per_neuron(self) -> int:
        """The largest number of distinct non-zero weights one output channel (hence one neuron) uses."""
        best = 0
        C = self.bias.shape[0]
        for c in range(C):
            vals = np.concatenate([w[c][w[c] != 0] for w in self.weights]) if self.weights else np.zeros(0)
            best = max(best, int(np.unique(vals).size))
        return best


def _fits(w_ext: tuple[float, float], b_ext: tuple[float, float], e: int, fmt: NumberFormat) -> bool:
    """Whether the extremes (rounding is monotonic, so they decide) of weights and biases fit at 2^e."""
    lo, hi = fmt.weight_range
    blo, bhi = fmt.bias_range
    s = 2.0 ** e
    return bool(np.round(w_ext[0] * s) >= lo and np.round(w_ext[1] * s) <= hi
                and np.round(b_ext[0] * s) >= blo and np.round(b_ext[1] * s) <= bhi)


def quantize_chip_layer(layer: ChipLayer, fmt: NumberFormat, exponent: int | None = None) -> FixedLayer:
    """Quantise ``layer`` in ``fmt`` (see the module docstring); clipped and zeroed values are counted."""
    k = 1.0 / layer.tau
    scale = k / layer.v_threshold
    ws = [t.weight * scale for t in layer.terms]
    b = layer.bias * scale
    if exponent is None:
        exponent = 0
        w_ext = (min((float(w.min()) for w in ws if w.size), default=0.0),
                 max((float(w.max()) for w in ws if w.size), default=0.0))
        b_ext = (float(b.min(initial=0)), float(b.max(initial=0)))
        for e in range(fmt.weight_exponent_max, -1, -1):
            if _fits(w_ext, b_ext, e, fmt):
                exponent = e
                break
    s = 2.0 ** exponent
    lo, hi = fmt.weight_range
    blo, bhi = fmt.bias_range
    qs = [np.round(w * s) for w in ws]
    qb = np.round(b * s)
    clipped_w = int(sum(int(((q < lo) | (q > hi)).sum()) for q in qs))
    zeroed = int(sum(int(((q == 0) & (w != 0)).sum()) for q, w in zip(qs, ws)))
    clipped_b = int(((qb < blo) | (qb > bhi)).sum())
    unity = 1 << fmt.decay_bits if fmt.decay_bits else 1
    v_decay = int(min(max(round(unity * k), 0), unity - 1)) if fmt.decay_bits else 0
    return FixedLayer(layer.name, int(exponent), tuple(np.clip(q, lo, hi).astype(np.int64) for q in qs),
                      np.clip(qb, blo, bhi).astype(np.int64), 1 << int(exponent), v_decay, scale * s,
                      clipped_w, clipped_b, zeroed)
