"""Figures of a :class:`~svformer_deploy.analysis.SparsityAnalysis`; every function returns a matplotlib Figure.

Conventions: layers run top to bottom in network order on the y axis; rates are in percent of neurons spiking
per timestep; colour maps are perceptually uniform and monotone in lightness (``viridis``), and series that
share an axis differ by marker or hatch as well as colour, so every figure reads in greyscale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from svformer_deploy.analysis.energy import ANN_LABEL, SNN_LABEL, attention_products, energy_per_video, rate_vs_share
from svformer_deploy.analysis.sparsity import (
    SparsityAnalysis,
    attention_qkv_rates,
    mean_rate_by_layer,
    rate_by_class,
    rate_by_correctness,
    rate_spread_by_video,
)
from svformer_deploy.energy.report import plural

__all__ = [
    "CMAP",
    "plot_rate_heatmap",
    "plot_rate_spread",
    "plot_rate_by_class",
    "plot_rate_by_correctness",
    "plot_attention_qkv",
    "plot_rate_vs_share",
    "plot_attention_products",
    "plot_energy_comparison",
    "all_figures",
]

CMAP = "viridis"
_HATCH = ("", "//", "..", "xx", "\\\\", "++")
_GREYS = ("0.15", "0.55", "0.85", "0.35", "0.7")
_MARKERS = ("o", "s", "^", "D", "v")


def _new_figure(width: float, height: float) -> Figure:
    # Figure() without pyplot: no global state, nothing shown, safe in threads and headless kernels.
    return Figure(figsize=(width, height), layout="constrained")


def _layer_height(n: int) -> float:
    return max(3.0, 0.28 * n + 1.4)


def _subtitle(a: SparsityAnalysis) -> str:
    m = a.meta
    views = ",".join(map(str, m.get("views_per_video", []))) or "?"
    return (f"{m.get('model', '?')}, T={m.get('timesteps', '?')}, {plural(a.num_videos, 'video')} x {views} "
            f"view{'' if views == '1' else 's'}")


def _heatmap(fig: Figure, ax, table: pd.DataFrame, xlabel: str, title: str, cbar_label: str, *,
             cmap: str = CMAP, vmin: float | None = 0.0, ylabel: bool = True) -> None:
    import matplotlib as mpl

    data = np.ma.masked_invalid(table.to_numpy(dtype=float))
    cm = mpl.colormaps[cmap].with_extremes(bad="white")
    im = ax.imshow(data, aspect="auto", cmap=cm, interpolation="nearest", vmin=vmin)
    ax.set_yticks(range(len(table.index)), [str(i) for i in table.index])
    long = max((len(str(c)) for c in table.columns), default=0) > 3
    ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns], rotation=45 if long else 0,
                  ha="right" if long else "center", rotation_mode="anchor" if long else "default")
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel("neuron layer (network order, input at top)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=cbar_label, fraction=0.05, pad=0.02)


def plot_rate_heatmap(a: SparsityAnalysis) -> Figure:
    """Firing rate (% of neurons spiking) per neuron layer x timestep, mean over the analysed videos."""
    m = mean_rate_by_layer(a)
    table = m.pivot(index="layer", columns="timestep", values="rate").reindex(list(a.layers)) * 100.0
    fig = _new_figure(1.2 + 0.45 * table.shape[1] + 3.2, _layer_height(len(table)))
    _heatmap(fig, fig.add_subplot(), table, "timestep t (one video frame per step)",
             f"Firing rate per layer and timestep\n{_subtitle(a)}", "firing rate (% of neurons spiking)")
    return fig


def plot_rate_spread(a: SparsityAnalysis) -> Figure:
    """Spread across videos: per layer, a box of the per-video rates (mean over timesteps) with each video as a dot."""
    s = rate_spread_by_video(a)
    fig = _new_figure(7.5, _layer_height(len(a.layers)))
    ax = fig.add_subplot()
    data = [s.loc[s["layer"] == name, "rate"].to_numpy() * 100.0 for name in a.layers]
    pos = np.arange(len(a.layers))
    ax.boxplot(data, positions=pos, vert=False, widths=0.6, showfliers=False,
               medianprops={"color": "black"}, boxprops={"color": "0.3"}, whiskerprops={"color": "0.3"},
               capprops={"color": "0.3"})
    rng = np.random.default_rng(0)  # jitter only spreads the dots vertically; values are exact
    for i, d in enumerate(data):
        ax.scatter(d, i + rng.uniform(-0.18, 0.18, size=len(d)), s=10, color="0.1", alpha=0.6, zorder=3, linewidths=0)
    ax.set_yticks(pos, list(a.layers))
    ax.invert_yaxis()
    ax.set_xlabel("firing rate, mean over timesteps (% of neurons spiking)")
    ax.set_ylabel("neuron layer (network order, input at top)")
    ax.set_title(f"Spread of the firing rate across videos\n{_subtitle(a)}\n"
                 "box: quartiles, whiskers: 1.5 x IQR, dot: one video", fontsize=10)
    ax.grid(axis="x", color="0.85")
    ax.set_xlim(left=0)
    return fig


def plot_rate_by_class(a: SparsityAnalysis) -> Figure:
    """Firing rate per layer x class (mean over timesteps and the videos of the class): absolute (left) and
    relative to the layer's mean over the classes shown (right), so that class differences stay visible in
    layers whose rate is small. Silent layers (mean 0) are blank on the right."""
    c = rate_by_class(a)
    classes = [n for n in a.class_names if n in set(c["class"])]
    table = c.pivot(index="layer", columns="class", values="rate").reindex(index=list(a.layers), columns=classes) * 100
    counts = c.drop_duplicates("class").set_index("class")["videos"]
    table.columns = [f"{k} (n={counts[k]})" for k in classes]
    mean = table.mean(axis=1)
    relative = table.div(mean.where(mean > 0), axis=0)
    fig = _new_figure(3.0 + 1.1 * len(classes), _layer_height(len(table)) + 0.9)
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    _heatmap(fig, ax1, table, "class of the video (n = videos analysed)", "absolute",
             "firing rate (% of neurons spiking)")
    _heatmap(fig, ax2, relative, "class of the video (n = videos analysed)", "relative to the layer's mean over classes",
             "firing rate / layer's mean over classes (x)", cmap="cividis", vmin=None, ylabel=False)
    fig.suptitle(f"Firing rate per layer and class\n{_subtitle(a)}", fontsize=11)
    return fig


def plot_rate_by_correctness(a: SparsityAnalysis) -> Figure:
    """Per layer, mean rate (± std over videos) of correctly vs wrongly predicted videos."""
    c = rate_by_correctness(a)
    fig = _new_figure(7.5, _layer_height(len(a.layers)))
    ax = fig.add_subplot()
    pos = {name: i for i, name in enumerate(a.layers)}
    for k, (flag, label) in enumerate(((True, "correct"), (False, "wrong"))):
        d = c[c["correct"] == flag]
        if d.empty:
            continue
        y = np.array([pos[n] for n in d["layer"].astype(str)]) + (-0.15 if flag else 0.15)
        n = int(d["videos"].max())
        ax.errorbar(d["rate"] * 100, y, xerr=d["std"].fillna(0) * 100, fmt=_MARKERS[k], color=_GREYS[k * 1],
                    mfc="white" if not flag else _GREYS[0], ms=5, capsize=2, label=f"{label} predictions (n={n} video{'s' if n != 1 else ''})")
    ax.set_yticks(range(len(a.layers)), list(a.layers))
    ax.set_ylim(len(a.layers) - 0.5, -0.5)
    ax.set_xlabel("firing rate, mean over timesteps and videos (% of neurons spiking)\n"
                  "error bar: ±1 standard deviation over videos")
    ax.set_ylabel("neuron layer (network order, input at top)")
    ax.set_title(f"Firing rate of correctly vs wrongly predicted videos (accuracy {a.accuracy:.0%})\n{_subtitle(a)}",
                 fontsize=10)
    ax.grid(axis="x", color="0.85")
    ax.set_xlim(left=0)
    ax.legend(loc="best", fontsize=8)
    return fig


def plot_attention_qkv(a: SparsityAnalysis) -> Figure:
    """Q, K, V spike rates of every attention block per timestep (one panel per block)."""
    q = attention_qkv_rates(a)
    blocks = list(q["block"].cat.categories) if len(q) else []
    fig = _new_figure(4.2 * max(1, len(blocks)), 3.6)
    if not blocks:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "this model has no attention blocks", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axes = fig.subplots(1, len(blocks), sharey=True, squeeze=False)[0]
    top = max(float(q["rate"].max()) * 100 * 1.08, 1e-3)
    for ax, b in zip(axes, blocks):
        for k, w in enumerate(("Q", "K", "V")):
            d = q[(q["block"] == b) & (q["which"] == w)]
            ax.plot(d["timestep"], d["rate"] * 100, marker=_MARKERS[k], color=_GREYS[k], mfc=_GREYS[k],
                    mec="black", label=w)
        ax.set_title(str(b))
        ax.set_xlabel("timestep t")
        ax.grid(color="0.85")
        ax.set_ylim(0, top)
    axes[0].set_ylabel("spike rate (% of Q/K/V entries = 1)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8,
               title="spikes of", title_fontsize=8)
    fig.suptitle(f"Q, K, V spike sparsity in the attention blocks (mean over videos)\n{_subtitle(a)}", fontsize=10)
    return fig


def _barh_groups(ax, labels: Sequence[str], series: Sequence[tuple[str, np.ndarray]], xlabel: str) -> None:
    n = len(series)
    h = 0.8 / n
    y = np.arange(len(labels))
    for k, (name, values) in enumerate(series):
        ax.barh(y - 0.4 + h * (k + 0.5), values, height=h, color=_GREYS[k], hatch=_HATCH[k], edgecolor="black",
                linewidth=0.5, label=name)
    ax.set_yticks(y, list(labels))
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", color="0.85")


def plot_rate_vs_share(a: SparsityAnalysis) -> Figure:
    """Per module (neuron layers grouped with the synapses they drive): firing rate vs share of synaptic ops and
    of energy. Needs ``a.energy`` (see :func:`svformer_deploy.analysis.energy_breakdown`)."""

    s = rate_vs_share(a)
    labels = list(s["group"])
    fig = _new_figure(10, _layer_height(len(labels)))
    ax1, ax2 = fig.subplots(1, 2, sharey=True, width_ratios=[1, 1.4])
    _barh_groups(ax1, labels, [("firing rate", s["rate"].fillna(0).to_numpy() * 100)],
                 "firing rate of the module's neurons (% spiking)")
    for y, r in enumerate(s["rate"]):
        if np.isnan(r):
            ax1.text(0, y, " no neurons of its own", va="center", fontsize=7, color="0.3")
    _barh_groups(ax2, labels, [("share of synaptic ops", s["ops_share"].to_numpy() * 100),
                               ("share of energy", s["energy_share"].to_numpy() * 100)],
                 "share of the network total (%)")
    fig.legend(*ax2.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    ax1.set_ylabel("module (network order, input at top)")
    prof = a.energy.profile if a.energy is not None else "?"
    fig.suptitle("Firing rate vs where the synaptic operations and the energy go "
                 f"(energy profile: {prof})\n{_subtitle(a)}", fontsize=10)
    return fig


def plot_attention_products(a: SparsityAnalysis) -> Figure:
    """Spike x spike products of each attention block: executed (non-zero pairs) vs the dense count, per video."""

    p = attention_products(a)
    fig = _new_figure(8, 2.4 + 0.7 * max(1, len(p)))
    ax = fig.add_subplot()
    if p.empty:
        ax.text(0.5, 0.5, "no spike x spike products counted (no attention blocks)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    labels = [str(b) for b in p["block"]]
    floor = 0.5  # zero counts drawn as an empty bar on the log axis and labelled
    _barh_groups(ax, labels, [("executed (both operands non-zero)", np.maximum(p["count"].to_numpy(), floor)),
                              ("dense (every pair)", p["dense"].to_numpy())],
                 "spike x spike products per video, K^T V and Q (K^T V) together (log scale)")
    ax.set_xscale("log")
    ax.set_xlim(left=floor)
    for y, (cnt, f) in enumerate(zip(p["count"], p["fraction"])):
        text = f" {cnt:,.0f} = {f:.2%} of dense" if cnt > 0 else " 0: no coincident spikes"
        ax.text(max(cnt, floor), y - 0.2, text, va="center", fontsize=8)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    ax.set_ylabel("attention block")
    ax.set_title(f"Spike x spike products caused by the Q, K, V spikes\n{_subtitle(a)}", fontsize=10)
    return fig


def plot_energy_comparison(a: SparsityAnalysis) -> Figure:
    """Energy per video of the SNN vs its ANN twin and every baseline on the SNN's own input, compute only, each
    bar labelled with its profile; baselines that could only run at their own input are listed apart under the
    axis, never drawn beside the SNN.

    The axis turns logarithmic when the largest mean is more than 20x the smallest."""

    e = energy_per_video(a)
    apart, e = e[~e["same_input"]], e[e["same_input"]]
    models = list(dict.fromkeys(e["model"]))
    profiles = e.drop_duplicates("model").set_index("model")["profile"]
    fig = _new_figure(8.5, 2.6 + 0.55 * len(models) + 0.25 * apart["model"].nunique())
    ax = fig.add_subplot()
    means = {m: float(e.loc[e["model"] == m, "energy_uj"].mean()) for m in models}
    y = np.arange(len(models))
    for i, m in enumerate(models):
        ax.barh(i, means[m], color=_GREYS[0] if m == SNN_LABEL else _GREYS[2], edgecolor="black",
                hatch=_HATCH[min(i, len(_HATCH) - 1)], height=0.6)
        v = e.loc[e["model"] == m, "energy_uj"].to_numpy()
        ax.scatter(v, np.full(len(v), i), s=40, color="black", zorder=3, marker="|")
        ax.text(max(v.max(), means[m]), i, f"  {means[m]:,.0f} µJ" if means[m] >= 100 else f"  {means[m]:.3g} µJ", va="center", fontsize=8)
    ax.set_yticks(y, [f"{m}\n{profiles[m]}" for m in models], fontsize=8)
    ax.set_ylim(len(models) - 0.4, -0.6)
    positive = [v for v in means.values() if v > 0]
    log = len(positive) > 1 and max(positive) / min(positive) > 20
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 2, max(positive) * 8)
    else:
        ax.set_xlim(0, max(e["energy_uj"].max(), max(means.values())) * 1.2)
    xlabel = ("energy per video, compute only (µJ" + ("; log scale" if log else "") +
              "; bar: mean, tick: one video); profile under each label")
    if len(apart):
        rows = apart.groupby("model", sort=False)["energy_uj"].mean()
        xlabel += ("\nshown apart, not comparable (cannot run on the SNN's input): "
                   + "; ".join(f"{m}: {v:,.0f} µJ" for m, v in rows.items()))
    ax.set_xlabel(xlabel, fontsize=8)
    ratio = (f"SNN / ANN twin (compute only) = {means[SNN_LABEL] / means[ANN_LABEL]:.2f}; "
             if means.get(ANN_LABEL, 0) > 0 and SNN_LABEL in means else "")
    ax.set_title("SNN vs ANN baselines on the SNN's input: compute energy\n"
                 f"{ratio}memory: see `svformer-deploy energy report`\n{_subtitle(a)}", fontsize=10)
    ax.grid(axis="x", color="0.85")
    return fig


def all_figures(a: SparsityAnalysis) -> "dict[str, Figure]":
    """Every figure, keyed by the file stem the CLI writes (``<key>.png``); energy figures need ``a.energy``."""
    figs = {
        "rate_heatmap": plot_rate_heatmap(a),
        "rate_spread": plot_rate_spread(a),
        "rate_by_class": plot_rate_by_class(a),
        "rate_by_correctness": plot_rate_by_correctness(a),
        "attention_qkv": plot_attention_qkv(a),
    }
    if a.energy is not None:
        figs["rate_vs_share"] = plot_rate_vs_share(a)
        figs["attention_products"] = plot_attention_products(a)
        figs["energy_comparison"] = plot_energy_comparison(a)
    return figs
