"""Connectivity of one spike term, as counts: what a core needs to hold a block of the layer, and what one
source neuron sends.

A term is a convolution ``(C_in, H_in, W_in) -> (C, H, W)`` with integer weights ``w[o, i, ky, kx]``; a
*connection* (synapse) is a non-zero weight between an in-bounds source neuron ``(i, y s - p + ky, x s - p + kx)``
and the neuron ``(o, y, x)``. Counting rules, all exact unless marked:

* synapses of the term: ``sum_{o, ky, kx} nnz(o, ky, kx) * rows(ky) * cols(kx)``, where ``nnz`` counts the source
  channels with a non-zero weight at that tap and ``rows(ky)`` the output rows whose tap ``ky`` is in bounds;
* fan-in of neuron ``(o, y, x)``: its in-bounds connections; the layer's fan-in is the largest;
* fan-out of source neuron ``(i, y, x)``: connections it makes into the layer (a transposed convolution of the
  non-zero pattern); the term's fan-out is the largest;
* input axons of a block (distinct source neurons that connect into it): the source channels with any non-zero
  weight into the block's channels x the source rows x the source columns its receptive field covers
  (**an upper bound**, exact when every tap of the kernel carries some non-zero weight, as in trained dense kernels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TermGeometry", "ranges", "term_geometry"]


def ranges(n: int, size: int) -> list[tuple[int, int]]:
    """``[0, n)`` cut into consecutive ranges of ``size`` (the last one shorter)."""
    return [(a, min(n, a + size)) for a in range(0, n, size)]


@dataclass(frozen=True)
class TermGeometry:
    source: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: int
    stride: int
    padding: int
    nnz_taps: np.ndarray = field(repr=False)   # (C, k, k) int64: source channels with w != 0 per (o, ky, kx)
    chan_mask: np.ndarray = field(repr=False)  # (C, C_in) bool: any tap non-zero
    mask: np.ndarray = field(repr=False)       # (C, C_in, k, k) bool

    # --- rows and columns -------------------------------------------------------------------------------------
    def in_range(self, lo: int, hi: int, axis: int) -> tuple[int, int]:
        """Source rows (axis 1) or columns (axis 2) the output range [lo, hi) reads, clipped to the map."""
        n = self.in_shape[axis]
        a = lo * self.stride - self.padding
        b = (hi - 1) * self.stride - self.padding + self.kernel
        return max(a, 0), min(b, n)

    def valid_taps(self, lo: int, hi: int, axis: int) -> np.ndarray:
        """(k,) number of outputs in [lo, hi) whose tap ky (or kx) is in bounds."""
        n = self.in_shape[axis]
        out = np.zeros(self.kernel, dtype=np.int64)
        pos = np.arange(lo, hi) * self.stride - self.padding
        for k in range(self.kernel):
            out[k] = int(((pos + k >= 0) & (pos + k < n)).sum())
        return out

    # --- whole-layer counts -----------------------------------------------------------------------------------
    def synapses(self) -> int:
        _, H, W = self.out_shape
        vr, vc = self.valid_taps(0, H, 1), self.valid_taps(0, W, 2)
        return int(np.einsum("oab,a,b->", self.nnz_taps, vr, vc))

    def fan_in(self) -> np.ndarray:
        """(C, H, W) connections into each neuron."""
        _, H, W = self.out_shape
        rows = np.stack([self.valid_taps(y, y + 1, 1) for y in range(H)])  # (H, k)
        cols = np.stack([self.valid_taps(x, x + 1, 2) for x in range(W)])  # (W, k)
        return np.einsum("oab,ya,xb->oyx", self.nnz_taps, rows, cols)

    def fan_out(self) -> np.ndarray:
        """(C_in, H_in, W_in) connections out of each source neuron into this term's layer."""
        C, H, W = self.out_shape
        ci, hi, wi = self.in_shape
        ones = torch.ones((1, C, H, W), dtype=torch.float64)
        m = torch.as_tensor(self.mask, dtype=torch.float64)
        full = F.conv_transpose2d(ones, m, stride=self.stride)  # source positions shifted by padding
        p = self.padding
        out = full[0, :, p:p + hi, p:p + wi]
        if out.shape[1] < hi or out.shape[2] < wi:  # output_padding region: sources no output reads
            pad = (0, wi - out.shape[2], 0, hi - out.shape[1])
            out = F.pad(out, pad)
        return out.round().to(torch.int64).numpy()


def term_geometry(source: str, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int],
                  weight: np.ndarray, stride: int, padding: int) -> TermGeometry:
    mask = weight != 0
    return TermGeometry(source, tuple(in_shape), tuple(out_shape), int(weight.shape[-1]), int(stride), int(padding),
                        mask.sum(axis=1).astype(np.int64), mask.any(axis=(2, 3)), mask)
