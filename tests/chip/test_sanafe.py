"""The chip model against SANA-FE itself: the same network, integers, placement and input spikes give equal
counts and energy, and SANA-FE's simple-model time, per timestep."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from svformer_deploy.chip.arch import load_chip
from svformer_deploy.chip.mapping import build_mapping
from svformer_deploy.chip.run import run_chip
from svformer_deploy.chip.sanafe_verify import fabric_arch, sanafe_available, verify_units
from tests.chip.conftest import small_plan

pytestmark = pytest.mark.skipif(sanafe_available() is not None,
                                reason="SANA-FE is not installed (pip install 'svformer-deploy[sanafe]')")


def _assert_equal_units(results):
    for r in results:
        assert r.passed, (r.layer, r.problems)
        for k in ("fired", "updated", "synaptic_events", "hops"):
            assert r.ours[k] == r.sanafe[k], (r.layer, k)
        assert np.allclose(r.ours["energy"], r.sanafe["energy"], rtol=1e-9)
        assert sum(r.sanafe["synaptic_events"]) > 0


def test_small_network_units_equal_sanafe_per_timestep(tmp_path):
    plan = small_plan()
    m = build_mapping(plan, ["a", "b", "c"], load_chip("loihi"))
    frames = torch.randn(1, 2, 6, 6, 6, generator=torch.Generator().manual_seed(5)) * 2
    run = run_chip(m.network, m.fixed, m.chip.number_format, frames)
    results = verify_units(m, run, tmp_path)
    assert [r.layer for r in results] == ["a", "b", "c"]  # 'a' is driven by host currents only
    assert results[0].synapses == 0 and sum(results[0].sanafe["fired"]) > 0
    _assert_equal_units(results[1:])
    assert results[0].passed, results[0].problems
    assert (tmp_path / "arch.yaml").is_file() and (tmp_path / "c.yaml").is_file()  # SANA-FE's own format


def test_svformer_tiny_units_with_host_currents_and_hops(tiny_mapping, tmp_path):
    _, m, run, _ = tiny_mapping
    results = verify_units(m, run, tmp_path, layers=["blocks1.0.mlp.lif2", "head.lif"])
    _assert_equal_units(results)
    assert any(sum(r.sanafe["hops"]) > 0 for r in results)


def test_fabric_arch_is_the_chip_tile_over_the_whole_mesh(tiny_mapping, tmp_path):
    import sanafe

    _, m, _, _ = tiny_mapping
    doc = fabric_arch(m, input_units=8)
    tile = doc["architecture"]["tile"][0]
    assert tile["name"].endswith(f"[0..{m.fabric.width * m.fabric.height - 1}]")
    assert "svformer_deploy" not in doc and "loihi_inputs[0..7]" in yaml.safe_dump(doc)
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert len(sanafe.load_arch(str(path)).cores()) == m.fabric.width * m.fabric.height * m.chip.cores_per_tile
