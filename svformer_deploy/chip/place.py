"""Blocks onto cores: which core of which chip holds each block.

The fabric is ``n`` chips side by side in a ``chips_x x chips_y`` grid that forms one mesh of tiles (Loihi's mesh
extends off-chip); a core's position is its tile's global ``(X, Y)``. A message from a block on tile ``a`` to a
block on tile ``b`` takes ``|Xa - Xb| + |Ya - Yb|`` hops (cores of one tile: none).

**Objective** (minimised): the expected mesh hops per timestep,
``sum_{a -> b} m_ab * hops(a, b)``, where ``m_ab`` is the number of neurons of block ``a`` that connect into block
``b`` (each sends one message to ``b``'s core when it fires) times the source layer's firing rate (1 when no rate is
known: then it is the hop count of one spike from every neuron).

**Algorithm** (deterministic): blocks are taken in data-flow order (the layers in plan order, a layer's blocks in
channel, row, column order). Each block's target is the traffic-weighted centroid of the blocks already placed that feed it;
a layer takes the free cores nearest the centroid of its blocks' targets (in hops, then in snake order), and its
blocks and those cores are matched in the same boustrophedon ("snake") order of targets and positions, so that
neighbouring targets get neighbouring cores; a layer fed by nothing placed takes the next free cores along the
snake walk of the mesh, which keeps consecutive blocks adjacent. The row-major fill (the
same order onto cores in row-major order) and the snake fill are built as well, and the placement with the lowest
objective is kept, so the result is never worse than a row-major placement; a random placement is reported beside
it for scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from svformer_deploy.chip.arch import ChipSpec

__all__ = ["Fabric", "Placement", "place_blocks", "placement_cost", "random_placement", "row_major", "snake"]


@dataclass(frozen=True)
class Fabric:
    """``chips`` copies of ``chip`` in a ``chips_x x chips_y`` grid, as one mesh of ``width x height`` tiles."""

    chip: ChipSpec
    chips: int
    chips_x: int
    chips_y: int

    @staticmethod
    def for_cores(chip: ChipSpec, cores: int) -> Fabric:
        n = max(1, math.ceil(cores / chip.cores))
        cx = math.ceil(math.sqrt(n))
        return Fabric(chip, n, cx, math.ceil(n / cx))

    @property
    def width(self) -> int:
        return self.chips_x * self.chip.mesh_width

    @property
    def height(self) -> int:
        return self.chips_y * self.chip.mesh_height

    @property
    def cores(self) -> int:
        return self.chips * self.chip.cores

    def locate(self, core: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Global core index -> (chip, tile within the chip, core within the tile, X, Y)."""
        core = np.asarray(core)
        per_chip = self.chip.cores
        chip = core // per_chip
        rest = core % per_chip
        tile = rest // self.chip.cores_per_tile
        sub = rest % self.chip.cores_per_tile
        x, y = tile // self.chip.mesh_height, tile % self.chip.mesh_height
        X = (chip % self.chips_x) * self.chip.mesh_width + x
        Y = (chip // self.chips_x) * self.chip.mesh_height + y
        return chip, tile, sub, X, Y

    def core_at(self, X: int, Y: int, sub: int) -> int:
        """Global core index of core ``sub`` of the tile at global (X, Y)."""
        cx, x = divmod(X, self.chip.mesh_width)
        cy, y = divmod(Y, self.chip.mesh_height)
        chip = cy * self.chips_x + cx
        tile = x * self.chip.mesh_height + y
        return chip * self.chip.cores + tile * self.chip.cores_per_tile + sub

    def usable(self, X: int, Y: int) -> bool:
        """Whether global tile (X, Y) belongs to one of the ``chips`` chips (the grid's last row may be short)."""
        return (Y // self.chip.mesh_height) * self.chips_x + X // self.chip.mesh_width < self.chips


@dataclass(frozen=True)
class Placement:
    """``core[i]``: the global core of block ``i``; ``method``: the construction that was kept; ``costs``: the
    objective of every construction tried (and of a random placement)."""

    core: np.ndarray
    method: str
    costs: dict[str, float]


def placement_cost(fabric: Fabric, core: np.ndarray, edges: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """The objective: ``sum_e w_e * hops(core[src_e], core[dst_e])``."""
    src, dst, w = edges
    if not len(src):
        return 0.0
    _, _, _, xa, ya = fabric.locate(core[src])
    _, _, _, xb, yb = fabric.locate(core[dst])
    return float(np.sum(w * (np.abs(xa - xb) + np.abs(ya - yb))))


def _order_cores(fabric: Fabric, walk: str) -> np.ndarray:
    out = []
    for Y in range(fabric.height):
        xs = range(fabric.width)
        if walk == "snake" and Y % 2:
            xs = reversed(range(fabric.width))
        for X in xs:
            if fabric.usable(X, Y):
                out += [fabric.core_at(X, Y, s) for s in range(fabric.chip.cores_per_tile)]
    return np.asarray(out, dtype=np.int64)


def row_major(fabric: Fabric, n_blocks: int) -> np.ndarray:
    """Block i on the i-th core in row-major order of the mesh (Y, then X, then the tile's cores)."""
    return _order_cores(fabric, "rows")[:n_blocks]


def snake(fabric: Fabric, n_blocks: int) -> np.ndarray:
    """Block i on the i-th core of a boustrophedon walk (rows alternate direction)."""
    return _order_cores(fabric, "snake")[:n_blocks]


def random_placement(fabric: Fabric, n_blocks: int, seed: int = 0) -> np.ndarray:
    cores = _order_cores(fabric, "rows")
    return np.random.default_rng(seed).permutation(cores)[:n_blocks]


def _greedy(fabric: Fabric, groups: list[range], edges: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Group by group: each block's target is the traffic-weighted centroid of its placed feeders; the group takes
    the free cores nearest the group's centroid (hops, then snake order), and blocks and cores are matched in the
    same snake order of their positions, so neighbouring targets get neighbouring cores."""
    src, dst, w = edges
    n_blocks = groups[-1].stop if groups else 0
    walk = _order_cores(fabric, "snake")
    _, _, _, wx, wy = fabric.locate(walk)
    rank = np.empty(fabric.cores, dtype=np.int64)
    rank[walk] = np.arange(len(walk))
    free = np.zeros(fabric.cores, dtype=bool)
    free[walk] = True
    cx_all = np.zeros(fabric.cores)
    cy_all = np.zeros(fabric.cores)
    cx_all[walk], cy_all[walk] = wx, wy
    placed = np.full(n_blocks, -1, dtype=np.int64)
    bx, by = np.zeros(n_blocks), np.zeros(n_blocks)

    def snake_key(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        yr = np.round(y)
        return yr * (fabric.width + 1) + np.where(yr % 2 == 1, fabric.width - x, x)

    for g in groups:
        n = len(g)
        if n == 0:
            continue
        sel = (dst >= g.start) & (dst < g.stop)
        s_, d_, w_ = src[sel], dst[sel] - g.start, w[sel]
        ok = placed[s_] >= 0
        s_, d_, w_ = s_[ok], d_[ok], w_[ok]
        tot = np.bincount(d_, weights=w_, minlength=n)
        has = tot > 0
        free_idx = np.flatnonzero(free)
        if has.any():
            tx = np.bincount(d_, weights=w_ * bx[s_], minlength=n)
            ty = np.bincount(d_, weights=w_ * by[s_], minlength=n)
            tx[has] /= tot[has]
            ty[has] /= tot[has]
            cx, cy = float(tx[has].mean()), float(ty[has].mean())
            tx[~has], ty[~has] = cx, cy
            dist = np.abs(cx_all[free_idx] - cx) + np.abs(cy_all[free_idx] - cy)
            pick = free_idx[np.lexsort((rank[free_idx], dist))[:n]]
            cores = pick[np.lexsort((rank[pick], snake_key(cx_all[pick], cy_all[pick])))]
            blocks = np.lexsort((np.arange(n), snake_key(tx, ty)))
            assign = np.empty(n, dtype=np.int64)
            assign[blocks] = cores
        else:  # fed by nothing placed: the next free cores along the snake
            assign = free_idx[np.argsort(rank[free_idx], kind="stable")[:n]]
        placed[g.start:g.stop] = assign
        free[assign] = False
        bx[g.start:g.stop], by[g.start:g.stop] = cx_all[assign], cy_all[assign]
    return placed


def place_blocks(fabric: Fabric, groups: list[range], edges: tuple[np.ndarray, np.ndarray, np.ndarray]
                 ) -> Placement:
    """Place the blocks of ``groups`` (consecutive ranges of block indices, data-flow order) with traffic
    ``edges`` = (source block, destination block, weight)."""
    n_blocks = groups[-1].stop if groups else 0
    if n_blocks > fabric.cores:
        raise ValueError(f"{n_blocks} blocks do not fit {fabric.cores} cores")
    options = {"greedy": _greedy(fabric, groups, edges), "snake": snake(fabric, n_blocks),
               "row-major": row_major(fabric, n_blocks)}
    costs = {k: placement_cost(fabric, v, edges) for k, v in options.items()}
    costs["random"] = placement_cost(fabric, random_placement(fabric, n_blocks), edges)
    method = min(("greedy", "snake", "row-major"), key=lambda k: (costs[k], k != "greedy"))
    return Placement(options[method], method, costs)
