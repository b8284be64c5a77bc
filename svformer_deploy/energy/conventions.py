"""The conventions in use for SNN energy, side by side, from one table of synaptic layers and their input rates.

Every convention prices the same per-layer table: the layer's dense MACs (from :func:`count_ops` with
``dense=True``, on the model's own clip), its bias adds, and the firing rate of its input spikes (``None``: the
input is not spikes, the layer runs dense). The rates come either from real clips (:func:`measure_rates`) or
from a published table (:func:`read_rates_csv`, "what-if" pricing without checkpoint or data). Attention
products take the output rates of the attention's Q, K, V neuron layers (``...attn.lif_q/k/v``).

The reference script (Spikformer's ``get_energy_cost`` / syops-counter, as shipped with SVFormer) hooks each
conv on the (T, B, C, H, W) multi-step tensor: it takes T as the batch and C_out as a spatial dimension, which
inflates every Conv2d count by C_out / B. Every convention below is computed on the correct layout.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from svformer_deploy.energy.counter import OpCounts, count_ops
from svformer_deploy.energy.profiles import HardwareProfile, get_profile
from svformer_deploy.errors import EnergyError

__all__ = ["CONVENTIONS", "Convention", "register_convention", "layer_table", "measure_rates", "read_rates_csv",
           "price_conventions", "expected_counts", "dense_model_counts", "REFERENCE_SCRIPT_BUG"]

REFERENCE_SCRIPT_BUG = (
    "The reference energy script (Spikformer get_energy_cost / syops-counter, as shipped with SVFormer), run on "
    "multi-step (T, B, ...) tensors, takes T as the batch and C_out as a spatial dimension and so inflates every "
    "Conv2d count by C_out / B; all conventions here are computed on the correct layout.")
_LAYER_COLUMNS = ["layer", "dense_mac", "bias_add", "rate", "attention", "fq", "fk", "fv", "tokens"]


def _is_attention(layer: str) -> bool:
    return layer.endswith(".product")


def layer_table(dense: OpCounts, rates: Mapping[str, float], tokens: Mapping[str, int] | None = None
                ) -> pd.DataFrame:
    """One row per synaptic layer of ``dense`` (execution order): ``layer, dense_mac, bias_add, rate,
    attention, fq, fk, fv, tokens``. ``rate`` is NaN when ``rates`` gives none (input not spikes). For an attention
    product (``<block>.product``) fq/fk/fv are the rates of ``<block>.lif_q/k/v`` and ``tokens`` its N."""
    if dense.mode != "dense":
        raise EnergyError("layer_table needs dense counts: count_ops(model, clips, dense=True)")
    per = dense.df.groupby(["layer", "op_class"], sort=False)["count"].sum()
    order = list(dict.fromkeys(dense.df["layer"]))
    rows = []
    for layer in order:
        mac = float(per.get((layer, "mac"), 0))
        if mac == 0:
            continue
        bias = float(per.get((layer, "bias_add"), 0))
        if _is_attention(layer):
            block = layer.rpartition(".")[0]
            f = [rates.get(f"{block}.lif_{n}") for n in "qkv"]
            if any(v is None for v in f):
                raise EnergyError(f"no Q/K/V rates for attention {layer}; give {block}.lif_q, lif_k and lif_v")
            rows.append((layer, mac, bias, float("nan"), True, *map(float, f), int((tokens or {}).get(layer, 0))))
        else:
            r = rates.get(layer)
            rows.append((layer, mac, bias, float("nan") if r is None else float(r), False, *[float("nan")] * 3, 0))
    return pd.DataFrame(rows, columns=_LAYER_COLUMNS)


def _attention_analytic(row: pd.Series) -> float:
    """Spikformer's SSA: T x heads x N x d^2 x (min(fr_K, fr_V) + fr_Q) = dense/2 x (min + fr_Q) (the dense count
    holds K^T V and Q (K^T V), T x heads x N x d^2 each)."""
    return row["dense_mac"] / 2 * (min(row["fk"], row["fv"]) + row["fq"])


@dataclass(frozen=True)
class Convention:
    """A pricing convention: ``fn(table, dense) -> DataFrame(layer, mac, ac)``; ``doc`` states it."""

    name: str
    title: str
    doc: str
    fn: Callable[[pd.DataFrame, OpCounts], pd.DataFrame]


CONVENTIONS: dict[str, Convention] = {}


def register_convention(name: str, title: str) -> Callable:
    """Decorator: register a convention; its docstring is its statement (printed in every report)."""

    def deco(fn: Callable[[pd.DataFrame, OpCounts], pd.DataFrame]) -> Callable:
        if not (fn.__doc__ or "").strip():
            raise EnergyError(f"convention {name!r} has no docstring; state it there")
        CONVENTIONS[name] = Convention(name, title, " ".join(fn.__doc__.split()), fn)
        return fn

    return deco


def _frame(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["layer", "mac", "ac"])


@register_convention("spikformer", "Spikformer get_energy_cost (SVFormer's script)")
def _spikformer(table: pd.DataFrame, dense: OpCounts) -> pd.DataFrame:
    """Each conv/linear whose input is spikes: dense MACs x input rate as AC; any other (analog input: the stem,
    the local blocks' depthwise and second 1x1 convs, the local-pathway 1x1, the classifier): dense MACs as MAC.
    Attention: T x heads x N x d^2 x (min(fr_K, fr_V) + fr_Q) AC. BN, neurons, residual and bias adds, the scale
    and memory are ignored."""
    rows = []
    for _, r in table.iterrows():
        if r["attention"]:
            rows.append((r["layer"], 0.0, _attention_analytic(r)))
        elif math.isnan(r["rate"]):
            rows.append((r["layer"], r["dense_mac"], 0.0))
        else:
            rows.append((r["layer"], 0.0, r["dense_mac"] * r["rate"]))
    return _frame(rows)


@register_convention("literal", "literal: first layer MAC, the rest rate x T x FLOPs as AC")
def _literal(table: pd.DataFrame, dense: OpCounts) -> pd.DataFrame:
    """As the Spikformer paper writes it: E = E_MAC x FLOPs(first layer) + E_AC x sum(SOP), SOP = fr x T x FLOPs
    for every other layer. A layer whose input is not spikes takes the rate of the nearest preceding layer with
    spike input (the spikes that drive it through spike-free convs/BN). Attention as Spikformer."""
    rows, last = [], float("nan")
    for i, r in table.iterrows():
        if r["attention"]:
            rows.append((r["layer"], 0.0, _attention_analytic(r)))
            last = r["fq"]
            continue
        if not math.isnan(r["rate"]):
            last = r["rate"]
        if i == 0:
            rows.append((r["layer"], r["dense_mac"], 0.0))
        else:
            rows.append((r["layer"], 0.0, r["dense_mac"] * (0.0 if math.isnan(last) else last)))
    return _frame(rows)


@register_convention("syops", "syops-counter totals")
def _syops(table: pd.DataFrame, dense: OpCounts) -> pd.DataFrame:
    """syops-counter's totals: each conv/linear (dense MACs + bias adds) x input rate as AC for spike input, as MAC
    otherwise; each BatchNorm 2 x its input elements (affine) as MAC; each spiking neuron its input elements
    (one per element-step) as AC; attention as Spikformer."""
    rows = []
    for _, r in table.iterrows():
        if r["attention"]:
            rows.append((r["layer"], 0.0, _attention_analytic(r)))
        elif math.isnan(r["rate"]):
            rows.append((r["layer"], r["dense_mac"] + r["bias_add"], 0.0))
        else:
            rows.append((r["layer"], 0.0, (r["dense_mac"] + r["bias_add"]) * r["rate"]))
    per = dense.df.groupby(["layer", "op_class"], sort=False)["count"].sum()
    for layer in dict.fromkeys(dense.df["layer"]):
        bn = float(per.get((layer, "bn_mul"), 0) + per.get((layer, "bn_folded"), 0))
        if bn:
            rows.append((layer, 2 * bn, 0.0))
        nrn = float(per.get((layer, "neuron_mul"), 0))
        if nrn:
            rows.append((layer, 0.0, nrn))
    return _frame(rows)


def expected_counts(dense: OpCounts, table: pd.DataFrame) -> OpCounts:
    """Our rules' expected counts from stated rates ("ours" without data): a spike-input layer's ACs = rate x
    dense MACs (no border correction), an analog layer's MACs = dense; attention spike products =
    dense/2 x fr_K fr_V (K^T V) + dense/2 x fr_Q x (1 - (1 - fr_K fr_V)^N) (Q (K^T V), assuming independent
    spikes); BN, neuron, bias, residual and scale counts as counted. Memory facts: spike-input layers read
    1-bit inputs and fetch one weight per AC. Every count is booked at timestep -1."""
    syn = {"mac", "ac", "spike_product"}
    df = dense.df[~dense.df["op_class"].isin(syn)].groupby(["layer", "op_class"], sort=False)["count"].sum()
    rows = [(layer, -1, c, int(v)) for (layer, c), v in df.items()]
    mem = dense.memory.set_index("layer").copy()
    for _, r in table.iterrows():
        layer = r["layer"]
        if r["attention"]:
            half, pkv = r["dense_mac"] / 2, r["fk"] * r["fv"]
            nz = 1 - (1 - pkv) ** max(int(r["tokens"]), 1)
            rows.append((layer, -1, "spike_product", int(round(half * pkv + half * r["fq"] * nz))))
        elif math.isnan(r["rate"]):
            rows.append((layer, -1, "mac", int(r["dense_mac"])))
        else:
            ac = int(round(r["dense_mac"] * r["rate"]))
            rows.append((layer, -1, "ac", ac))
            if layer in mem.index:
                mem.loc[layer, "binary_act_values"] += mem.loc[layer, "real_act_values"]
                mem.loc[layer, "real_act_values"] = 0
                mem.loc[layer, "weight_uses"] = ac
    order = {n: i for i, n in enumerate(dict.fromkeys(dense.df["layer"]))}
    rows.sort(key=lambda x: order.get(x[0], 1 << 30))
    out = pd.DataFrame([r for r in rows if r[3]], columns=dense.df.columns)
    return OpCounts(df=out, num_steps=dense.num_steps, batch=dense.batch, input_shape=dense.input_shape,
                    mode="expected", memory=mem.reset_index(), rules_used=dense.rules_used)


def price_conventions(table: pd.DataFrame, dense: OpCounts, profile: str | HardwareProfile = "45nm-fp32"
                      ) -> dict[str, dict]:
    """Every registered convention on ``table``: per convention ``mac``, ``ac``, ``compute_pj``, the layers it
    priced as MAC, its per-layer table and its statement."""
    prof = get_profile(profile)
    out = {}
    for name, conv in CONVENTIONS.items():
        per = conv.fn(table, dense)
        mac, ac = float(per["mac"].sum()), float(per["ac"].sum())
        out[name] = {"title": conv.title, "statement": conv.doc, "mac": mac, "ac": ac,
                     "compute_pj": mac * prof.pj("mac") + ac * prof.pj("ac"),
                     "mac_layers": list(dict.fromkeys(per.loc[per["mac"] > 0, "layer"])), "per_layer": per}
    return out


# ---------------------------------------------------------------------------------------------- rates
def measure_rates(model: nn.Module, clips: Tensor) -> dict[str, float]:
    """Input firing rate of every conv/linear whose input is spikes (only {0, 1}), and the output rate of every
    neuron layer, on ``clips`` (mean over all elements and timesteps), keyed by dotted layer name."""
    from svformer_deploy.models import forward_hooks, record_spikes

    rates: dict[str, float] = {}

    def hook(name: str) -> Callable:
        def fn(mod: nn.Module, args: tuple) -> None:
            x = args[0]
            if bool(((x == 0) | (x == 1)).all()):
                rates[name] = float(x.float().mean())
        return fn

    synapses = [(mod, hook(name)) for name, mod in model.named_modules()
                if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    with forward_hooks(synapses, pre=True), torch.no_grad(), record_spikes(model) as rec:
        model.eval()(clips)
    rates.update({name: float(s.float().mean()) for name, s in rec.spikes.items()})
    return rates


def read_rates_csv(path: str | Path) -> dict[str, float]:
    """Read a ``name,rate[,meaning]`` table of firing rates (rates in [0, 1]; UTF-8, with or without a BOM). A
    layer named twice is an error naming it and both lines (never "the last row wins")."""
    from svformer_deploy._paths import read_user_text, require_file

    p = require_file(path, "rates file", "pass a CSV with columns name,rate", EnergyError)
    try:
        reader = csv.DictReader(read_user_text(p).splitlines())
        fieldnames, rows = reader.fieldnames, list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise EnergyError(f"rates file {p} is not a UTF-8 CSV text file ({type(err).__name__}); pass a CSV with "
                          "columns name,rate") from err
    if not fieldnames or not {"name", "rate"} <= set(fieldnames):
        raise EnergyError(f"rates file {p} must have columns 'name' and 'rate'; found {fieldnames}")
    out: dict[str, float] = {}
    line_of: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):
        try:
            r = float(row["rate"])
        except (TypeError, ValueError):
            raise EnergyError(f"{p} line {i}: rate {row['rate']!r} is not a number; write a rate in [0, 1]")
        if not 0.0 <= r <= 1.0:
            raise EnergyError(f"{p} line {i}: rate {r} of {row['name']} is outside [0, 1]; give a fraction")
        name = (row["name"] or "").strip()
        if name in line_of:
            raise EnergyError(f"{p} line {i}: layer {name} is given a rate twice (lines {line_of[name]} and {i}); "
                              "keep one row per layer")
        line_of[name] = i
        out[name] = r
    if not out:
        raise EnergyError(f"rates file {p} holds no rates")
    return out


def dense_model_counts(config: Any, batch: int = 1) -> tuple[OpCounts, dict[str, int]]:
    """Dense counts of a fresh model built from ``config`` on a ``(batch, *config.input_shape)`` clip, on the meta
    device (shapes only: no data, no weights), and the token count N of every attention product."""
    from svformer_deploy.models import create_model, forward_hooks
    from svformer_deploy.models.svformer import SpikeAttentionProduct

    model = create_model(config).eval().to("meta")
    tokens: dict[str, int] = {}
    hooks = [(m, lambda mod, args, n=n: tokens.__setitem__(n, int(args[0].shape[-2])))
             for n, m in model.named_modules() if isinstance(m, SpikeAttentionProduct)]
    with forward_hooks(hooks, pre=True):
        dense = count_ops(model, torch.empty((batch, *config.input_shape), device="meta"), dense=True)
    return dense, tokens
