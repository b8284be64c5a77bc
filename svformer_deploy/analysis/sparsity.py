"""Spike sparsity of an SVFormer on real videos, as tidy tables.

:func:`analyse` runs a model over videos (each a :class:`~svformer_deploy.data.VideoSample` with V views),
records every neuron layer with :func:`~svformer_deploy.models.record_spikes` and returns a
:class:`SparsityAnalysis`. The summaries below turn it into the tables the plots in
:mod:`svformer_deploy.analysis.plots` draw. Nothing here counts synaptic operations: op counts and energy come
from :mod:`svformer_deploy.energy` (see :mod:`svformer_deploy.analysis._energy`).

Rules (stated once, used everywhere):

- **Firing rate** of layer l at timestep t for one video: the fraction of (view, neuron) pairs that spiked,
  ``rate[l, t, video] = sum_{v, i} S_l[t, v, i] / (V * N_l)`` with N_l the number of neurons of layer l at
  one timestep (channels x positions, or heads x tokens x head_dim). Views of one video are pooled.
- **Prediction** of a video: the class with the largest softmax score summed over its V views (as the reference
  and ``svformer-deploy evaluate`` do); ``correct`` compares it with the label.
- **Network order**: the order in which the layers execute in one forward (the order of ``rec.spikes``).
- **Averages over layers or videos** weight every video equally and, inside a group of layers, every neuron
  equally (total spikes / total neuron-steps), so a big layer counts more than a small one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor, nn

from svformer_deploy.analysis.energy import EnergyBreakdown, energy_breakdown
from svformer_deploy.analysis.rates import Sample
from svformer_deploy.errors import DataError, EnergyError, InputShapeError
from svformer_deploy.models import record_spikes

if TYPE_CHECKING:
    from svformer_deploy.energy.profiles import HardwareProfile

__all__ = [
    "RATE_COLUMNS",
    "Sample",
    "SparsityAnalysis",
    "analyse",
    "analyse_checkpoint",
    "mean_rate_by_layer",
    "rate_spread_by_video",
    "rate_by_class",
    "rate_by_correctness",
    "attention_qkv_rates",
]

RATE_COLUMNS = ("layer", "timestep", "video", "class", "correct", "rate")
"""Columns of :attr:`SparsityAnalysis.rates` (plus ``neurons``: N_l, the layer's neurons per timestep and view)."""

_QKV = {"lif_q": "Q", "lif_k": "K", "lif_v": "V"}


@dataclass
class SparsityAnalysis:
    """Firing rates and predictions of one model on a set of videos.

    Attributes:
        rates: tidy table, one row per (layer, timestep, video); columns :data:`RATE_COLUMNS` + ``neurons``.
            ``layer`` is an ordered categorical in network order.
        predictions: one row per video: ``video, label, class, predicted, predicted_class, correct, views``.
        layers: neuron layer names in network order.
        class_names: names of the model's classes (index = label).
        meta: where the numbers came from (model name, T, input size, views per video, checkpoint, data).
        energy: op counts and energy of the same videos from :mod:`svformer_deploy.energy`, or ``None`` when
            not requested (see :func:`svformer_deploy.analysis.energy_breakdown`).

    Example::

        a = analyse_checkpoint(default_checkpoint(), "moving-digits", num_videos=20)
        a.rates.groupby("layer", observed=True)["rate"].mean()     # mean firing rate per layer
        plots.plot_rate_heatmap(a).savefig("heatmap.png")
    """

    rates: pd.DataFrame
    predictions: pd.DataFrame
    layers: tuple[str, ...]
    class_names: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    energy: EnergyBreakdown | None = None

    @property
    def num_videos(self) -> int:
        return len(self.predictions)

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy over the analysed videos (views summed)."""
        return float(self.predictions["correct"].mean()) if len(self.predictions) else float("nan")

    def tidy_csv(self) -> pd.DataFrame:
        """The table the CLI writes: ``layer, timestep, video, rate`` in network order, then timestep, video."""
        return self.rates.loc[:, ["layer", "timestep", "video", "rate"]].astype({"layer": str})


def _rates_of_recording(spikes: "dict[str, Tensor]") -> "list[tuple[str, int, Tensor]]":
    """Per layer: (name, N_l, rate (T,)) with rate[t] = mean over views and neurons of S[t]."""
    out = []
    for name, s in spikes.items():
        flat = s.flatten(2).float()  # (T, V, N_l)
        out.append((name, flat.shape[2], flat.mean(dim=(1, 2))))
    return out


@torch.no_grad()
def analyse(model: nn.Module, samples: Iterable[Sample], *, class_names: Sequence[str] | None = None,
            meta: dict[str, Any] | None = None) -> SparsityAnalysis:
    """Run ``model`` (eval mode) on every sample's views and record every neuron layer's firing rate.

    Args:
        model: an SVFormer (``create_model`` / ``load_checkpoint``); put into eval mode here.
        samples: videos, each with ``video_id``, ``label`` and ``views`` (V, C, T, H, W) ready for the model,
            e.g. ``svformer_deploy.data.iter_eval_videos(...)`` (wrap it in a progress bar if you like).
        class_names: one name per class; defaults to ``"0", "1", ...``.
        meta: extra provenance stored in :attr:`SparsityAnalysis.meta`.

    Returns:
        A :class:`SparsityAnalysis`. Raises :class:`InputShapeError` for views of the wrong shape and
        :class:`DataError` when ``samples`` is empty.
    """
    model.eval()
    cfg = getattr(model, "config", None)
    n_classes = cfg.num_classes if cfg is not None else None
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(n_classes or 0))
    rows: list[tuple] = []
    preds: list[dict[str, Any]] = []
    layers: tuple[str, ...] | None = None
    views_per_video: set[int] = set()
    for sample in samples:
        views = sample.views
        if views.dim() != 5:
            raise InputShapeError(f"video {sample.video_id!r}: views must be (V, C, T, H, W), got {tuple(views.shape)}; "
                                  "use svformer_deploy.data.iter_eval_videos to prepare videos")
        with record_spikes(model, to_cpu=True) as rec:
            logits = model(views)
        if layers is None:
            layers = tuple(rec.spikes)
            if not names:
                names = tuple(str(i) for i in range(logits.shape[1]))
        predicted = int(logits.float().softmax(dim=1).sum(0).argmax())
        label = int(sample.label)
        correct = predicted == label
        cls = names[label] if 0 <= label < len(names) else str(label)
        views_per_video.add(views.shape[0])
        preds.append({"video": str(sample.video_id), "label": label, "class": cls, "predicted": predicted,
                      "predicted_class": names[predicted] if predicted < len(names) else str(predicted),
                      "correct": correct, "views": views.shape[0]})
        for name, n_neurons, rate in _rates_of_recording(rec.spikes):
            for t, r in enumerate(rate.tolist()):
                rows.append((name, t, str(sample.video_id), cls, correct, r, n_neurons))
    if layers is None:
        raise DataError("no videos to analyse: the sample iterator was empty; check the data source and --videos")
    rates = pd.DataFrame(rows, columns=[*RATE_COLUMNS, "neurons"])
    rates["layer"] = pd.Categorical(rates["layer"], categories=list(layers), ordered=True)
    rates = rates.sort_values(["layer", "timestep", "video"], kind="stable").reset_index(drop=True)
    info = {"model": getattr(cfg, "name", type(model).__name__), "timesteps": getattr(cfg, "num_frames", None),
            "img_size": getattr(cfg, "img_size", None), "views_per_video": sorted(views_per_video),
            "videos": len(preds)}
    info.update(meta or {})
    return SparsityAnalysis(rates=rates, predictions=pd.DataFrame(preds), layers=layers, class_names=names, meta=info)


def mean_rate_by_layer(a: SparsityAnalysis) -> pd.DataFrame:
    """Per layer x timestep: the mean rate over videos (``layer, timestep, rate``), layers in network order."""
    return a.rates.groupby(["layer", "timestep"], observed=True, sort=True)["rate"].mean().reset_index()


def rate_spread_by_video(a: SparsityAnalysis) -> pd.DataFrame:
    """Per layer x video: the rate averaged over timesteps (``layer, video, rate``): one value per video."""
    return a.rates.groupby(["layer", "video"], observed=True, sort=True)["rate"].mean().reset_index()


def rate_by_class(a: SparsityAnalysis) -> pd.DataFrame:
    """Per layer x class: rate averaged over timesteps, then over the videos of that class
    (``layer, class, rate, videos``). Classes without analysed videos are absent."""
    per_video = a.rates.groupby(["layer", "video", "class"], observed=True, sort=True)["rate"].mean().reset_index()
    g = per_video.groupby(["layer", "class"], observed=True, sort=True)
    out = g["rate"].mean().reset_index()
    out["videos"] = g["video"].nunique().to_numpy()
    return out


def rate_by_correctness(a: SparsityAnalysis) -> pd.DataFrame:
    """Per layer, for correctly and wrongly predicted videos: mean rate (over timesteps, then videos),
    its standard deviation over videos and the number of videos (``layer, correct, rate, std, videos``)."""
    per_video = a.rates.groupby(["layer", "video", "correct"], observed=True, sort=True)["rate"].mean().reset_index()
    g = per_video.groupby(["layer", "correct"], observed=True, sort=True)["rate"]
    out = g.agg(rate="mean", std="std", videos="count").reset_index()
    return out


def attention_qkv_rates(a: SparsityAnalysis) -> pd.DataFrame:
    """Q, K and V spike rates of every attention block (``block, which, timestep, rate``), mean over videos.

    ``block`` is the attention module (e.g. ``blocks3.0.attn``), ``which`` one of ``Q, K, V``; the rate is over
    all heads, tokens and head channels. Empty when the model has no attention blocks.
    """
    df = mean_rate_by_layer(a)
    split = [str(n).rpartition(".") for n in df["layer"]]
    keep = [tail in _QKV for _, _, tail in split]
    out = pd.DataFrame({"block": [head for (head, _, _), k in zip(split, keep) if k],
                        "which": [_QKV[tail] for (_, _, tail), k in zip(split, keep) if k],
                        "timestep": df.loc[keep, "timestep"].to_numpy(), "rate": df.loc[keep, "rate"].to_numpy()})
    blocks = list(dict.fromkeys(out["block"]))
    out["block"] = pd.Categorical(out["block"], categories=blocks, ordered=True)
    out["which"] = pd.Categorical(out["which"], categories=["Q", "K", "V"], ordered=True)
    return out.sort_values(["block", "which", "timestep"]).reset_index(drop=True)


def analyse_checkpoint(checkpoint: "str | os.PathLike", data: "str | os.PathLike" = "moving-digits", *,
                       num_videos: int = 20, clips: int = 1, crops: int = 1, split: str = "val", seed: int = 0,
                       energy: bool = True, profile: "str | HardwareProfile | None" = None,
                       baselines: Sequence[str] = ("svformer-ann",),
                       progress: "Callable[[Iterable[Sample], int, str], Iterable[Sample]] | None" = None,
                       ) -> SparsityAnalysis:
    """Load ``checkpoint`` and analyse it on the first ``num_videos`` videos of ``data`` (``split``).

    ``data`` is ``"moving-digits"`` or a UCF101/HMDB51 folder (see :func:`svformer_deploy.data.iter_eval_videos`);
    each video gives ``clips x crops`` views. With ``energy`` the same videos are also counted by
    :mod:`svformer_deploy.energy` under ``profile`` (its default when ``None``) and compared with ``baselines``
    (the ANN twin by default; see :func:`svformer_deploy.analysis.energy_breakdown`).
    ``progress(iterable, total, description)`` may wrap the video iterators (the CLI passes a progress bar).
    Class names come from the checkpoint when it stores them, else from the data source; a class-count
    mismatch raises :class:`DataError`.
    """
    from svformer_deploy.data import class_names as data_class_names
    from svformer_deploy.data import iter_eval_videos
    from svformer_deploy.models import load_checkpoint

    if num_videos < 1:
        raise DataError(f"num_videos={num_videos}: analyse at least one video (e.g. --videos 20)")
    if energy:
        from svformer_deploy.energy import get_profile
        from svformer_deploy.energy.baselines import list_baselines

        unknown = [b for b in baselines if b not in list_baselines()]
        if unknown:
            raise EnergyError(f"unknown baseline(s) {unknown}; choose from {list_baselines()}")
        if profile is not None:
            profile = get_profile(profile)  # resolved once; an unknown one fails before any video is run
    model, meta = load_checkpoint(checkpoint)
    cfg = model.config
    names = list(data_class_names(data, cfg))
    if len(names) != cfg.num_classes:
        raise DataError(f"data {str(data)!r} has {len(names)} classes but the checkpoint's model has "
                        f"{cfg.num_classes}; analyse the checkpoint on the data it was trained for")
    stored = meta.get("class_names")
    if stored and len(stored) == cfg.num_classes:
        names = list(stored)
    samples = list(iter_eval_videos(data, cfg, split=split, num_videos=num_videos, clips=clips, crops=crops,
                                    seed=seed))
    info = {"checkpoint": str(checkpoint), "checkpoint_sha256": meta.get("sha256"), "data": str(data),
            "split": split, "clips": clips, "crops": crops}

    def wrap(description: str) -> Iterable[Sample]:
        return progress(samples, len(samples), description) if progress is not None else samples

    result = analyse(model, wrap("spikes"), class_names=names, meta=info)
    if energy:
        result.energy = energy_breakdown(model, wrap("op counts"), profile=profile, baselines=baselines)
    return result
