"""Spike-by-spike comparison of an export with its PyTorch model, shared by the verifiers of every target.

* :func:`record_ties`: per PLIF layer, where the model's membrane H equals V_th exactly (the model fires on
  ``H >= V_th``, NIR and Loihi on ``v > threshold``) and where it is within :data:`NEAR_THRESHOLD` of it;
* :class:`LayerStats`: agreement counts of one neuron layer per timestep, ties counted apart;
* :func:`first_divergence` / :func:`clip_divergences`: the earliest (timestep, layer) where spikes differ, and
  whether threshold rounding explains it;
* :func:`coverage_problems`: a bundle's covered operations against the model's own.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from svformer_deploy.exporters.plan import coverage_of, model_operations
from svformer_deploy.models import iter_neurons
from svformer_deploy.models.neurons import PLIF, PLIFParameters, plif_step
from svformer_deploy.models.recording import forward_hooks

__all__ = ["coverage_problems", "record_ties", "first_divergence", "clip_divergences", "NEAR_THRESHOLD", "LayerStats"]


def coverage_problems(model: nn.Module, covered: Iterable[str]) -> list[str]:
    """Operations of ``model`` not covered, covered twice, or unknown; empty when the export is complete."""
    return coverage_of(model_operations(model), list(covered))


NEAR_THRESHOLD = 1e-5
"""|H - V_th| at or below which a model neuron counts as *near threshold*: float32 rounding differences between
the bundle (folded BN, dense convs, snntorch's ``tau * H`` membrane) and the model are a few ulp per layer, so
such neurons may legitimately decide differently."""


@contextmanager
def record_ties(model: nn.Module, near: float = NEAR_THRESHOLD):
    """Record, per PLIF layer, ``(tie, near)`` masks of shape (T, B, ...): where the membrane H equals V_th exactly,
    and where ``|H - V_th| <= near``.

    H is recomputed from the layer's input by :func:`~svformer_deploy.models.neurons.plif_step` (the model's own
    arithmetic), so it is the H the model compared against V_th.
    """
    ties: "OrderedDict[str, tuple[Tensor, Tensor]]" = OrderedDict()

    def hook(name: str):
        def fn(mod: PLIF, inputs: tuple, output: Tensor) -> None:
            x_seq = inputs[0].detach()
            p = PLIFParameters(torch.sigmoid(mod.w.detach()).to(x_seq.dtype), mod.v_threshold)
            h = torch.empty_like(x_seq)
            state = None
            for t in range(x_seq.shape[0]):
                _, state = plif_step(x_seq[t], state, p)
                h[t] = state.h
            tie = h == mod.v_threshold
            ties[name] = (tie, h.sub_(mod.v_threshold).abs_() <= near)

        return fn

    with forward_hooks((mod, hook(name)) for name, mod in iter_neurons(model) if isinstance(mod, PLIF)):
        yield ties


@dataclass
class LayerStats:
    """Spike comparison of one neuron layer, summed over batches: counts per timestep."""

    n: list[int]
    agree: list[int]
    ties: list[int]
    disagree_at_ties: list[int]
    near: list[int]
    disagree_near: list[int]

    @classmethod
    def empty(cls, T: int) -> "LayerStats":
        return cls(*([0] * T for _ in range(6)))

    def update(self, ref: Tensor, got: Tensor, tie: Tensor, near: Tensor | None = None) -> None:
        """Add the counts of one batch: ``ref``, ``got`` spikes and ``tie``, ``near`` masks, all (T, B, ...)."""
        T = ref.shape[0]
        near = tie if near is None else near
        differ = (ref != got).reshape(T, -1)
        tie, near = tie.reshape(T, -1), near.reshape(T, -1)
        counts = torch.stack([differ.sum(1), tie.sum(1), (differ & tie).sum(1), near.sum(1),
                              (differ & near & ~tie).sum(1)]).tolist()
        per_step = differ.shape[1]
        for t in range(T):
            self.n[t] += per_step
            self.agree[t] += per_step - counts[0][t]
            self.ties[t] += counts[1][t]
            self.disagree_at_ties[t] += counts[2][t]
            self.near[t] += counts[3][t]
            self.disagree_near[t] += counts[4][t]

    def to_json(self) -> dict[str, Any]:
        n, a = sum(self.n), sum(self.agree)
        return {"neuron_steps": n, "agree": a, "disagree": n - a, "agreement": a / n if n else math.nan,
                "ties": sum(self.ties), "disagree_at_ties": sum(self.disagree_at_ties),
                "near_threshold": sum(self.near), "disagree_near_threshold": sum(self.disagree_near),
                "disagree_not_ties": n - a - sum(self.disagree_at_ties),
                "agreement_per_timestep": [x / y if y else math.nan for x, y in zip(self.agree, self.n)]}


def first_divergence(order: list[str], ref: dict[str, Tensor], got: dict[str, Tensor],
                     masks: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Any] | None:
    """The earliest (timestep, layer in execution order) where bundle and model spikes differ in a batch,
    and whether every differing neuron there was at a tie or near threshold in the model. Returns None when all
    spikes agree. A disagreement changes the input of every later layer, so only the first one is a cause."""
    T = next(iter(ref.values())).shape[0]
    for t in range(T):
        for name in order:
            diff = ref[name][t] != got[name][t]
            if diff.any():
                tie, near = masks[name][0][t], masks[name][1][t]
                return {"layer": name, "timestep": t, "neurons": int(diff.sum()),
                        "at_ties": int((diff & tie).sum()), "near_threshold": int((diff & near & ~tie).sum()),
                        "explained": bool((~diff | near | tie).all())}
    return None


def clip_divergences(order: list[str], ref: dict[str, Tensor], got: dict[str, Tensor],
                     masks: dict[str, tuple[Tensor, Tensor]], first_clip: int = 0) -> list[dict[str, Any]]:
    """:func:`first_divergence` of each clip of a batch (axis 1 of every (T, B, ...) tensor) on its own, with
    ``batch_first_clip = first_clip + b``; clips whose spikes all agree are left out. Per clip, so that one
    clip's early tie cannot hide another clip's later, unexplained divergence."""
    out = []
    for b in range(next(iter(ref.values())).shape[1]):
        one = slice(b, b + 1)
        d = first_divergence(order, {k: ref[k][:, one] for k in order}, {k: got[k][:, one] for k in order},
                             {k: (masks[k][0][:, one], masks[k][1][:, one]) for k in order})
        if d is not None:
            out.append({"batch_first_clip": first_clip + b, **d})
    return out
