"""Verification bookkeeping: ties at threshold, layouts, per-layer counts."""

import torch

from svformer_deploy.exporters.compare import LayerStats, clip_divergences, first_divergence, record_ties
from svformer_deploy.models import create_model
from svformer_deploy.models.neurons import PLIF
from svformer_deploy.models.recording import from_chw, to_chw


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


def test_record_ties_marks_near_threshold_apart_from_exact_ties():
    lif = PLIF(tau_init=2.0)
    x = torch.tensor([[[2.0, 2.0 + 1e-5, 2.0 - 1e-4]]])  # H = [1, 1 + 5e-6, 1 - 5e-5]
    with record_ties(lif) as margins:
        lif(x)
    tie, near = margins[""]
    assert tie.tolist() == [[[True, False, False]]] and near.tolist() == [[[True, True, False]]]


def test_layer_stats_counts_each_timestep_of_batched_maps():
    """(T, B, C, H, W) counts per timestep: disagreements at ties, near threshold (not ties), and elsewhere."""
    T, B, C, H, W = 3, 2, 2, 2, 2
    ref = torch.zeros(T, B, C, H, W)
    got = ref.clone()
    tie = torch.zeros(T, B, C, H, W, dtype=torch.bool)
    near = tie.clone()
    got[0, 1, 1, 0, 1] = 1.0                                  # t0: a flip at a tie
    tie[0, 1, 1, 0, 1] = near[0, 1, 1, 0, 1] = True
    tie[0, 0, 0, 0, 0] = near[0, 0, 0, 0, 0] = True           # t0: a tie that agrees
    got[2, 0, 0, 1, 1] = got[2, 1, 0, 0, 0] = 1.0              # t2: one flip near threshold, one elsewhere
    near[2, 0, 0, 1, 1] = True
    st = LayerStats.empty(T)
    st.update(ref, got, tie, near)
    st.update(ref, ref, tie, near)                            # a second batch adds to the counts
    assert st.n == [32, 32, 32] and st.agree == [31, 32, 30]
    assert st.ties == [4, 0, 0] and st.disagree_at_ties == [1, 0, 0]
    assert st.near == [4, 0, 2] and st.disagree_near == [0, 0, 1]
    j = st.to_json()
    assert (j["disagree"], j["disagree_at_ties"], j["disagree_near_threshold"], j["disagree_not_ties"]) == (3, 1, 1, 2)


def test_each_clip_of_a_batch_gets_its_own_first_divergence():
    """Clip 0 flips at a tie in layer a at t = 0; clip 1 flips away from threshold in layer b at t = 1. The
    batch's first divergence is clip 0's (explained); per clip, clip 1's unexplained one is found too."""
    T, B, n = 2, 2, 4
    ref = {k: torch.zeros(T, B, n) for k in ("a", "b")}
    got = {k: v.clone() for k, v in ref.items()}
    masks = {k: (torch.zeros(T, B, n, dtype=torch.bool), torch.zeros(T, B, n, dtype=torch.bool)) for k in ref}
    got["a"][0, 0, 2] = 1.0
    masks["a"][0][0, 0, 2] = masks["a"][1][0, 0, 2] = True
    got["b"][1, 1, 0] = 1.0
    assert first_divergence(["a", "b"], ref, got, masks)["explained"]
    per_clip = clip_divergences(["a", "b"], ref, got, masks, first_clip=8)
    assert [(d["batch_first_clip"], d["layer"], d["timestep"], d["at_ties"], d["explained"]) for d in per_clip] \
        == [(8, "a", 0, 1, True), (9, "b", 1, 0, False)]
    assert clip_divergences(["a", "b"], ref, ref, masks) == []


def test_layouts_of_attention_layers():
    T, B, h, H, W, d = 2, 1, 2, 2, 3, 4
    C, N = h * d, H * W
    m = torch.arange(T * B * C * N, dtype=torch.float32).reshape(T, B, C, H, W)  # bundle layout
    tokens = m.reshape(T, B, C, N).transpose(2, 3)  # (T, B, N, C)
    heads = tokens.reshape(T, B, N, h, d).permute(0, 1, 3, 2, 4)  # (T, B, h, N, d)
    for layout, x in (("tokens", tokens), ("heads", heads), ("chw", m)):
        assert torch.equal(to_chw(x, layout, (C, H, W)), m)
        assert torch.equal(from_chw(m, layout, x), x)


def test_every_neuron_layer_declares_the_layout_of_its_output():
    """The declared layout is the real one: converting each recorded output to (C, H, W) and back is lossless
    and gives the shape the layer's stage has (no layout is inferred from a layer's name)."""
    from svformer_deploy.models import iter_neurons, record_spikes

    m = create_model("svformer_tiny").eval()
    with torch.no_grad(), record_spikes(m) as rec:
        m(torch.randn(1, *m.config.input_shape))
    layouts = {n: mod.layout for n, mod in iter_neurons(m)}
    assert layouts["blocks1.0.lif"] == "chw" and layouts["blocks3.0.attn.lif_q"] == "heads"
    assert layouts["blocks3.0.mlp.lif1"] == "tokens" and layouts["head.lif"] == "chw"
    for name, x in rec.spikes.items():
        n_units = x[0, 0].numel()
        side = {"chw": x.shape[-1], "tokens": int(x.shape[2] ** 0.5), "heads": int(x.shape[3] ** 0.5)}[layouts[name]]
        chw = to_chw(x, layouts[name], (n_units // side ** 2, side, side))
        assert torch.equal(from_chw(chw, layouts[name], x), x), name


def test_every_column_of_the_verification_table_is_documented():
    """docs/export.md explains each column of the NIR table (the tester met an unexplained ``min/t``)."""
    from pathlib import Path

    from svformer_deploy.exporters.nir.verify import TABLE_COLUMNS, format_report

    layer = {"agreement": 0.5, "agreement_per_timestep": [1.0, 0.25], "disagree": 3, "ties": 2,
             "disagree_at_ties": 1}
    report = {"layers": {"blocks1.0.lif": layer}, "spike_agreement": 0.5, "neuron_steps": 8,
              "disagree_not_ties": 2, "disagree_at_ties": 1, "ties": 2, "clips": 1, "logits_max_abs_diff": 0.1,
              "top1_agreement": 1.0, "runtimes": {}, "approximations": [], "first_divergences": [],
              "verdict": "failed", "near_threshold_tolerance": 1e-5}
    header, row = format_report(report).splitlines()[:2]
    for column in TABLE_COLUMNS:
        assert column in header
    assert row.split()[1:3] == ["50.0000%", "25.000%"]  # agreement, worst t: the lowest per-timestep agreement
    docs = (Path(__file__).parents[2] / "docs" / "export.md").read_text(encoding="utf-8")
    table = docs[docs.index("### Reading the verification output"):]
    for column in TABLE_COLUMNS:
        assert f"| `{column}` |" in table, column
