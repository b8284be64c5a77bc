"""Verification bookkeeping: ties at threshold, layouts, per-layer counts."""

import torch

from svformer_deploy.exporters.verify import LayerStats, record_ties, to_map_layout
from svformer_deploy.models.neurons import PLIF


def test_record_ties_finds_exact_threshold_hits():
    lif = PLIF(tau_init=2.0)  # sigmoid(w) = 0.5 exactly
    x = torch.tensor([[[2.0, 1.0, 4.0]], [[0.5, 2.0, 1.0]]])  # (T=2, B=1, 3)
    with record_ties(lif) as margins:
        s = lif(x)
    # t0: H = [1.0, 0.5, 2.0] -> tie at 0; t1: V = [0, 0.5, 0]; H = [0.25, 1.25, 0.5]
    assert margins[""][0].tolist() == [[[True, False, False]], [[False, False, False]]]
    assert s[0, 0].tolist() == [1.0, 0.0, 1.0]


def test_layer_stats_separates_tie_disagreements():
    st = LayerStats.empty(2)
    ref = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    got = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    tie = torch.tensor([[True, False, False], [False, False, False]])
    st.update(ref, got, tie)
    j = st.to_json()
    assert (j["neuron_steps"], j["agree"], j["disagree"], j["ties"], j["disagree_at_ties"], j["disagree_not_ties"]) \
        == (6, 4, 2, 1, 1, 1)
    assert j["agreement_per_timestep"] == [2 / 3, 2 / 3]


def test_layouts_of_attention_layers():
    T, B, h, H, W, d = 2, 1, 2, 2, 3, 4
    C, N = h * d, H * W
    m = torch.arange(T * B * C * N, dtype=torch.float32).reshape(T, B, C, H, W)  # bundle layout
    tokens = m.reshape(T, B, C, N).transpose(2, 3)  # (T, B, N, C)
    heads = tokens.reshape(T, B, N, h, d).permute(0, 1, 3, 2, 4)  # (T, B, h, N, d)
    assert torch.equal(to_map_layout("blocks3.0.attn.lif_in", tokens, (C, H, W)), m)
    assert torch.equal(to_map_layout("blocks3.0.attn.lif_q", heads, (C, H, W)), m)
    assert torch.equal(to_map_layout("blocks1.0.lif", m, (C, H, W)), m)
