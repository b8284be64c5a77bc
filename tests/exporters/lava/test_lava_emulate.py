"""The fixed-point emulation against an independent per-neuron transcription of Lava's fixed_pt equations."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from svformer_deploy.exporters.lava.emulate import emulate_partition
from svformer_deploy.exporters.lava.quantize import LoihiLayer


def _dense(w, b, e, dv):
    w = np.asarray(w, dtype=np.int64)
    return LoihiLayer("fc", "lif", w[:, :, None, None], np.asarray(b, dtype=np.int64), (1, 1), (0, 0), 1, e, dv,
                      (w.shape[1], 1, 1), (w.shape[0], 1, 1), 2.0)


def _lava_reference(w, b, vth, dv, spikes):
    """Lava's PyLifModelBitAcc + PyDenseModelBitAcc, one neuron at a time, in Python integers (no numpy tricks)."""
    T, n_in = spikes.shape
    out = np.zeros((T, len(w)), dtype=np.int8)
    for j in range(len(w)):
        u = v = 0
        for t in range(T):
            a = sum(int(w[j][i]) for i in range(n_in) if spikes[t, i])
            c = (abs(u * 0) >> 12) + (a << 6)                      # iDecay = 4096: u decays to 0
            u = c - 2 ** 24 if c > 2 ** 23 else c
            u = c + 2 ** 24 if u <= -2 ** 23 else u
            p = v * (4096 - dv)
            v = (1 if p > 0 else -1 if p < 0 else 0) * (abs(p) >> 12) + u + (int(b[j]) << 6)
            v = max(-(2 ** 23 - 1), min(2 ** 23 - 1, v))
            if v > vth << 6:
                out[t, j] = 1
                v = 0
    return out


def test_hand_computed_single_neuron():
    # w = 64, vth = 128 (threshold 8192 after << 6), dv = 2048 (tau 2): v = 4096, 6144, 7168, 7680, ... never > 8192
    layer = _dense([[64]], [0], 7, 2048)
    s = torch.ones(6, 1, 1, 1, 1, dtype=torch.int8)
    assert emulate_partition([layer], s).flatten().tolist() == [0] * 6
    # bias 1 (<< 6 = 64): 4160, 6240, 7280, 7800, 8060, 8190, 8255 > 8192 -> spike at t = 6, then reset
    layer = _dense([[64]], [1], 7, 2048)
    s = torch.ones(8, 1, 1, 1, 1, dtype=torch.int8)
    assert emulate_partition([layer], s).flatten().tolist() == [0, 0, 0, 0, 0, 0, 1, 0]


def test_strict_threshold():
    layer = _dense([[128]], [0], 7, 4095)  # t0: v = 128 << 6 = threshold exactly: no spike (PLIF would fire)
    # t1: v = rtz(8192 * 1 / 4096) + 8192 = 8194 > 8192: spike
    assert emulate_partition([layer], torch.ones(2, 1, 1, 1, 1, dtype=torch.int8)).flatten().tolist() == [0, 1]


def test_matches_reference_including_wraparound_and_negative_rounding():
    rng = np.random.default_rng(3)
    n_in, n_out, T = 1200, 5, 10
    w = rng.integers(-128, 128, size=(n_out, n_in))
    w[0] = 127  # 1200 * 127 << 6 > 2^23: the current wraps
    b = rng.integers(-300, 300, size=n_out)
    spikes = (rng.random((T, n_in)) < 0.5).astype(np.int8)
    ref = _lava_reference(w, b, 1 << 9, 1365, spikes)
    got = emulate_partition([_dense(w, b, 9, 1365)], torch.from_numpy(spikes).view(T, 1, n_in, 1, 1))
    assert np.array_equal(got.view(T, n_out).numpy(), ref)
    assert 0 < ref.sum() < ref.size


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), e=st.integers(0, 16), dv=st.integers(0, 4095),
       n_in=st.integers(1, 40), rate=st.floats(0.05, 0.95))
def test_property_matches_reference(seed, e, dv, n_in, rate):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, size=(3, n_in))
    b = rng.integers(-4096, 4096, size=3)
    spikes = (rng.random((12, n_in)) < rate).astype(np.int8)
    got = emulate_partition([_dense(w, b, e, dv)], torch.from_numpy(spikes).view(12, 1, n_in, 1, 1))
    assert np.array_equal(got.view(12, 3).numpy(), _lava_reference(w, b, 1 << e, dv, spikes))
