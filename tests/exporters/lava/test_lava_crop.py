"""Crop verification: the receptive-field arithmetic (hand-computed cases), the chosen windows, and the claim the
Lava verification rests on: a netx chain run on the crop gives, on the compared window, exactly the spikes of the
full-frame run (checked in the bit-exact emulation here, for many geometries; in Lava itself in
``test_lava_crop_in_lava.py``)."""

import numpy as np
import pytest
import torch

from svformer_deploy.errors import VerificationError
from svformer_deploy.exporters.lava.crop import (AUTO_NEURONS_BUDGET, AUTO_PAIRS_BUDGET, AUTO_SYNOPS_BUDGET,
                                                 AxisConv, AxisCrop, Crop, channel_pairs, choose_axis, conv_out_size,
                                                 crop_for, crop_policy, plan_crop, receptive_field, spread_channels,
                                                 synops_per_step, valid_outputs)
from svformer_deploy.exporters.lava.emulate import emulate_partition
from svformer_deploy.exporters.lava.partition import partition_model, quantize_partition
from svformer_deploy.exporters.lava.quantize import LoihiLayer
from tests.exporters.conftest import active_model

PATCH = AxisConv(kernel=4, stride=2, padding=1)  # SVFormer's patch embedding
LOCAL = AxisConv(kernel=3, stride=2, padding=1)  # the local path's composed depthwise 3x3 s2


def test_conv_out_size_hand_computed():
    assert conv_out_size(56, PATCH) == 28  # (56 + 2 - 3 - 1) // 2 + 1
    assert conv_out_size(14, LOCAL) == 7
    assert conv_out_size(10, AxisConv(3, 1, 0, dilation=2)) == 6  # (10 - 4 - 1) // 1 + 1
    assert conv_out_size(2, AxisConv(5)) <= 0  # kernel larger than the input: no output


def test_receptive_field_hand_computed():
    assert receptive_field([AxisConv(1)], 3, 7) == (3, 7)  # 1x1: each output pixel reads its own
    assert receptive_field([AxisConv(3, 1, 1)], 2, 5) == (1, 6)  # outputs 2..4 read 1..5
    assert receptive_field([PATCH], 3, 5) == (5, 11)  # output 3 reads 5..8, output 4 reads 7..10
    assert receptive_field([PATCH], 0, 1) == (-1, 3)  # one pixel of zero padding on the left
    assert receptive_field([AxisConv(3, 1, 2, dilation=2)], 0, 1) == (-2, 3)  # taps -2, 0, 2
    # the local path, output pixel 1: layer 2 reads layer-1 pixels 1..3, which read input pixels 1..8
    assert receptive_field([PATCH, LOCAL], 1, 2) == (1, 9)


def test_valid_outputs_hand_computed():
    conv = [AxisConv(3, 1, 1)]
    # interior crop [3, 8) of 10: its first and last outputs read the crop's zero padding where the full run has
    # pixels 2 and 8 -> invalid; the three in between are the full run's outputs 4..6
    offset, valid = valid_outputs(conv, 10, 3, 5)
    assert offset == 3 and valid.tolist() == [False, True, True, True, False]
    # at the border the crop's padding is the full run's padding: output 0 is valid
    offset, valid = valid_outputs(conv, 10, 0, 5)
    assert offset == 0 and valid.tolist() == [True, True, True, True, False]
    # the whole axis: every output valid
    assert valid_outputs([PATCH, LOCAL], 28, 0, 28)[1].all()
    # stride 2: a window starting at an odd pixel would put the crop off the full run's stride grid
    assert valid_outputs([PATCH], 56, 3, 20) is None
    offset, valid = valid_outputs([PATCH], 56, 18, 19)  # outputs 9..17; 9 reads pixel 17 (outside the crop)
    assert offset == 9 and valid.tolist() == [False] + [True] * 8


def test_choose_axis_finds_the_smallest_window():
    # 1x1: the window is exactly the compared pixels
    assert choose_axis([AxisConv(1)], 56, 24, 8) == AxisCrop(24, 8, 56, 24, 8, 56, 24)
    # patch embedding, outputs 10..17 of 28: receptive field 19..37 (19 pixels); 19 is odd, so the aligned window
    # starts at 18 and, with the padding kept, output 9 is invalid and 10..17 valid
    assert choose_axis([PATCH], 56, 10, 8) == AxisCrop(18, 19, 56, 10, 8, 28, 9)
    # at the left border no halo is needed on that side
    assert choose_axis([PATCH], 56, 0, 4) == AxisCrop(0, 9, 56, 0, 4, 28, 0)
    # right border: outputs 24..27 read 47..55 (55 = padding) -> start 46 (aligned), up to the end
    assert choose_axis([PATCH], 56, 24, 4) == AxisCrop(46, 10, 56, 24, 4, 28, 23)
    # the whole output needs the whole input
    assert choose_axis([PATCH, LOCAL], 28, 0, 7).full_frame
    with pytest.raises(ValueError, match="outside"):
        choose_axis([PATCH], 56, 25, 4)


def _layer(rng: np.random.Generator, c_in: int, c_out: int, k: int, s: int, p: int, hw: tuple[int, int]) -> LoihiLayer:
    h, w = hw
    out = (c_out, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    return LoihiLayer(name="conv", neuron="lif", weight=rng.integers(-128, 128, (c_out, c_in, k, k)),
                      bias=rng.integers(-300, 300, c_out), stride=(s, s), padding=(p, p), groups=1, exponent=7,
                      v_decay=int(rng.integers(500, 3000)), in_shape=(c_in, h, w), out_shape=out, tau=2.0)


@pytest.mark.parametrize("geometry", [
    [(1, 1, 0)], [(3, 1, 1)], [(4, 2, 1)], [(3, 2, 0)], [(5, 1, 2)],
    [(4, 2, 1), (3, 2, 1)], [(3, 1, 1), (1, 1, 0)], [(3, 1, 1), (4, 2, 1), (3, 1, 1)]])
def test_crop_gives_the_full_frame_spikes_on_its_window(geometry):
    """Every window position (corners, edges, interior; non-square windows) of several chains: the emulation of
    the cropped chain equals the full-frame emulation on the compared pixels, at every step of every clip."""
    rng = np.random.default_rng(len(geometry) * 10 + geometry[0][0])
    layers, c, hw = [], 2, (15, 13)
    for k, s, p in geometry:
        layers.append(_layer(rng, c, 3, k, s, p, hw))
        c, hw = 3, layers[-1].out_shape[1:]
    spikes = torch.from_numpy(rng.random((6, 2, 2, 15, 13)) < 0.3).to(torch.int8)  # (T, B, C, H, W)
    full = emulate_partition(layers, spikes)
    H, W = full.shape[-2:]
    assert full.sum() > 0
    convs = [AxisConv(k, s, p) for k, s, p in geometry]
    n, m = min(3, H), min(2, W)
    windows = [((0, 1), (0, 1)), ((H - n, n), (W - m, m)), (((H - n) // 2, n), ((W - m) // 2, m)),  # corners, middle
               ((0, n), ((W - 1) // 2, 1)), (((H - 1) // 2, 1), (W - m, m))]  # edges, non-square
    for rows, cols in windows:
        crop = Crop(choose_axis(convs, 15, *rows), choose_axis(convs, 13, *cols))
        got = crop.crop_output_window(emulate_partition(crop.layers(layers), crop.crop_input(spikes)))
        assert torch.equal(got, crop.full_output_window(full)), (geometry, crop.describe())


def test_crop_layers_keep_the_integers_and_take_the_window_shapes():
    layers = [quantize_partition(p) for p in partition_model(active_model())]
    part = next(p for p in layers if p.name == "patch_embed3.lif>head.lif")
    crop = plan_crop(part.layers, 1)
    cropped = crop.layers(part.layers)
    assert cropped[0].in_shape == (64, crop.h.in_size, crop.w.in_size)
    assert cropped[0].out_shape == cropped[1].in_shape
    assert all(np.array_equal(a.weight, b.weight) and a.stride == b.stride and a.padding == b.padding
               for a, b in zip(cropped, part.layers))
    assert crop.describe().startswith("crop 1x1 of 2x2 output at (0, 0); Lava input ")


def test_auto_keeps_svformer_tiny_full_frame_and_crops_a_costly_partition():
    parts = [quantize_partition(p) for p in partition_model(active_model())]
    assert all(crop_for(p.layers, "auto").full_frame for p in parts)  # the shipped model: full-frame check
    mlp = next(p for p in parts if p.name == "blocks1.0.mlp.lif1>blocks1.0.mlp.lif2")
    assert not crop_for(mlp.layers, 4).full_frame and crop_for(mlp.layers, 4).h.out_size == 4
    assert crop_for(mlp.layers, None).full_frame
    # a partition over the budget: 64 of its output channels, evenly spread, and the largest centred window within it
    wide = [_layer(np.random.default_rng(0), 128, 512, 1, 1, 0, (56, 56))]
    assert synops_per_step(wide) == 56 * 56 * 512 * 128 > AUTO_SYNOPS_BUDGET
    crop = crop_for(wide, "auto")
    assert crop.channels == tuple(range(0, 512, 8)) and crop.out_channels == 512
    n = crop.h.out_size
    def fits(m: int) -> bool:  # m x m pixels of 64 channels, fan-in 128
        return m * m * 64 * 128 <= AUTO_SYNOPS_BUDGET and m * m * 64 <= AUTO_NEURONS_BUDGET

    assert n == crop.w.out_size == 22 and fits(n) and not fits(n + 1)
    assert synops_per_step(crop.layers(wide)) == n * n * 64 * 128
    assert crop.describe().endswith("; 64 of 512 output channels (every 8th from 0)")
    # many channel pairs (Lava's per-step convolve2d calls) but few synaptic operations: channels only
    deep = [_layer(np.random.default_rng(0), 512, 512, 1, 1, 0, (7, 7))]
    assert channel_pairs(deep) > AUTO_PAIRS_BUDGET and synops_per_step(deep) <= AUTO_SYNOPS_BUDGET
    crop = crop_for(deep, "auto")
    assert crop.h.full_frame and crop.w.full_frame and len(crop.channels) == 64 and not crop.full_frame
    assert spread_channels(10, 64) is None and spread_channels(10, 3) == (0, 3, 6)


def test_dropping_output_channels_keeps_the_other_channels_spikes():
    rng = np.random.default_rng(3)
    layers = [_layer(rng, 3, 4, 4, 2, 1, (12, 12)), _layer(rng, 4, 6, 3, 1, 1, (6, 6))]
    spikes = torch.from_numpy(rng.random((5, 2, 3, 12, 12)) < 0.3).to(torch.int8)
    full = emulate_partition(layers, spikes)
    crop = plan_crop(layers, 2, channels=(1, 4, 5))
    got = crop.crop_output_window(emulate_partition(crop.layers(layers), crop.crop_input(spikes)))
    assert got.shape[2] == 3 and torch.equal(got, full[:, :, [1, 4, 5], 2:4, 2:4])
    assert crop.layers(layers)[0].weight.shape[0] == 4  # only the last layer loses channels


def test_crop_setting_is_parsed_or_refused(monkeypatch):
    monkeypatch.delenv("SVFORMER_LAVA_CROP", raising=False)
    assert crop_policy() == "auto"
    monkeypatch.setenv("SVFORMER_LAVA_CROP", "off")
    assert crop_policy() is None
    monkeypatch.setenv("SVFORMER_LAVA_CROP", " 8 ")
    assert crop_policy() == 8
    assert crop_policy(4) == 4
    for empty in ("", "  "):  # an empty setting means the default, as an unset one does
        monkeypatch.setenv("SVFORMER_LAVA_CROP", empty)
        assert crop_policy() == "auto"
    for bad in ("0", "-3", "big", "\u00b2"):
        monkeypatch.setenv("SVFORMER_LAVA_CROP", bad)
        with pytest.raises(VerificationError, match="SVFORMER_LAVA_CROP=8"):
            crop_policy()


def test_bad_crop_setting_fails_the_export_before_writing(tiny_ckpt, tmp_path, monkeypatch, capsys):
    from tests.helpers import run_cli

    monkeypatch.setenv("SVFORMER_LAVA_CROP", "half")
    assert run_cli(["export", str(tiny_ckpt), "--to", "lava", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "SVFORMER_LAVA_CROP" in err and "'half'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
