"""The memory model: hand-computed bytes, tiers and energies; the head Conv3d's weights are read once per clip."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from svformer_deploy.energy import count_ops, energy_of, memory_energy
from svformer_deploy.energy.memory import tier_for
from svformer_deploy.errors import EnergyError
from svformer_deploy.models import create_model
from svformer_deploy.models.neurons import PLIF


def test_tiers_chosen_by_footprint():
    assert tier_for(8 * 1024).name == "SRAM 8 KB"
    assert tier_for(8 * 1024 + 1).name == "SRAM 32 KB"
    assert tier_for(1024 * 1024).name == "SRAM 1 MB"
    assert tier_for(55e6).name == "DRAM"


def test_memory_by_hand_on_a_binary_conv():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    x = torch.zeros(2, 1, 2, 2)
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = x[1, 0, 0, 1] = 1  # 3 spikes
    c = count_ops(conv, x, num_steps=None)
    m = c.memory.set_index("layer").loc["model"]
    assert (m.weight_values, m.weight_reads, m.weight_uses) == (2, 4, 6)  # 2 weights x 2 images; 3 spikes x 2
    assert (m.binary_act_values, m.real_out_values) == (8, 16)
    ws = memory_energy(c, "45nm-fp32", "weight-stationary")
    # every footprint is below 8 KB -> 10 pJ / 8 bytes = 1.25 pJ/byte; 4 bytes per value, 1 bit per spike
    assert ws.tiers == {"weights": "SRAM 8 KB", "activations": "SRAM 8 KB", "membrane": "SRAM 8 KB"}
    assert ws.pj == pytest.approx({"weights": 4 * 4 * 1.25, "activations": 1 * 1.25, "membrane": 0.0,
                                   "outputs": 64 * 1.25})
    ev = memory_energy(c, "45nm-fp32", "fetch-per-event")
    assert ev.pj["weights"] == pytest.approx(6 * 4 * 1.25)
    rep = energy_of(c)
    assert rep.total_pj == pytest.approx(rep.compute_pj + 101.25) and rep.compute_pj == pytest.approx(6 * 0.9)
    with pytest.raises(EnergyError, match="dataflow"):
        memory_energy(c, "45nm-fp32", "row-stationary")


def test_membrane_read_and_write_per_update_and_flat_profile():
    c = count_ops(nn.Sequential(OrderedDict(lif=PLIF())), torch.randn(4, 2, 3), num_steps=4, batch=2)
    m = c.memory.set_index("layer").loc["lif"]
    assert (m.state_values, m.binary_out_values) == (2 * 24, 24)
    e = memory_energy(c, "45nm-fp32")
    assert e.bytes["membrane"] == 48 * 4 and e.bytes["outputs"] == 24 / 8
    assert memory_energy(c, "loihi").total_pj == 0.0  # Loihi's per-op figures include its memory


def test_head_conv3d_weights_read_once_per_clip_not_per_timestep():
    torch.manual_seed(0)
    m = create_model("svformer_tiny").eval()
    x = torch.randn(2, *m.config.input_shape)
    mem = count_ops(m, x).memory.set_index("layer")
    T, B = m.config.num_frames, 2
    assert mem.loc["head.conv3d", "weight_reads"] == m.head.conv3d.weight.numel() * B
    assert mem.loc["blocks1.0.conv1", "weight_reads"] == m.blocks1[0].conv1.weight.numel() * T * B
    assert mem.loc["blocks3.0.attn.qkv", "weight_reads"] == m.blocks3[0].attn.qkv.weight.numel() * T * B
    assert mem.loc["head.fc", "weight_reads"] == m.head.fc.weight.numel() * B
