"""Loihi fixed-point quantisation of a PLIF layer: exponent choice, mantissas, decays, overflow warnings."""

import numpy as np
import pytest

from svformer_deploy.exporters.lava.quantize import FloatLayer, LoihiOverflowWarning, quantize_layer


def _layer(w, b, tau=2.0, v_th=1.0):
    w = np.asarray(w, dtype=np.float64)
    w = w.reshape(w.shape[0], w.shape[1], 1, 1)
    return FloatLayer("fc", "lif", w, np.asarray(b, dtype=np.float64), (1, 1), (0, 0), 1, tau, v_th, (w.shape[1], 1, 1))


def test_exponent_uses_all_eight_bits_and_threshold_is_two_to_the_exponent():
    q = quantize_layer(_layer([[0.5, -0.25]], [1.0], tau=2.0))
    # W / tau = [0.25, -0.125]: 0.25 * 2^8 = 64 fits, 0.25 * 2^9 = 128 does not -> e = 8
    assert q.exponent == 8 and q.vth_mant == 256
    assert q.weight[:, :, 0, 0].tolist() == [[64, -32]]
    assert q.bias.tolist() == [128]  # 1.0 / 2 * 256
    assert q.v_decay == 2048 and q.i_decay == 4096
    assert q.clipped_weights == 0.0 and q.clipped_biases == 0.0


def test_threshold_other_than_one_scales_weights():
    q = quantize_layer(_layer([[0.5]], [0.0], tau=2.0, v_th=0.5))  # W / (tau V_th) = 0.5
    assert q.weight.item() == 64 and q.exponent == 7


def test_bias_range_lowers_the_exponent():
    q = quantize_layer(_layer([[0.01]], [40.0], tau=2.0))  # b_eff = 20: 20 * 2^7 = 2560 <= 4095 < 20 * 2^8
    assert q.exponent == 7 and q.bias.item() == 2560


def test_voltage_decay_rounds_4096_over_tau():
    assert quantize_layer(_layer([[0.1]], [0.0], tau=3.0)).v_decay == 1365  # 4096 / 3 = 1365.33
    assert quantize_layer(_layer([[0.1]], [0.0], tau=1.0001)).v_decay == 4095  # 12-bit ceiling


def test_forced_exponent_clips_and_warns_with_the_fraction():
    with pytest.warns(LoihiOverflowWarning, match=r"25\.0000% of weights overflow"):
        q = quantize_layer(_layer([[1.0, 0.1, 0.1, -0.1]], [0.0], tau=2.0), exponent=10)
    # 0.5 * 1024 = 512 -> clipped to 127; 0.05 * 1024 = 51.2 -> 51
    assert q.weight[:, :, 0, 0].tolist() == [[127, 51, 51, -51]]
    assert q.clipped_weights == 0.25


def test_no_warning_without_overflow(recwarn):
    quantize_layer(_layer([[0.3, -0.2]], [0.1]))
    assert not [w for w in recwarn if issubclass(w.category, LoihiOverflowWarning)]
