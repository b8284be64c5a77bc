"""Splitting, the constraint check, placement, event counts and costs of a mapping."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml

from svformer_deploy.chip.arch import load_chip, parse_chip
from svformer_deploy.chip.check import ChipConstraintError
from svformer_deploy.chip.cost import step_costs
from svformer_deploy.chip.events import CoreEvents, events_from_rates, events_from_run
from svformer_deploy.chip.mapping import build_mapping
from svformer_deploy.chip.place import Fabric, placement_cost, random_placement, row_major
from tests.chip.conftest import small_plan

LOIHI_FILE = resources.files("svformer_deploy.chip") / "chips" / "loihi.yaml"  # the installed package's (compat.sh)


def _chip_with(tmp_path: Path, **core_attrs) -> Path:
    doc = yaml.safe_load(LOIHI_FILE.read_text())
    doc["architecture"]["tile"][0]["core"][0]["attributes"].update(core_attrs)
    p = tmp_path / "my chip.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _exact_axons_in(m, block) -> int:
    """Distinct source neurons with a non-zero weight into the block, by brute force."""
    layer = m.network.layer(block.layer)
    total = 0
    for t, w in zip(layer.terms, m.fixed[block.layer].weights):
        ci, hi, wi = t.in_shape
        seen = set()
        for o in range(*block.channels):
            for y in range(*block.rows):
                for x in range(*block.cols):
                    i, ky, kx = np.nonzero(w[o])
                    iy, ix = y * t.stride - t.padding + ky, x * t.stride - t.padding + kx
                    ok = (iy >= 0) & (iy < hi) & (ix >= 0) & (ix < wi)
                    seen.update(zip(i[ok].tolist(), iy[ok].tolist(), ix[ok].tolist()))
        total += len(seen)
    return total


def test_every_block_fits_its_core(tiny_mapping):
    _, m, _, _ = tiny_mapping
    lim = m.chip.limits
    bits = m.chip.number_format.weight_bits
    for b in m.blocks:
        assert b.neurons <= lim.neurons
        if b.layer not in m.fixed:
            continue
        fan = sum(g.fan_in() for g in m.geometry[b.layer])
        conn = int(np.asarray(fan)[b.channels[0]:b.channels[1], b.rows[0]:b.rows[1], b.cols[0]:b.cols[1]].sum()) \
            if m.geometry[b.layer] else 0
        assert conn * bits <= lim.synapse_memory_bits
    for b in m.blocks[::7]:  # brute-force distinct inputs on a sample of blocks
        if b.layer in m.fixed:
            exact = _exact_axons_in(m, b)
            assert exact <= m.splits[b.layer].demand["axons_in"] <= lim.axons_in


def test_cores_under_each_limit_and_the_binding_one(tiny_mapping):
    _, m, _, _ = tiny_mapping
    for g in m.groups:
        s = m.splits[g]
        known = {k: v for k, v in s.cores_by_limit.items() if v is not None}
        assert s.blocks >= max(known.values())
        if s.binding != "combined":
            assert known[s.binding] == s.blocks


def test_a_tight_axon_limit_becomes_the_binding_limit(tmp_path):
    plan = small_plan()
    wide = build_mapping(plan, ["a", "b", "c"], load_chip("loihi"))
    tight = build_mapping(plan, ["a", "b", "c"], load_chip(_chip_with(tmp_path, max_axons_in=100)))
    assert tight.splits["c"].binding == "axons_in"
    assert tight.splits["c"].blocks > wide.splits["c"].blocks
    assert tight.splits["c"].demand["axons_in"] <= 100


def test_fan_in_over_the_axon_limit_is_one_line_naming_layer_limit_value_and_fix(tmp_path):
    with pytest.raises(ChipConstraintError) as err:
        build_mapping(small_plan(), ["a", "b", "c"], load_chip(_chip_with(tmp_path, max_axons_in=20)))
    lines = str(err.value).splitlines()
    assert "nothing was written" in lines[0]
    c = [ln for ln in lines if ln.startswith("c: fan-in")]
    # c's neuron reads a 3x3 window of a (4 channels) and of b (5 channels): 36 + 45 = 81 inputs
    assert c == ["c: fan-in (input axons of one neuron) 81 > 20 input axons per core; fix: pass "
                 "--host-fallback to compute this layer's largest input terms on the host, or narrow the layer "
                 "(fewer channels or a smaller kernel)"]


def test_host_fallback_moves_the_largest_term_to_the_host(tmp_path):
    m = build_mapping(small_plan(), ["a", "b", "c"], load_chip(_chip_with(tmp_path, max_axons_in=40)),
                      host_fallback=True)
    moved = m.host.moved_terms
    assert moved and moved[0][:2] == ("c", "b")  # b's term (45 inputs) is the larger one
    assert [t.source for t in m.network.layer("c").terms] == ["a"]
    assert "b" in m.host.chip_spikes_read


def test_truenorth_refuses_plif_and_many_weight_values():
    with pytest.raises(ChipConstraintError) as err:
        build_mapping(small_plan(), ["a", "b", "c"], load_chip("truenorth"))
    text = str(err.value)
    lines = text.splitlines()[1:]
    assert "a: neuron model PLIF (multiplicative leak 1 - 1/tau, hard reset) is not held by the chip's 'truenorth' " \
           "soma; fix: choose a chip whose soma is SANA-FE's leaky_integrate_fire (e.g. --chip loihi)" in lines
    assert any(ln.startswith("a: input currents computed on the host from frames are not accepted") for ln in lines)
    # four axon types: at most four distinct weights per neuron, c's neurons use many more
    assert any(ln.startswith("c: distinct weights per neuron ") and "> 4 (axon types)" in ln for ln in lines)


def test_placement_beats_row_major_and_random_on_hops_and_is_deterministic(tiny_mapping):
    _, m, _, _ = tiny_mapping
    ours = placement_cost(m.fabric, m.placement.core, m.edges)
    n = len(m.blocks)
    assert ours <= placement_cost(m.fabric, row_major(m.fabric, n), m.edges)
    for seed in range(5):
        assert ours < placement_cost(m.fabric, random_placement(m.fabric, n, seed), m.edges)
    again = build_mapping(m.network.plan, [layer.name for layer in m.network.layers], m.chip)
    assert np.array_equal(again.placement.core, m.placement.core)


def test_multi_chip_fabric_locations():
    chip = load_chip("loihi")
    fab = Fabric.for_cores(chip, 300)  # 3 chips -> 2 x 2 grid, 3 used
    assert (fab.chips, fab.chips_x, fab.chips_y) == (3, 2, 2)
    chip_i, tile, sub, X, Y = fab.locate(np.array([0, 127, 128, 256]))
    assert chip_i.tolist() == [0, 0, 1, 2] and X.tolist() == [0, 7, 8, 0] and Y.tolist() == [0, 3, 0, 4]
    assert fab.core_at(8, 0, 0) == 128


def test_event_counts_are_consistent_with_the_run(tiny_mapping):
    _, m, run, _ = tiny_mapping
    ev = events_from_run(m, run.layers, run.host_spikes, 0)
    assert ev.messages_in.sum() == ev.messages_out.sum() > 0
    assert ev.synaptic_events.sum() == sum(int(a.events[:, 0].sum()) for a in run.layers.values())
    assert ev.fired.sum() == sum(int(a.spikes[:, 0].sum()) for a in run.layers.values())
    # every message of a neuron goes to a distinct core, so messages <= spikes x destination cores
    assert (ev.hops_east + ev.hops_west + ev.hops_north + ev.hops_south).sum() >= 0
    rates = {k: float(a.spikes[:, 0].mean()) for k, a in run.layers.items()}
    er = events_from_rates(m, rates, ev.timesteps)
    assert er.fired.sum() == pytest.approx(ev.fired.sum(), rel=1e-9)  # the same spikes on average


def test_energy_and_time_by_hand():
    chip = load_chip("loihi")
    c = chip.costs
    z = np.zeros((1, 2))
    ev = CoreEvents(neurons=np.array([10.0, 4.0]), is_input=np.array([False, True]),
                    updated=np.array([[6.0, 2.0]]), fired=np.array([[3.0, 2.0]]),
                    synaptic_events=np.array([[50.0, 0.0]]), messages_in=np.array([[2.0, 0.0]]),
                    messages_out=np.array([[0.0, 2.0]]), hops_east=np.array([[2.0, 0.0]]), hops_west=z,
                    hops_north=z, hops_south=z, inter_chip_hops=z, max_route_hops=np.array([1.0]),
                    max_route_latency=np.array([c.hop_east[1]]))
    sc = step_costs(ev, chip, mapped_tiles=2)
    energy = (10 * 51.2 + 6 * 21.6 + 3 * 69.3 + 50 * 35.5 + 2 * 111.0 + 2 * 3.0) * 1e-12
    assert sc.total_energy[0] == pytest.approx(energy, rel=1e-12)
    gen0 = 10 * 6.0e-9 + 6 * 3.7e-9 + 3 * 30.0e-9  # the input block's soma costs nothing
    proc0 = 2 * 16.0e-9 + 50 * 3.8e-9
    gen1 = 2 * 5.1e-9
    assert sc.compute[0] == pytest.approx(max(gen0, proc0, gen1))
    assert sc.time[0] == pytest.approx(max(gen0, proc0) + 4.1e-9 + 1.0e-6)  # + one east hop + sync(2 tiles)


def test_a_user_chip_file_without_limits_checks_only_neurons(tmp_path):
    doc = yaml.safe_load(LOIHI_FILE.read_text())
    del doc["svformer_deploy"]
    attrs = doc["architecture"]["tile"][0]["core"][0]["attributes"]
    for k in ("max_axons_in", "max_axons_out", "max_synapse_memory_bits"):
        del attrs[k]
    chip = parse_chip(yaml.safe_dump(doc), "user.yaml")
    assert chip.checked_limits() == ["neurons per core"] and not chip.number_format.stated
    m = build_mapping(small_plan(), ["a", "b", "c"], chip)
    assert m.splits["c"].binding == "neurons"


def test_weights_that_round_to_0_are_stated_not_refused():
    """A layer whose one large weight forces exponent 0 loses its small weights to rounding: the mapping is built
    (a precision loss is not a chip limit, the measured agreement decides) and the summary states the loss.
    (A trained svformer_tiny lost 78% of blocks4.0.mlp.lif1's weights at exponent 5 and used to be refused.)"""
    from svformer_deploy.chip.report import mapping_summary

    plan = small_plan()
    w = np.full((5, 4, 1, 1), 0.3)  # b: tau 1.5, so k W / V_th = 0.2 -> 0
    w[:, 0] = 150.0                 # -> 100 at 2^0; 200 at 2^1 would not fit [-128, 127]: exponent 0
    plan.params["s1.weight"] = w
    m = build_mapping(plan, ["a", "b", "c"], load_chip("loihi"))
    assert m.fixed["b"].exponent == 0 and m.fixed["b"].zeroed_weights == 15
    p = mapping_summary(m)["precision"]
    assert p["layers_most_rounded"][0] == {"layer": "b", "share": 0.75, "weights": 20, "rounded_to_0": 15,
                                           "exponent": 0}
    rest = {x: m.fixed[x].zeroed_weights for x in ("a", "c")}
    nonzero = {x: sum(int(np.count_nonzero(t.weight)) for t in m.network.layer(x).terms) for x in ("a", "c")}
    assert p["rounded_to_0"] == 15 + sum(rest.values()) and p["weights"] == 20 + sum(nonzero.values())
    shares = [r["share"] for r in p["layers_most_rounded"]]
    assert shares == sorted(shares, reverse=True)


def test_chip_figures_put_the_float_models_top1_and_agreement_beside_the_chip_models(tiny_mapping):
    import torch

    from svformer_deploy.chip.service import chip_figures, float_reference

    model, m, run, x = tiny_mapping
    labels = torch.tensor([0, 3])
    chip_pred = run.logits.argmax(1)
    classes = model.config.num_classes

    def always_0(clips):
        return torch.eye(classes)[[0] * len(clips)]

    fig = chip_figures(m, [(x, labels)], config=model.config.to_dict(), reference=always_0)
    assert fig.accuracy == float((chip_pred == labels).float().mean())
    assert fig.reference_accuracy == 0.5  # always class 0: right on the first clip only
    assert fig.prediction_agreement == float((chip_pred == 0).float().mean())
    with torch.no_grad():
        float_pred = model.eval()(x).argmax(1)
    fig = chip_figures(m, [(x, labels)], config=model.config.to_dict(), reference=float_reference(model))
    assert fig.prediction_agreement == float((float_pred == chip_pred).float().mean())
    assert fig.reference_accuracy == float((float_pred == labels).float().mean())
    assert chip_figures(m, [(x, labels)], config=model.config.to_dict()).prediction_agreement is None


def test_the_host_computes_and_counts_a_shared_frame_convolution_once(tiny_mapping):
    """svformer_tiny's three first chip layers all take currents from the frames' convolution (32 x 3 x 6 x 6,
    stride 4, padding 1, on 32 x 32 frames); the host computes it once per step, not once per layer."""
    from svformer_deploy.chip.edges import INPUT_PREFIX
    from svformer_deploy.chip.service import expected_host_counts

    _, m, run, x = tiny_mapping
    frame_terms = [(layer.name, h) for layer in m.network.layers for h in layer.host_terms if h.source == "frames"]
    assert [name for name, _ in frame_terms] == ["blocks1.0.lif", "blocks1.0.mlp.lif1", "patch_embed2.lif"]
    assert len({h.prefixes()[0] for _, h in frame_terms}) == 1
    from svformer_deploy.chip.run import shared_partials

    assert shared_partials(m.network) == {frame_terms[0][1].prefixes()[0]}  # only what is shared is kept
    # in-bounds taps per output row (and column): 5, 6 x 6, 5 = 46; every weight non-zero; T = 8 steps
    frames_conv = 8 * 32 * 3 * 46 * 46
    classifier = m.network.plan.params["head.readout.fc_weight"].size
    assert run.host_counts["mac"].tolist() == [frames_conv + classifier] * len(x)
    rates = {g.removeprefix(INPUT_PREFIX): 0.1 for g in m.groups} | {"head.lif": 0.1}
    assert expected_host_counts(m, rates, 8)["mac"] == frames_conv + classifier
