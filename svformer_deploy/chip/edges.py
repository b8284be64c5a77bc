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
    """The edges of one (layer, term): for each, the source neurons whose spikes it carries. *Rectangle* edges
    (``pair_index >= 0``) hold the source channels whose kernel taps into the destination block are all non-zero
    somewhere, over the row and column ranges of the receptive field; *mask* edges (``pair_index == -1``, at the
    end) hold channels with a partial tap pattern (weights that quantised to zero) over their exact input
    region, ``masks[k] = (channels, (H_in, W_in) bool)`` for the k-th of them. A source neuron is in at most one
    edge per destination block, so the counts of the edges add up exactly."""

    layer: str
    source_group: str
    src_blocks: np.ndarray
    dst_blocks: np.ndarray
    chan_sel: list[np.ndarray]       # per edge-channel-pair (j, i): source channels counted
    pair_index: np.ndarray           # per edge: index into chan_sel
    rows: np.ndarray                 # per edge: (lo, hi)
    cols: np.ndarray                 # per edge: (lo, hi)
    weight: np.ndarray               # per edge: connected neurons (static)
    masks: tuple[tuple[np.ndarray, np.ndarray], ...] = ()


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
            partial: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (j, i, channels, tap pattern)
            for j, (a, b) in enumerate(d_ch):
                taps = g.mask[a:b].any(axis=0)  # (C_in, k, k)
                full = taps.all(axis=(1, 2))
                anyc = taps.any(axis=(1, 2))
                for i, (sa, sb) in enumerate(s_ch):
                    chans = np.flatnonzero(full[sa:sb]) + sa
                    M[j, i] = len(chans)
                    if len(chans):
                        index[(j, i)] = len(sel)
                        sel.append(chans)
                    part = np.flatnonzero(anyc[sa:sb] & ~full[sa:sb]) + sa
                    if len(part):
                        pats, inv = np.unique(taps[part].reshape(len(part), -1), axis=0, return_inverse=True)
                        for k_, pat in enumerate(pats):
                            partial.append((j, i, part[inv.ravel() == k_], pat.reshape(g.kernel, g.kernel)))

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
            src = group_blocks[sg].start + ((I * snh + Q) * snw + U).ravel()
            dst = group_blocks[layer.name].start + ((J * nh + R) * nw + V).ravel()
            rows, cols = RO[R.ravel(), Q.ravel()], CO[V.ravel(), U.ravel()]
            pidx = P.ravel()
            masks, m_src, m_dst, m_w = [], [], [], []
            for j, i, chans, pat in partial:
                sa, sb = s_ch[i]
                for r, (a, b) in enumerate(ranges(H, h)):
                    for v, (a2, b2) in enumerate(ranges(W, w)):
                        region = _dilation(g, pat, (a, b), (a2, b2))
                        for q, (ra, rb) in enumerate(ranges(Hi, hi)):
                            for u, (ca, cb) in enumerate(ranges(Wi, wi)):
                                cut = np.zeros_like(region)
                                cut[ra:rb, ca:cb] = region[ra:rb, ca:cb]
                                n = int(cut.sum())
                                if n:
                                    masks.append((chans, cut))
                                    m_src.append(group_blocks[sg].start + (i * snh + q) * snw + u)
                                    m_dst.append(group_blocks[layer.name].start + (j * nh + r) * nw + v)
                                    m_w.append(n * len(chans))
            if masks:
                src = np.concatenate([src, np.asarray(m_src, dtype=np.int64)])
                dst = np.concatenate([dst, np.asarray(m_dst, dtype=np.int64)])
                weight = np.concatenate([weight, np.asarray(m_w, dtype=weight.dtype)])
                rows = np.concatenate([rows, np.zeros((len(masks), 2), dtype=rows.dtype)])
                cols = np.concatenate([cols, np.zeros((len(masks), 2), dtype=cols.dtype)])
                pidx = np.concatenate([pidx, np.full(len(masks), -1, dtype=np.int64)])
            out.append(EdgeTerm(layer.name, sg, src, dst, sel, pidx, rows, cols, weight, tuple(masks)))
    return out


def _dilation(g: TermGeometry, pattern: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """(H_in, W_in) bool: source positions some output of the tile reads through a non-zero tap of ``pattern``."""
    import torch
    import torch.nn.functional as F

    _, H, W = g.out_shape
    _, hi, wi = g.in_shape
    tile = torch.zeros((1, 1, H, W), dtype=torch.float64)
    tile[..., rows[0]:rows[1], cols[0]:cols[1]] = 1.0
    full = F.conv_transpose2d(tile, torch.as_tensor(pattern, dtype=torch.float64)[None, None], stride=g.stride)[0, 0]
    p = g.padding
    out = np.zeros((hi, wi), dtype=bool)
    crop = full[p:p + hi, p:p + wi].numpy() > 0.5
    out[:crop.shape[0], :crop.shape[1]] = crop
    return out


def edge_arrays(terms: list[EdgeTerm]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source block, destination block, static weight) of every edge, concatenated."""
    if not terms:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return (np.concatenate([t.src_blocks for t in terms]), np.concatenate([t.dst_blocks for t in terms]),
            np.concatenate([t.weight for t in terms]).astype(np.float64))
