"""The fixed-point layer and its dynamics, against hand-computed integers."""

from __future__ import annotations

import numpy as np
import torch

from svformer_deploy.chip.arch import NumberFormat
from svformer_deploy.chip.network import ChipLayer, SpikeTerm
from svformer_deploy.chip.quantize import quantize_chip_layer
from svformer_deploy.chip.run import _lif_fixed, _rtz_decay

LOIHI = NumberFormat()


def _layer(w: np.ndarray, bias: np.ndarray, tau: float = 2.0) -> ChipLayer:
    t = SpikeTerm("src", True, (w.shape[1], 1, 1), w, 1, 0, ("syn",))
    return ChipLayer("L", (w.shape[0], 1, 1), tau, 1.0, (t,), (), bias.reshape(w.shape[0], 1, 1))


def test_exponent_is_the_largest_at_which_nothing_clips():
    # k W / V_th = [1.0, -0.5] / 2 -> [0.5, -0.25]; 0.5 * 2^8 = 128 > 127, so e = 7: [64, -32]
    layer = _layer(np.array([[1.0, -0.5]]).reshape(1, 2, 1, 1), np.array([0.1]))
    fx = quantize_chip_layer(layer, LOIHI)
    assert fx.exponent == 7
    assert fx.weights[0].ravel().tolist() == [64, -32]
    assert fx.bias.ravel().tolist() == [round(0.05 * 128)]  # 6.4 -> 6
    assert fx.vth == 128 and fx.v_decay == 2048
    assert fx.weight_bits_used == 8 and fx.distinct_weights == 2 and fx.clipped_weights == 0


def test_weights_too_large_for_exponent_zero_are_clipped_and_counted():
    layer = _layer(np.array([[600.0, 1.0]]).reshape(1, 2, 1, 1), np.array([0.0]))
    fx = quantize_chip_layer(layer, LOIHI)
    assert fx.exponent == 0 and fx.clipped_weights == 1 and fx.weights[0].max() == 127


def test_rounding_toward_zero_decay():
    x = torch.tensor([100, -100, 3, -3], dtype=torch.int64)
    # v * (4096 - 2048) >> 12 toward zero: 50, -50, 1 (1.5), -1 (-1.5)
    assert _rtz_decay(x, 2048, 12).tolist() == [50, -50, 1, -1]


def test_lif_dynamics_by_hand():
    """vth = 2^7 = 128 (x64 = 8192); decay 2048/4096 = 1/2; drive 100, 100, 0, 200 per step."""
    layer = _layer(np.array([[1.0]]).reshape(1, 1, 1, 1), np.array([0.0]))
    fx = quantize_chip_layer(layer, LOIHI)
    assert fx.vth == 128 and fx.v_decay == 2048
    drive = torch.tensor([100, 100, 0, 200], dtype=torch.int64).reshape(4, 1, 1, 1, 1)
    spikes, v_before, vmax = _lif_fixed(drive, fx, LOIHI)
    # v (x64): 6400 -> 3200 + 6400 = 9600 > 8192 fires -> 0 -> 0 -> 12800 fires
    assert spikes.ravel().tolist() == [0, 1, 0, 1]
    assert v_before.ravel().tolist() == [0, 6400, 0, 0]
    assert vmax == 12800


def test_host_currents_use_the_smallest_bias_exponent_that_fits():
    from svformer_deploy.chip.run import host_currents

    x = torch.tensor([[[[100.4]], [[-3.0]]], [[[9000.0]], [[7.0]]]], dtype=torch.float64)  # two steps
    q, clipped = host_currents(x, LOIHI)
    # step 0 fits 13 bits (exponent 0); step 1 needs 9000 / 2 = 4500 > 4095 -> exponent 2: multiples of 4
    assert q[0].ravel().tolist() == [100, -3]
    assert q[1].ravel().tolist() == [9000, 8] and clipped == 0
    big = torch.full((1, 1, 1, 1), 4095.0 * 128 * 2, dtype=torch.float64)
    q, clipped = host_currents(big, LOIHI)
    assert clipped == 1 and int(q.max()) == 4095 * 128


def test_chip_model_follows_the_float_model(tiny_mapping):
    """The integer chip model's firing rates stay within 3 points of the float model's, layer by layer."""
    from svformer_deploy.models import record_spikes

    model, m, run, x = tiny_mapping
    with torch.no_grad(), record_spikes(model) as rec:
        model(x)
    rates = rec.firing_rates()
    for name, act in run.layers.items():
        assert abs(float(rates[name].mean()) - float(act.spikes.mean())) < 0.03, name
    assert sum(a.clipped_host for a in run.layers.values()) == 0
