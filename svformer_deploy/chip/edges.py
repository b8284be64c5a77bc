"""The block-to-block connections of a mapped network: which source blocks send messages to which destination
blocks, over which source neurons (a channel subset x a row range x a column range of the source group).

For a destination block (channels ``[a, b)``, a tile of rows and columns) and a spike term, the source neurons that
connect into it are the source channels with a non-zero weight into ``[a, b)`` x the source rows and columns its
receptive field covers (the rectangle rule of :mod:`svformer_deploy.chip.geometry`); the part of that region
inside a source block is the edge (source block -> destination block), and its size is the edge's static weight:
the messages it carries when every source neuron fires once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svformer_deploy.chip.geometry import TermGeometry, ranges
from svformer_deploy.chip.network import ChipNetwork
from svformer_deploy.chip.split import Split

__all__ = ["INPUT_PREFIX", "EdgeTerm", "edge_arrays", "edge_terms"]

INPUT_PREFIX = "input:"
"""Name prefix of the input groups that bring a host neuron's spikes onto the chip."""


@dataclass(frozen=True)
class EdgeTerm:
    """The edges of one (layer, term) pair in :func:`~svformer_deploy.chip.mapping._block_edges` order, with the
    source regions to count spikes over: channel subsets and row/column ranges."""

    layer: str
    source_group: str
    src_blocks: np.ndarray
    dst_blocks: np.ndarray
    chan_sel: list[np.ndarray]       # per edge-channel-pair (j, i): source channels counted
    pair_index: np.ndarray           # per edge: index into chan_sel
    rows: np.ndarray                 # per edge: (lo, hi)
    cols: np.ndarray                 # per edge: (lo, hi)
    weight: np.ndarray               # per edge: connected neurons (static)


def edge_terms(network: ChipNetwork, geometry: dict[str, list[TermGeometry]], splits: dict[str, Split],
               shapes: dict[str, tuple[int, int, int]], group_blocks: dict[str, range]) -> list[EdgeTerm]:
    """Per (chip layer, spike term): the block pairs it connects and the source regions they count."""
    out = []
    for layer in network.layers:
        split = splits[layer.name]
        C, H, W = layer.shape
        c, h, w = split.size
        for t, g in zip(layer.terms, geometry[layer.name]):
            sg = t.source if t.on_chip else INPUT_PREFIX + t.source
            ss = splits[sg]
            Ci, Hi, Wi = shapes[sg]
            ci, hi, wi = ss.size
            s_ch, d_ch = ranges(Ci, ci), ranges(C, c)
            sel, M = [], np.zeros((len(d_ch), len(s_ch)), dtype=np.int64)
            index = {}
            for j, (a, b) in enumerate(d_ch):
                anyc = g.chan_mask[a:b].any(axis=0)
                for i, (sa, sb) in enumerate(s_ch):
                    chans = np.flatnonzero(anyc[sa:sb]) + sa
                    M[j, i] = len(chans)
                    if len(chans):
                        index[(j, i)] = len(sel)
                        sel.append(chans)

            def overlaps(n_out: int, size_out: int, n_in: int, size_in: int, axis: int,
                         g: TermGeometry = g) -> np.ndarray:
                o = np.zeros((len(ranges(n_out, size_out)), len(ranges(n_in, size_in)), 2), dtype=np.int64)
                for r, (a, b) in enumerate(ranges(n_out, size_out)):
                    lo, hi_ = g.in_range(a, b, axis)
                    for q, (sa, sb) in enumerate(ranges(n_in, size_in)):
                        o[r, q] = (max(lo, sa), min(hi_, sb))
                return o
            RO, CO = overlaps(H, h, Hi, hi, 1), overlaps(W, w, Wi, wi, 2)
            rlen, clen = np.maximum(RO[..., 1] - RO[..., 0], 0), np.maximum(CO[..., 1] - CO[..., 0], 0)
            jm, im = np.nonzero(M)
            rr, qq = np.nonzero(rlen)
            vv, uu = np.nonzero(clen)
            J, R, V = np.meshgrid(jm, rr, vv, indexing="ij")
            I, Q, U = np.meshgrid(im, qq, uu, indexing="ij")
            P = np.meshgrid(np.array([index[(a, b)] for a, b in zip(jm, im)], dtype=np.int64), rr, vv,
                            indexing="ij")[0]
            nh, nw = split.grid[1], split.grid[2]
            snh, snw = ss.grid[1], ss.grid[2]
            weight = (M[jm, im][:, None, None] * rlen[rr, qq][None, :, None] * clen[vv, uu][None, None, :]).ravel()
            out.append(EdgeTerm(layer.name, sg,
                                 group_blocks[sg].start + ((I * snh + Q) * snw + U).ravel(),
                                 group_blocks[layer.name].start + ((J * nh + R) * nw + V).ravel(),
                                 sel, P.ravel(), RO[R.ravel(), Q.ravel()], CO[V.ravel(), U.ravel()], weight))
    return out


def edge_arrays(terms: list[EdgeTerm]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source block, destination block, static weight) of every edge, concatenated."""
    if not terms:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return (np.concatenate([t.src_blocks for t in terms]), np.concatenate([t.dst_blocks for t in terms]),
            np.concatenate([t.weight for t in terms]).astype(np.float64))
