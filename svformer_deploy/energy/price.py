"""What-if pricing: a registered model priced from stated firing rates, with no checkpoint and no data.

``svformer-deploy energy price --model svformer_ucf101 --rates RATES.csv`` counts the model's dense operations
on its own clip shape on the meta device (no weights, no arithmetic), applies the stated rates under every
convention (:mod:`svformer_deploy.energy.conventions`) and the memory model (:mod:`svformer_deploy.energy.memory`),
and gives the energy per view (one clip at one crop: one forward of the model's input) and per video at each
stated views protocol (clips x crops).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from svformer_deploy.energy._format import sig_figs as _f
from svformer_deploy.energy.conventions import (
    CONVENTIONS,
    REFERENCE_SCRIPT_BUG,
    dense_model_counts,
    expected_counts,
    layer_table,
    price_conventions,
    read_rates_csv,
)
from svformer_deploy.energy.energy import energy_of
from svformer_deploy.energy.profiles import HardwareProfile, caveat_lines, get_profile
from svformer_deploy.energy.rules import OP_CLASSES
from svformer_deploy.errors import EnergyError

__all__ = ["price_rates", "price_markdown", "OURS"]

OURS = "ours"


def _check_names(model: Any, rates: Mapping[str, float]) -> None:
    from svformer_deploy.models.neurons import SpikingNeuron

    known = {n for n, m in model.named_modules() if isinstance(m, SpikingNeuron) or hasattr(m, "weight")}
    unknown = sorted(set(rates) - known)
    if unknown:
        raise EnergyError(f"rates name layers the model {model.config.name} does not have: {unknown[:5]}; use its "
                          f"dotted layer names (`svformer-deploy info {model.config.name}` lists them)")
    missing = [n for n in spike_input_layers(model.config) if n not in rates]
    if missing:
        raise EnergyError(f"rates give no input firing rate for {len(missing)} layer(s) whose input is spikes: "
                          f"{missing[:5]}; add a 'name,rate' row for each (a layer without a rate would be priced "
                          "as dense MACs)")


def spike_input_layers(config: Any) -> list[str]:
    """Synaptic layers (Conv, Linear) of a model built from ``config`` whose input is binary spikes, found by one
    forward of random data at the smallest size the config allows (``img_size=32, num_frames=2``: which inputs
    are spikes is a property of the architecture, not of the size or the weights)."""
    import dataclasses

    import torch
    from torch import nn

    from svformer_deploy.models import create_model, forward_hooks

    small = dataclasses.replace(config, img_size=32, num_frames=2)
    model = create_model(small).eval()
    binary: dict[str, bool] = {}

    def hook(name: str):
        def fn(_m: nn.Module, args: tuple) -> None:
            binary[name] = bool(((args[0] == 0) | (args[0] == 1)).all())
        return fn

    layers = [(m, hook(n)) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d,
                                                                                nn.Linear))]
    with forward_hooks(layers, pre=True), torch.no_grad():
        model(torch.randn(1, *small.input_shape, generator=torch.Generator().manual_seed(0)))
    return [n for n, is_binary in binary.items() if is_binary]


def price_rates(model: str, rates: str | Path | Mapping[str, float], profile: str | HardwareProfile = "45nm-fp32",
                views: Sequence[tuple[int, int]] = ((1, 1), (5, 3))) -> dict[str, Any]:
    """Price registered model ``model`` from ``rates`` (a ``name,rate`` CSV or a mapping) under every convention
    and the memory model; JSON-ready summary (energies in mJ per view, and per video for each (clips, crops))."""
    from svformer_deploy.models import create_model

    prof = get_profile(profile)
    rate_map = read_rates_csv(rates) if isinstance(rates, (str, Path)) else dict(rates)
    for clips, crops in views:
        if clips < 1 or crops < 1:
            raise EnergyError(f"views {clips}x{crops}: clips and crops must be >= 1")
    net = create_model(model)
    _check_names(net, rate_map)
    dense, tokens = dense_model_counts(net.config)
    table = layer_table(dense, rate_map, tokens)
    conv = price_conventions(table, dense, prof)
    exp = energy_of(expected_counts(dense, table), prof)
    mem_mj = exp.memory_pj * 1e-9
    per_view: dict[str, dict[str, Any]] = {
        OURS: {"counts": {c: v for c, v in expected_counts(dense, table).totals().items() if v},
               "compute_mj": exp.compute_pj * 1e-9, "memory_mj": mem_mj,
               "memory_fetch_per_event_mj": exp.memory_per_event.total_pj * 1e-9,
               "total_mj": exp.total_pj * 1e-9,
               "mac_layers": list(table.loc[table["rate"].isna() & ~table["attention"], "layer"])}}
    for name, c in conv.items():
        per_view[name] = {"counts": {"mac": c["mac"], "ac": c["ac"]}, "compute_mj": c["compute_pj"] * 1e-9,
                          "memory_mj": mem_mj, "memory_fetch_per_event_mj": exp.memory_per_event.total_pj * 1e-9,
                          "total_mj": c["compute_pj"] * 1e-9 + mem_mj, "mac_layers": c["mac_layers"]}
    statements = {OURS: "Our counting rules (the rule table) applied to the stated rates: " +
                  " ".join(expected_counts.__doc__.split()), **{n: c.doc for n, c in CONVENTIONS.items()}}
    per_video = {f"{a}x{b}": {n: {k: v[k] * a * b for k in ("compute_mj", "total_mj")} for n, v in per_view.items()}
                 for a, b in views}
    return {"model": net.config.name, "input_shape": list(net.config.input_shape), "profile": prof.to_dict(),
            "rates": str(rates) if isinstance(rates, (str, Path)) else "mapping", "per_view": per_view,
            "per_video": per_video, "statements": statements,
            "memory": {"weight_stationary": {"pj": exp.memory.pj, "tiers": exp.memory.tiers,
                                             "footprint_bytes": exp.memory.footprint_bytes},
                       "fetch_per_event": {"pj": exp.memory_per_event.pj}},
            "dense_macs_per_view": float(dense.totals()["mac"]),
            "note": REFERENCE_SCRIPT_BUG, "op_classes": list(OP_CLASSES)}


def price_markdown(s: Mapping[str, Any]) -> str:
    """The price summary as a markdown report."""
    views = list(s["per_video"])
    head = "| convention | MAC (G) | AC (G) | compute / view (mJ) | compute + memory / view (mJ) | " + " | ".join(
        f"per video {v} compute / total (mJ)" for v in views) + " |"
    lines = [f"# What-if energy: {s['model']} from stated firing rates", "",
             f"Input {'x'.join(map(str, s['input_shape']))} (C, T, H, W) per view (one clip at one crop); "
             f"profile `{s['profile']['name']}` ({s['profile']['source']}); rates `{Path(str(s['rates'])).name}`. "
             "Per video = per view x clips x crops.",
             "", head, "|" + "---|" * (5 + len(views))]
    for name, v in s["per_view"].items():
        c = v["counts"]
        ac = c.get("ac", 0) + c.get("spike_product", 0)
        cells = " | ".join(f"{_f(s['per_video'][w][name]['compute_mj'])} / {_f(s['per_video'][w][name]['total_mj'])}"
                           for w in views)
        lines.append(f"| {name} | {_f(c.get('mac', 0) / 1e9)} | {_f(ac / 1e9)} | {_f(v['compute_mj'])} | "
                     f"{_f(v['total_mj'])} | {cells} |")
    m = s["memory"]["weight_stationary"]
    ours = s["per_view"][OURS]
    lines += ["", f"Memory per view (weight-stationary): {_f(ours['memory_mj'])} mJ = "
              + ", ".join(f"{k} {v * 1e-9:.4g}" for k, v in m["pj"].items())
              + " mJ; tiers by footprint: " + ", ".join(f"{k} {t} ({m['footprint_bytes'][k] / 1e6:.3g} MB)"
                                                          for k, t in m["tiers"].items())
              + f". Fetch-per-event: {_f(ours['memory_fetch_per_event_mj'])} mJ per view.", ""]
    caveats = caveat_lines(s["profile"])
    lines += ["## Caveats", "", *caveats, ""] if caveats else []
    lines += ["## Layers priced as MAC", ""]
    lines += [f"- {n}: {', '.join(v['mac_layers']) or '(none)'}" for n, v in s["per_view"].items()]
    lines += ["", "## Conventions", ""] + [f"- **{n}**: {t}" for n, t in s["statements"].items()]
    lines += ["", s["note"]]
    return "\n".join(lines) + "\n"
