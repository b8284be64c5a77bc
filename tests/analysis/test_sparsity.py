"""Firing-rate tables of svformer_deploy.analysis against hand-computed spikes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from svformer_deploy.analysis import (
    analyse,
    attention_qkv_rates,
    mean_rate_by_layer,
    rate_by_class,
    rate_by_correctness,
    rate_spread_by_video,
)
from svformer_deploy.errors import DataError, InputShapeError
from svformer_deploy.models import PLIF, create_model


class TwoLayer(nn.Module):
    """x (B, 1, T, 1, 4) -> PLIF "a" on x, PLIF "b" on 2 * x; logits = [sum of a's spikes, 1.5 (constant)].

    With 1/tau = 0.5 (w = 0) and V_th = 1, a constant input 3 gives h = 1.5 >= 1 at every step (fires every
    step); input 1.5 gives h = 0.75, then 0.75 + 0.375 = 1.125 (fires at t=1, reset), so it fires at odd t;
    input 0 never fires.
    """

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = PLIF(), PLIF()
        for n in (self.a, self.b):
            nn.init.zeros_(n.w)

    def forward(self, x):
        x = x.permute(2, 0, 1, 3, 4)  # (T, B, 1, 1, 4)
        sa = self.a(x)
        self.b(2 * x)
        score = sa.sum(dim=(0, 2, 3, 4))  # (B,)
        return torch.stack([score, torch.full_like(score, 1.5)], dim=1)


def _video(vid, label, per_view_values, T=4):
    """Views (V, 1, T, 1, 4): view v has the 4 neurons set to per_view_values[v] (constant in time)."""
    vals = torch.tensor(per_view_values, dtype=torch.float32)  # (V, 4)
    return SimpleNamespace(video_id=vid, label=label, views=vals[:, None, None, None, :].expand(-1, 1, T, 1, 4).clone())


def test_rates_match_hand_counted_spikes():
    # video "v0": one view, neurons [3, 1.5, 0, 0]:
    #   layer a: t even -> 1 spike of 4 (0.25), t odd -> 2 of 4 (0.5)
    #   layer b (input 6, 3, 0, 0): 2 of 4 every step (0.5)
    # video "v1": two views [3,3,3,3] and [0,0,0,0]: layer a and b: 4 of 8 every step (0.5)
    samples = [_video("v0", 0, [[3, 1.5, 0, 0]]), _video("v1", 1, [[3, 3, 3, 3], [0, 0, 0, 0]])]
    a = analyse(TwoLayer(), samples, class_names=["big", "small"])
    assert a.layers == ("a", "b")
    assert list(a.rates.columns[:6]) == ["layer", "timestep", "video", "class", "correct", "rate"]
    r = a.rates.set_index(["layer", "video", "timestep"])["rate"]
    assert [r[("a", "v0", t)] for t in range(4)] == [0.25, 0.5, 0.25, 0.5]
    assert [r[("b", "v0", t)] for t in range(4)] == [0.5] * 4
    assert [r[("a", "v1", t)] for t in range(4)] == [0.5] * 4
    assert (a.rates["neurons"] == 4).all()
    # v0: logits [6, 1.5] -> class 0 (label 0, correct)
    # v1: logits [16, 1.5] and [0, 1.5]; softmax summed over views ~ [1.00 + 0.18, 0.00 + 0.82] -> class 0 (wrong)

    p = a.predictions.set_index("video")
    assert p.loc["v0", "predicted"] == 0 and bool(p.loc["v0", "correct"])
    assert p.loc["v1", "predicted"] == 0 and not bool(p.loc["v1", "correct"])
    assert p.loc["v1", "class"] == "small" and p.loc["v1", "views"] == 2
    assert a.accuracy == 0.5
    # the tidy CSV view has exactly the four documented columns, layers in network order
    csv = a.tidy_csv()
    assert list(csv.columns) == ["layer", "timestep", "video", "rate"]
    assert list(dict.fromkeys(csv["layer"])) == ["a", "b"] and len(csv) == 2 * 4 * 2


def test_prediction_sums_softmax_over_views():
    # views: one with logits [16, 1.5], three with [0, 1.5]. Summed logits [16, 6] would say class 0;
    # summed softmax [1.00 + 3 x 0.18, 0.00 + 3 x 0.82] = [1.55, 2.45] says class 1 (the documented rule).
    v = _video("v", 1, [[3, 3, 3, 3], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    a = analyse(TwoLayer(), [v])
    assert a.predictions.loc[0, "predicted"] == 1 and bool(a.predictions.loc[0, "correct"])
    assert a.rates.set_index(["layer", "timestep"]).loc[("a", 0), "rate"] == 0.25


def test_summaries_average_as_documented():
    samples = [_video("v0", 0, [[3, 1.5, 0, 0]]), _video("v1", 1, [[3, 3, 3, 3], [0, 0, 0, 0]])]
    a = analyse(TwoLayer(), samples, class_names=["big", "small"])
    m = mean_rate_by_layer(a).set_index(["layer", "timestep"])["rate"]
    assert m[("a", 0)] == pytest.approx((0.25 + 0.5) / 2) and m[("a", 1)] == pytest.approx(0.5)
    s = rate_spread_by_video(a).set_index(["layer", "video"])["rate"]
    assert s[("a", "v0")] == pytest.approx(0.375) and s[("a", "v1")] == pytest.approx(0.5)
    c = rate_by_class(a).set_index(["layer", "class"])
    assert c.loc[("a", "big"), "rate"] == pytest.approx(0.375) and c.loc[("a", "small"), "videos"] == 1
    k = rate_by_correctness(a).set_index(["layer", "correct"])
    assert k.loc[("a", True), "rate"] == pytest.approx(0.375) and k.loc[("a", False), "rate"] == pytest.approx(0.5)
    assert k.loc[("a", True), "videos"] == 1
    assert attention_qkv_rates(a).empty


def test_svformer_tiny_layers_in_network_order_and_qkv():
    torch.manual_seed(0)
    model = create_model("svformer_tiny")
    samples = [SimpleNamespace(video_id=f"v{i}", label=i, views=torch.randn(1, 3, 8, 64, 64)) for i in range(2)]
    a = analyse(model, samples)
    # execution order: the local path runs on the stage-3 input, before the stage-3 attention block
    expected = ["blocks1.0.lif", "blocks1.0.mlp.lif1", "blocks1.0.mlp.lif2", "patch_embed2.lif",
                "blocks2.0.lif", "blocks2.0.mlp.lif1", "blocks2.0.mlp.lif2", "patch_embed3.lif", "local_path.lif",
                "blocks3.0.attn.lif_in", "blocks3.0.attn.lif_q", "blocks3.0.attn.lif_k", "blocks3.0.attn.lif_v",
                "blocks3.0.attn.lif_proj", "blocks3.0.mlp.lif1", "blocks3.0.mlp.lif2", "patch_embed4.lif",
                "blocks4.0.attn.lif_in", "blocks4.0.attn.lif_q", "blocks4.0.attn.lif_k", "blocks4.0.attn.lif_v",
                "blocks4.0.attn.lif_proj", "blocks4.0.mlp.lif1", "blocks4.0.mlp.lif2", "head.lif"]
    assert list(a.layers) == expected
    assert len(a.rates) == len(expected) * 8 * 2
    assert a.rates["rate"].between(0, 1).all()
    # neurons per timestep: blocks1 at 16x16 with 32 channels; attention Q of stage 3: 96 ch x 4x4 tokens
    n = a.rates.drop_duplicates("layer").set_index("layer")["neurons"]
    assert n["blocks1.0.lif"] == 32 * 16 * 16 and n["blocks3.0.attn.lif_q"] == 96 * 16 and n["head.lif"] == 256 * 2 * 2
    q = attention_qkv_rates(a)
    assert list(q["block"].cat.categories) == ["blocks3.0.attn", "blocks4.0.attn"]
    assert len(q) == 2 * 3 * 8
    assert a.meta["model"] == "svformer_tiny" and a.meta["timesteps"] == 8 and a.meta["views_per_video"] == [1]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(DataError, match="no videos"):
        analyse(TwoLayer(), [])
    with pytest.raises(InputShapeError, match="views must be"):
        analyse(TwoLayer(), [SimpleNamespace(video_id="x", label=0, views=torch.zeros(1, 4, 1, 4))])
