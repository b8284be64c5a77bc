"""Synaptic operations and energy of the analysed videos, from :mod:`svformer_deploy.energy`, set beside firing rates.

Nothing is counted here: every count and every energy comes from the energy module (:func:`count_ops` and its
hardware profiles); this module only sums its tables over videos and groups them by module.

Definitions:

- **synaptic ops** = the op classes :data:`svformer_deploy.energy.rules.SYNAPTIC_CLASSES` (``mac``: real x real,
  ``ac``: spike x weight, ``spike_product``: spike x spike/integer in the attention), exact counts;
- **energy** = the energy module's price of every counted op (synaptic ops, neuron updates, BatchNorm, residual
  adds, scalings) under the chosen profile, compute only (no memory term);
- **module group** of a counted layer: the layer itself when it is a container module (ops run in its own
  ``forward``, e.g. residual adds), else its parent module. A neuron layer belongs to its parent too, and in
  SVFormer every neuron drives only synapses of its parent module (``blocks1.0.lif -> blocks1.0.conv1``,
  ``attn.lif_q/k/v -> attn.product``, ``head.lif -> head.conv3d``), so a group's ops are what its neurons'
  spikes cause, plus its BatchNorms and neuron updates. ``patch_embed1`` (analog frames in) has no neuron.
- **per video** = all V views of the video (clips x crops), as the energy report counts them.
- **ANN twin** = the same architecture and input with every PLIF replaced by ReLU (``neuron="relu"``), counted
  dense (every synaptic op a MAC) by the energy module's ``svformer-ann`` baseline.
- **baselines** are placed exactly as ``energy report`` places them
  (:func:`svformer_deploy.energy.baselines.place_baseline`): on the SNN's own input when they run there (like
  for like), else at their published input, marked ``same_input = False`` and shown apart, never in a ratio or
  beside the SNN in a chart; their arithmetic is priced under
  :func:`~svformer_deploy.energy.baselines.ann_profile_for` of the SNN's profile.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd
from torch import nn

from svformer_deploy.analysis.rates import Sample, weighted_rate

if TYPE_CHECKING:
    from svformer_deploy.energy.profiles import HardwareProfile

__all__ = ["EnergyBreakdown", "energy_breakdown", "module_group", "rate_vs_share", "attention_products",
           "energy_per_video"]

SNN_LABEL = "SNN"
ANN_LABEL = "ANN twin (ReLU)"


class _Analysed(Protocol):
    """What the functions below read from a :class:`~svformer_deploy.analysis.SparsityAnalysis` (typed here by
    its shape, so this module does not import the sparsity module that imports it)."""

    rates: pd.DataFrame
    energy: "EnergyBreakdown | None"


@dataclass
class EnergyBreakdown:
    """Op counts and energy of the analysed videos (all views), summed over videos.

    Attributes:
        profile: name of the energy profile the energies are priced with.
        counts: SNN exact counts, ``group, layer, timestep, op_class, count, energy_pj`` (layers in execution order).
        dense: the SNN's dense counts (every synaptic op a MAC), ``group, layer, op_class, count``: the number of
            operations a dense accelerator would execute; the reference for the spike x spike products.
        per_video: ``video, model, views, synaptic_ops, energy_pj, profile, same_input``: one row per video for the
            SNN and each baseline (``same_input`` False: counted at the baseline's own input, not comparable).
        num_videos: videos summed in ``counts``.
        uncounted: executed ops the counter has no rule for (op name -> calls/elements), summed over videos.
    """

    profile: str
    counts: pd.DataFrame
    dense: pd.DataFrame
    per_video: pd.DataFrame
    num_videos: int
    uncounted: dict[str, dict[str, int]] = field(default_factory=dict)

    def tables(self) -> "dict[str, pd.DataFrame]":
        """The tables a report writes (file stem -> table)."""
        return {"energy_per_layer": self.counts, "energy_per_video": self.per_video}

    def summary(self) -> dict[str, Any]:
        """Totals per video (means) for the report's JSON."""
        pv = self.per_video.groupby("model", sort=False)[["synaptic_ops", "energy_pj"]].mean()
        return {"profile": self.profile, "videos": self.num_videos, "uncounted": self.uncounted,
                "mean_per_video": {m: {k: float(v) for k, v in row.items()} for m, row in pv.iterrows()}}


def module_group(layer: str, containers: "set[str]") -> str:
    """Group of a counted layer: ``layer`` itself when it is a container module, else its parent module.

    ``containers`` holds the dotted names of modules that have children. The top-level model is ``"(model)"``.
    """
    if layer in ("", "(model)"):
        return "(model)"
    if layer in containers:
        return layer
    parent = layer.rpartition(".")[0]
    return parent or layer


def _containers(model: nn.Module) -> "set[str]":
    return {name for name, m in model.named_modules() if any(True for _ in m.children())}


def _baseline_label(name: str, same_input: bool, shape: Sequence[int]) -> str:
    if name == "svformer-ann":
        return ANN_LABEL
    return f"{name} (ANN, SNN's input)" if same_input else f"{name} (ANN, own input {'x'.join(map(str, shape))})"


def energy_breakdown(model: nn.Module, samples: Iterable[Sample], *, profile: str | HardwareProfile | None = None,
                     baselines: Sequence[str] = ("svformer-ann",)) -> EnergyBreakdown:
    """Count every video's views with :func:`svformer_deploy.energy.count_ops` (exact, and dense for the
    spike-product reference), price them with :func:`svformer_deploy.energy.energy_of` under ``profile`` (the
    energy module's default if ``None``; a name or file is resolved once, here), and set ANN baselines beside them.

    A baseline's energy per video is its dense one-view count, placed as ``energy report`` places it
    (:func:`svformer_deploy.energy.baselines.place_baseline`: the SNN's own input when it runs there, else its
    published input with ``same_input = False``), priced under
    :func:`~svformer_deploy.energy.baselines.ann_profile_for` the SNN's profile, times the video's number of views.
    """
    from svformer_deploy.energy import count_ops, energy_of, get_profile
    from svformer_deploy.energy.baselines import ann_profile_for, place_baseline
    from svformer_deploy.energy.profiles import DEFAULT_PROFILE
    from svformer_deploy.energy.rules import SYNAPTIC_CLASSES

    snn_profile = get_profile(profile if profile is not None else DEFAULT_PROFILE)
    ann_profile = ann_profile_for(snn_profile)

    def price(counts: Any) -> Any:
        return energy_of(counts, snn_profile)

    def synaptic(df: pd.DataFrame) -> int:
        return int(df.loc[df["op_class"].isin(SYNAPTIC_CLASSES), "count"].sum())

    containers = _containers(model)
    placed = [place_baseline(name, model.config) for name in baselines]
    per_view = {_baseline_label(b.name, b.same_input, b.counts.input_shape[1:]): (energy_of(b.counts, ann_profile),
                                                                                  b.same_input) for b in placed}
    exact_parts, dense_parts, rows = [], [], []
    uncounted: dict[str, dict[str, int]] = {}
    prof_name = snn_profile.name
    n = 0
    for s in samples:
        n += 1
        views = int(s.views.shape[0])
        c = count_ops(model, s.views)
        exact = price(c)
        dense_parts.append(count_ops(model, s.views, dense=True).df)
        for name, d in c.uncounted.items():
            acc = uncounted.setdefault(name, {})
            for k, v in d.items():
                acc[k] = acc.get(k, 0) + int(v)
        exact_parts.append(exact.df)
        rows.append({"video": str(s.video_id), "model": SNN_LABEL, "views": views, "synaptic_ops": synaptic(exact.df),
                     "energy_pj": float(exact.compute_pj), "profile": prof_name, "same_input": True})
        for label, (rep, same) in per_view.items():
            rows.append({"video": str(s.video_id), "model": label, "views": views,
                         "synaptic_ops": synaptic(rep.df) * views, "energy_pj": float(rep.compute_pj) * views,
                         "profile": ann_profile.name, "same_input": same})
    if n == 0:
        from svformer_deploy.errors import EnergyError

        raise EnergyError("no videos to count: the sample iterator was empty; check the data source and --videos")
    order = list(dict.fromkeys(pd.concat(exact_parts)["layer"]))
    counts = (pd.concat(exact_parts).groupby(["layer", "timestep", "op_class"], sort=False)[["count", "energy_pj"]]
              .sum().reset_index())
    counts["layer"] = pd.Categorical(counts["layer"], categories=order, ordered=True)
    counts = counts.sort_values(["layer", "timestep", "op_class"], kind="stable").reset_index(drop=True)
    counts["layer"] = counts["layer"].astype(str)
    counts.insert(0, "group", [module_group(x, containers) for x in counts["layer"]])
    dense = pd.concat(dense_parts).groupby(["layer", "op_class"], sort=False)["count"].sum().reset_index()
    dense.insert(0, "group", [module_group(x, containers) for x in dense["layer"]])
    return EnergyBreakdown(profile=prof_name, counts=counts, dense=dense,
                           per_video=pd.DataFrame(rows), num_videos=n, uncounted=uncounted)


def _need_energy(a: _Analysed) -> EnergyBreakdown:
    if a.energy is None:
        from svformer_deploy.errors import EnergyError

        raise EnergyError("this analysis has no energy counts; run analyse_checkpoint(..., energy=True) or "
                          "set analysis.energy = energy_breakdown(model, samples)")
    return a.energy


def rate_vs_share(a: _Analysed) -> pd.DataFrame:
    """Per module group in network order: the neuron-weighted firing rate of its neurons (NaN without neurons),
    its synaptic ops and energy, and their shares of the network total
    (``group, rate, synaptic_ops, ops_share, energy_pj, energy_share``)."""
    from svformer_deploy.energy.rules import SYNAPTIC_CLASSES

    e = _need_energy(a)
    c = e.counts
    order = list(dict.fromkeys(c["group"]))
    syn = c[c["op_class"].isin(SYNAPTIC_CLASSES)].groupby("group")["count"].sum()
    en = c.groupby("group")["energy_pj"].sum()
    rates = a.rates.assign(group=[layer.rpartition(".")[0] for layer in a.rates["layer"].astype(str)])
    r = weighted_rate(rates, ["group"]).set_index("group")["rate"]
    out = pd.DataFrame({"group": order})
    out["rate"] = [float(r.get(g, float("nan"))) for g in order]
    out["synaptic_ops"] = [int(syn.get(g, 0)) for g in order]
    out["ops_share"] = out["synaptic_ops"] / max(1, out["synaptic_ops"].sum())
    out["energy_pj"] = [float(en.get(g, 0.0)) for g in order]
    total = out["energy_pj"].sum()
    out["energy_share"] = out["energy_pj"] / total if total > 0 else 0.0
    return out


def attention_products(a: _Analysed) -> pd.DataFrame:
    """Spike x spike products per attention product layer, per video (mean over the analysed videos):
    ``block, product, count, dense, fraction`` with ``count`` = executed products (the energy module's
    ``spike_product`` class: K^T V and Q (K^T V) together), ``dense`` = the same layer's dense count, and
    ``fraction = count / dense``."""
    e = _need_energy(a)
    c, d = e.counts, e.dense
    layers = list(dict.fromkeys(d.loc[d["layer"].str.endswith(".product"), "layer"]))
    layers += [x for x in dict.fromkeys(c.loc[c["op_class"] == "spike_product", "layer"]) if x not in layers]
    rows = []
    for layer in layers:
        count = int(c.loc[(c["layer"] == layer) & (c["op_class"] == "spike_product"), "count"].sum())
        dense = int(d.loc[(d["layer"] == layer) & (d["op_class"] == "mac"), "count"].sum())
        rows.append({"block": layer.rpartition(".")[0], "product": "K^T V + Q (K^T V)",
                     "count": count / e.num_videos, "dense": dense / e.num_videos,
                     "fraction": count / dense if dense else float("nan")})
    return pd.DataFrame(rows, columns=["block", "product", "count", "dense", "fraction"])


def energy_per_video(a: _Analysed) -> pd.DataFrame:
    """Energy per video of the SNN and its ANN twin: ``video, model, views, synaptic_ops, energy_pj, energy_uj``."""
    pv = _need_energy(a).per_video.copy()
    pv["energy_uj"] = pv["energy_pj"] * 1e-6
    return pv

