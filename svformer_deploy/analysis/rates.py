"""The shared base of the analyses: what a video sample is, and how firing rates are averaged.

Both :mod:`svformer_deploy.analysis.sparsity` and :mod:`svformer_deploy.analysis.energy` build on this module;
it imports neither, so the analysis package has one direction of imports:
``sparsity -> energy -> rates`` (``plots`` and ``report`` sit on top).
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd
from torch import Tensor

__all__ = ["Sample", "weighted_rate"]


class Sample(Protocol):
    """What the analyses need from a video: the data contract's ``VideoSample``."""

    video_id: str
    label: int
    views: Tensor  # (V, C, T, H, W)


def weighted_rate(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Neuron-weighted mean rate per group: ``sum(rate * N) / sum(N)`` (= total spikes / total neuron-steps).

    ``df`` holds a ``rate`` and a ``neurons`` column (N, neurons per timestep and view) and the ``by`` columns.
    """
    w = df.assign(_spk=df["rate"] * df["neurons"])
    g = w.groupby(by, observed=True, sort=True)[["_spk", "neurons"]].sum()
    return (g["_spk"] / g["neurons"]).rename("rate").reset_index()
