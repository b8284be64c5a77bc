"""Layers into core-sized blocks.

A block of a layer ``(C, H, W)`` is a channel range x a row range x a column range; a layer is cut into a regular
grid of blocks of one size ``(c, h, w)`` (the last ones along each axis shorter). For every candidate size
(``c`` in ``ceil(C / n)``, square-ish tiles ``h = ceil(H / n)``, ``w = ceil(W / n)``) the largest demand any block
makes on each per-core limit is computed (:mod:`svformer_deploy.chip.geometry`), and the size with the fewest
blocks that meets every limit is chosen (ties: fewer input axons in all, then larger channel ranges):

* neurons: ``c h w`` <= neurons per core;
* input axons: ``sum_terms channels x source rows x source columns`` of the receptive field <= input axons per core;
* synaptic memory: connections into the block x bits per stored synapse (the weight bits: every synapse stored
  with its weight, no weight sharing between neurons; TrueNorth: one crossbar bit) <= synaptic memory per core;
* output axons: one per (neuron, destination core) pair, from the consumers' blocks (so layers are split from the
  last to the first) <= output axons per core.

The layer's cores under each limit alone are the same search with only that limit; the one with the most cores is
the **binding** limit (``combined`` when the limits together need more cores than any one alone).
A limit that even a one-neuron block exceeds cannot be met by splitting: it is reported as a violation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from svformer_deploy.chip.arch import ChipSpec
from svformer_deploy.chip.geometry import TermGeometry, ranges

__all__ = ["LIMIT_NAMES", "Block", "DestCounts", "LayerDemand", "Split", "candidate_sizes", "split_layer"]

LIMIT_NAMES = ("neurons", "axons_in", "memory", "axons_out")


def candidate_sizes(n: int) -> list[int]:
    """Distinct ``ceil(n / k)`` for k = 1..n, largest first."""
    return sorted({math.ceil(n / k) for k in range(1, n + 1)}, reverse=True)


@dataclass(frozen=True)
class Block:
    layer: str
    index: int
    channels: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def neurons(self) -> int:
        return ((self.channels[1] - self.channels[0]) * (self.rows[1] - self.rows[0])
                * (self.cols[1] - self.cols[0]))


@dataclass(frozen=True)
class Split:
    """The chosen block size of a layer and what it needs from each core (the largest block's demands)."""

    layer: str
    size: tuple[int, int, int]
    grid: tuple[int, int, int]
    demand: dict[str, int]
    cores_by_limit: dict[str, int | None]
    binding: str

    @property
    def blocks(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def block_list(self, shape: tuple[int, int, int]) -> list[Block]:
        C, H, W = shape
        c, h, w = self.size
        out = []
        for cr in ranges(C, c):
            for rr in ranges(H, h):
                for wr in ranges(W, w):
                    out.append(Block(self.layer, len(out), cr, rr, wr))
        return out


@dataclass(frozen=True)
class DestCounts:
    """For a source layer, how many destination blocks each neuron's channel / row / column reaches, per
    consumer term: the output axons of a source block are ``sum_terms (sum ch) (sum rows) (sum cols)``."""

    per_term: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]

    @staticmethod
    def of(consumers: list[tuple[TermGeometry, Split]]) -> DestCounts:
        out = []
        for g, split in consumers:
            C, H, W = g.out_shape
            c, h, w = split.size
            ch = np.zeros(g.in_shape[0], dtype=np.int64)
            for a, b in ranges(C, c):
                ch += g.chan_mask[a:b].any(axis=0)
            rows = np.zeros(g.in_shape[1], dtype=np.int64)
            for a, b in ranges(H, h):
                lo, hi = g.in_range(a, b, 1)
                rows[lo:hi] += 1
            cols = np.zeros(g.in_shape[2], dtype=np.int64)
            for a, b in ranges(W, w):
                lo, hi = g.in_range(a, b, 2)
                cols[lo:hi] += 1
            out.append((ch, rows, cols))
        return DestCounts(tuple(out))

    def per_neuron_max(self) -> int:
        """Destination cores of the neuron that reaches the most."""
        return int(sum(ch.max(initial=0) * r.max(initial=0) * c.max(initial=0) for ch, r, c in self.per_term))


def _window_max(x: np.ndarray, size: int) -> int:
    """Largest sum of ``x`` over the consecutive windows [0, size), [size, 2 size), ..."""
    return max((int(x[a:b].sum()) for a, b in ranges(len(x), size)), default=0)


class LayerDemand:
    """What blocks of one layer need, as functions of the block size (the largest block's demand)."""

    def __init__(self, shape: tuple[int, int, int], terms: tuple[TermGeometry, ...], weight_bits: int,
                 dest: DestCounts | None) -> None:
        self.shape, self.terms, self.weight_bits, self.dest = tuple(shape), tuple(terms), int(weight_bits), dest
        self._cum = [np.concatenate([np.zeros((1, *g.chan_mask.shape[1:]), np.int64),
                                     np.cumsum(g.chan_mask, 0, dtype=np.int64)]) for g in terms]
        self._taps = [np.concatenate([np.zeros((1, *g.nnz_taps.shape[1:]), np.int64), np.cumsum(g.nnz_taps, 0)])
                      for g in terms]
        self._cache: dict[tuple, object] = {}

    def _windows(self, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        a = np.arange(0, n, size)
        return a, np.minimum(a + size, n)

    def _channels(self, c: int) -> list[tuple[int, np.ndarray]]:
        """Per term: (largest source-channel count of a channel window, largest tap sums (k, k))."""
        key = ("c", c)
        if key not in self._cache:
            a, b = self._windows(self.shape[0], c)
            out = []
            for cum, taps in zip(self._cum, self._taps):
                nch = int(((cum[b] - cum[a]) > 0).sum(axis=1).max())
                out.append((nch, taps[b] - taps[a]))
            self._cache[key] = out
        return self._cache[key]  # type: ignore[return-value]

    def _spatial(self, size: int, axis: int) -> list[tuple[int, np.ndarray]]:
        """Per term: (largest source extent of a window, largest valid-tap counts (k,))."""
        key = ("s", axis, size)
        if key not in self._cache:
            out = []
            for g in self.terms:
                spans = ranges(self.shape[axis], size)
                ext = max(hi - lo for lo, hi in (g.in_range(a, b, axis) for a, b in spans))
                taps = np.max([g.valid_taps(a, b, axis) for a, b in spans], axis=0)
                out.append((int(ext), taps))
            self._cache[key] = out
        return self._cache[key]  # type: ignore[return-value]

    def _dest(self, size: int, which: int) -> list[int]:
        key = ("d", which, size)
        if key not in self._cache:
            self._cache[key] = [_window_max(t[which], size) for t in self.dest.per_term] if self.dest else []
        return self._cache[key]  # type: ignore[return-value]

    def demand(self, size: tuple[int, int, int]) -> dict[str, int]:
        C, H, W = self.shape
        c, h, w = size
        d = {"neurons": min(c, C) * min(h, H) * min(w, W), "axons_in": 0, "memory": 0, "axons_out": 0}
        conn = 0
        for (nch, taps), (rows, vr), (cols, vc) in zip(self._channels(c), self._spatial(h, 1), self._spatial(w, 2)):
            d["axons_in"] += nch * rows * cols
            conn += int(np.einsum("jab,a,b->j", taps, vr, vc).max())
        d["memory"] = conn * self.weight_bits
        if self.dest is not None:
            d["axons_out"] = int(sum(x * y * z for x, y, z in zip(self._dest(c, 0), self._dest(h, 1),
                                                                    self._dest(w, 2))))
        return d


def _limits(chip: ChipSpec) -> dict[str, int | None]:
    lim = chip.limits
    return {"neurons": lim.neurons, "axons_in": lim.axons_in, "memory": lim.synapse_memory_bits,
            "axons_out": lim.axons_out}


def _search(ld: LayerDemand, limits: dict[str, int | None], cands: list[tuple[int, int, int]],
            demands: dict[tuple[int, int, int], dict[str, int]]) -> tuple[int, int, int] | None:
    C, H, W = ld.shape
    best = None
    for size in cands:
        d = demands[size]
        if all(v is None or d[k] <= v for k, v in limits.items()):
            n = math.ceil(C / size[0]) * math.ceil(H / size[1]) * math.ceil(W / size[2])
            key = (n, d["axons_in"] * n, -size[0])
            if best is None or key < best[0]:
                best = (key, size)
    return None if best is None else best[1]


def split_layer(name: str, ld: LayerDemand, chip: ChipSpec) -> Split | None:
    """The block size of layer ``name`` (see the module docstring); None when no size meets every limit."""
    C, H, W = ld.shape
    limits = _limits(chip)
    spatial = [(h, w) for h in candidate_sizes(H) for w in candidate_sizes(W)
               if abs(math.ceil(H / h) - math.ceil(W / w)) <= 1 or h == H or w == W]
    every = [(c, h, w) for c in candidate_sizes(C) for h, w in spatial]
    nmax = limits["neurons"]
    cands = every if nmax is None else [s for s in every if min(s[0], C) * min(s[1], H) * min(s[2], W) <= nmax]
    demands: dict[tuple[int, int, int], dict[str, int]] = {}

    def demand_of(sizes: list[tuple[int, int, int]]) -> dict[tuple[int, int, int], dict[str, int]]:
        for sz in sizes:
            if sz not in demands:
                demands[sz] = ld.demand(sz)
        return demands

    size = _search(ld, limits, cands, demand_of(cands))
    if size is None:
        return None
    by_limit: dict[str, int | None] = {}
    for k in LIMIT_NAMES:  # each limit alone: every candidate size, not only those within the neuron limit
        if limits[k] is None:
            by_limit[k] = None
            continue
        pool = cands if k == "neurons" else every
        alone = _search(ld, {k: limits[k]}, pool, demand_of(pool))
        by_limit[k] = None if alone is None else (math.ceil(C / alone[0]) * math.ceil(H / alone[1])
                                                 * math.ceil(W / alone[2]))
    grid = (math.ceil(C / size[0]), math.ceil(H / size[1]), math.ceil(W / size[2]))
    n = grid[0] * grid[1] * grid[2]
    known = {k: v for k, v in by_limit.items() if v is not None}
    top = max(known.values()) if known else 1
    binding = next(k for k in LIMIT_NAMES if known.get(k) == top) if n == top else "combined"
    return Split(name, size, grid, demands[size], by_limit, binding)
