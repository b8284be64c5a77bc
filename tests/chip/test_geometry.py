"""Connection counts of a term against hand counts."""

from __future__ import annotations

import numpy as np

from svformer_deploy.chip.geometry import term_geometry


def test_3x3_padded_conv_counts_every_in_bounds_tap():
    w = np.ones((2, 3, 3, 3))
    g = term_geometry("s", (3, 4, 4), (2, 4, 4), w, 1, 1)
    # per (o, i): corners 4 taps, edges 6, interior 9 on a 4x4 map: 4*4 + 8*6 + 4*9 = 100
    assert g.synapses() == 2 * 3 * 100
    fan_in = g.fan_in()
    assert fan_in[0, 0, 0] == 3 * 4 and fan_in[0, 1, 1] == 3 * 9 and fan_in[1, 0, 2] == 3 * 6
    fan_out = g.fan_out()  # a source neuron reaches as many outputs per channel as it has in-bounds taps
    assert fan_out.shape == (3, 4, 4)
    assert fan_out[0, 0, 0] == 2 * 4 and fan_out[2, 1, 2] == 2 * 9


def test_zero_weights_are_not_connections():
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 1] = 5.0  # only the centre tap
    g = term_geometry("s", (1, 5, 5), (1, 5, 5), w, 1, 1)
    assert g.synapses() == 25 and g.fan_in().max() == 1 and g.fan_out().max() == 1


def test_strided_receptive_ranges():
    g = term_geometry("s", (1, 8, 8), (1, 4, 4), np.ones((1, 1, 4, 4)), 2, 1)
    assert g.in_range(0, 1, 1) == (0, 3)  # rows -1..2 clipped
    assert g.in_range(1, 3, 1) == (1, 7)  # rows 1..6
    assert g.valid_taps(0, 4, 1).tolist() == [3, 4, 4, 3]
