"""Energy shares and spike x spike products of svformer_deploy.analysis.energy (counts from svformer_deploy.energy)."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from svformer_deploy.analysis import (
    EnergyBreakdown,
    SparsityAnalysis,
    analyse,
    attention_products,
    energy_breakdown,
    energy_per_video,
    module_group,
    rate_vs_share,
)
from svformer_deploy.errors import EnergyError
from svformer_deploy.models import create_model


def _analysis(energy):
    # layers: "m.lif" (8 neurons) and "m.sub.lif" (2 neurons); one video, two timesteps
    rates = pd.DataFrame({
        "layer": ["m.lif", "m.lif", "m.sub.lif", "m.sub.lif"], "timestep": [0, 1, 0, 1], "video": ["v"] * 4,
        "class": ["c"] * 4, "correct": [True] * 4, "rate": [0.5, 0.25, 1.0, 0.0], "neurons": [8, 8, 2, 2]})
    rates["layer"] = pd.Categorical(rates["layer"], ["m.lif", "m.sub.lif"], ordered=True)
    return SparsityAnalysis(rates=rates, predictions=pd.DataFrame({"video": ["v"], "correct": [True]}),
                            layers=("m.lif", "m.sub.lif"), class_names=("c",), energy=energy)


def test_rate_vs_share_by_hand():
    counts = pd.DataFrame({
        "group": ["stem", "m", "m", "m", "m.sub", "m.sub"],
        "layer": ["stem.conv", "m.fc", "m.lif", "m", "m.sub.fc", "m.sub.attn"],
        "timestep": [0, 0, 0, 0, 0, 0],
        "op_class": ["mac", "ac", "neuron_add", "residual_add", "ac", "spike_product"],
        "count": [100, 60, 10, 5, 30, 10],
        "energy_pj": [460.0, 54.0, 9.0, 4.5, 27.0, 9.0],
    })
    e = EnergyBreakdown(profile="p", counts=counts, dense=counts.iloc[:0], per_video=pd.DataFrame(), num_videos=1)
    s = rate_vs_share(_analysis(e)).set_index("group")
    assert list(s.index) == ["stem", "m", "m.sub"]
    assert pd.isna(s.loc["stem", "rate"])
    # m: (0.5 + 0.25) * 8 spikes-per-neuron-step over 16 neuron-steps; m.sub: (1 + 0) * 2 / 4
    assert s.loc["m", "rate"] == pytest.approx(6 / 16) and s.loc["m.sub", "rate"] == pytest.approx(0.5)
    # synaptic ops: stem 100 (mac), m 60 (ac; neuron and residual ops are not synaptic), m.sub 30 + 10
    assert list(s["synaptic_ops"]) == [100, 60, 40]
    assert s["ops_share"].tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert s["energy_share"].tolist() == pytest.approx([460 / 563.5, 67.5 / 563.5, 36 / 563.5])


def test_module_group_rule():
    containers = {"", "blocks1.0", "blocks1.0.mlp", "blocks3.0", "blocks3.0.attn", "head"}
    assert module_group("blocks1.0.conv1", containers) == "blocks1.0"
    assert module_group("blocks1.0.lif", containers) == "blocks1.0"
    assert module_group("blocks1.0", containers) == "blocks1.0"  # residual adds run in the block's own forward
    assert module_group("blocks1.0.mlp.fc1", containers) == "blocks1.0.mlp"
    assert module_group("blocks3.0", containers) == "blocks3.0"
    assert module_group("blocks3.0.attn.product", containers) == "blocks3.0.attn"
    assert module_group("", containers) == "(model)"


def test_missing_energy_is_a_clear_error():
    with pytest.raises(EnergyError, match="energy=True"):
        rate_vs_share(_analysis(None))


def test_breakdown_on_svformer_tiny():
    torch.manual_seed(0)
    model = create_model("svformer_tiny")
    samples = [SimpleNamespace(video_id=f"v{i}", label=i, views=torch.randn(2, 3, 8, 64, 64)) for i in range(2)]
    a = analyse(model, samples)
    a.energy = energy_breakdown(model, samples)
    e = a.energy
    assert e.num_videos == 2 and e.profile
    pv = energy_per_video(a)
    assert list(pv["model"].unique()) == ["SNN", "ANN twin (ReLU)"] and (pv["views"] == 2).all()
    assert pv["energy_uj"].tolist() == pytest.approx((pv["energy_pj"] * 1e-6).tolist())
    # the summed table and the per-video totals agree (same counts, summed two ways)
    snn = pv[pv["model"] == "SNN"]
    assert e.counts["energy_pj"].sum() == pytest.approx(snn["energy_pj"].sum(), rel=1e-9)
    syn = e.counts[e.counts["op_class"].isin(["mac", "ac", "spike_product"])]["count"].sum()
    assert syn == snn["synaptic_ops"].sum()
    # the ANN twin executes every synapse densely: more synaptic ops than the SNN on the same views
    ann = pv[pv["model"] == "ANN twin (ReLU)"]
    assert (ann["synaptic_ops"].to_numpy() > snn["synaptic_ops"].to_numpy()).all()
    # dense products by hand, per view and timestep: K^T V is h*d*N*d, Q (K^T V) is h*N*d*d
    # stage 3: 96 ch = 3 heads x 32, N = 4x4 tokens; stage 4: 128 ch = 4 heads x 32, N = 2x2
    p = attention_products(a).set_index("block")
    assert p.loc["blocks3.0.attn", "dense"] == 2 * (2 * 3 * 32 * 16 * 32) * 8
    assert p.loc["blocks4.0.attn", "dense"] == 2 * (2 * 4 * 32 * 4 * 32) * 8
    assert (p["count"] <= p["dense"]).all()
    s = rate_vs_share(a)
    assert s["ops_share"].sum() == pytest.approx(1.0) and s["energy_share"].sum() == pytest.approx(1.0)
    assert list(s["group"][:3]) == ["patch_embed1", "blocks1.0", "blocks1.0.mlp"] and s["group"].iloc[-1] == "head"
    assert pd.isna(s.set_index("group").loc["patch_embed1", "rate"])  # analog frames in, no neuron


def test_attention_products_per_video_by_hand():
    counts = pd.DataFrame({"group": ["b.attn"] * 3, "layer": ["b.attn.product"] * 3, "timestep": [0, 1, 1],
                           "op_class": ["spike_product", "spike_product", "scale_mul"], "count": [10, 20, 99],
                           "energy_pj": [1.0, 2.0, 3.0]})
    dense = pd.DataFrame({"group": ["b.attn"] * 2, "layer": ["b.attn.product", "b.attn.proj"],
                          "op_class": ["mac", "mac"], "count": [200, 1000]})
    e = EnergyBreakdown(profile="p", counts=counts, dense=dense, per_video=pd.DataFrame(), num_videos=2)
    p = attention_products(_analysis(e))
    assert p.to_dict("records") == [{"block": "b.attn", "product": "K^T V + Q (K^T V)", "count": 15.0,
                                     "dense": 100.0, "fraction": 0.15}]


def test_baselines_are_placed_as_energy_report_places_them():
    """A new user drew r3d_18 at its own 16x112x112 input in one chart with the SNN: baselines now run on the
    SNN's own input (one code path with ``energy report``), and one that cannot is kept apart."""
    from svformer_deploy.analysis.plots import plot_energy_comparison
    from svformer_deploy.energy import energy_of
    from svformer_deploy.energy.baselines import baseline_counts

    torch.manual_seed(0)
    model = create_model("svformer_tiny")
    cfg = model.config
    samples = [SimpleNamespace(video_id="v0", label=0, views=torch.randn(2, *cfg.input_shape))]
    a = analyse(model, samples)
    a.energy = energy_breakdown(model, samples, profile="loihi", baselines=("svformer-ann", "r3d_18", "s3d"))
    pv = energy_per_video(a).set_index("model")
    assert list(pv.index) == ["SNN", "ANN twin (ReLU)", "r3d_18 (ANN, SNN's input)",
                              "s3d (ANN, own input 3x16x224x224)"]
    assert pv["same_input"].tolist() == [True, True, True, False]
    # the ANNs' arithmetic is priced as energy report prices it beside a Loihi SNN
    assert pv["profile"].tolist() == ["loihi", "45nm-fp32", "45nm-fp32", "45nm-fp32"]
    on_snn_input = baseline_counts("r3d_18", cfg, tuple(cfg.input_shape))
    assert pv.loc["r3d_18 (ANN, SNN's input)", "energy_pj"] == pytest.approx(2 * energy_of(on_snn_input).compute_pj)
    fig = plot_energy_comparison(a)
    ax = fig.axes[0]
    ticks = " ".join(t.get_text() for t in ax.get_yticklabels())
    assert "r3d_18" in ticks and "s3d" not in ticks  # never drawn beside the SNN
    assert "shown apart" in ax.get_xlabel() and "s3d" in ax.get_xlabel()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # the title fits in the figure (a new user saw it cut off)
    box, width = ax.title.get_window_extent(), fig.bbox.width
    assert box.x0 >= 0 and box.x1 <= width
