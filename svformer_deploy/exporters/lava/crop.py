"""Crop verification: run a netx chain in Lava on a spatial window that determines some output pixels exactly.

Why it is exact: a conv layer's output pixel ``o`` (one axis; kernel ``k``, stride ``s``, padding ``p``,
dilation ``d``) reads input pixels ``o s - p + i d`` for ``i = 0 .. k-1``, and a position outside ``[0, N)`` is
the conv's zero padding. The neuron after it is elementwise (one LIF per pixel and channel, state carried only
in time), so an output pixel's spikes at every step are a function of the input spikes at its receptive field
alone. The cropped chain is the same netx layers (same integers, stride, padding) on an input window
``[c, c + n)`` of the full input (``c`` a multiple of the product of the strides, so every layer's crop lands
on its stride grid: crop output ``o'`` is full output ``o' + c / s``). A crop output is **valid** (equal to the
full-frame output at that pixel, at every step) when each of its taps is either inside the crop and valid there
(the input window itself is valid), or outside the crop *and* outside the full map (real zero padding in both
runs); the taps that fall outside the crop but inside the full map read the crop's zero padding instead of real
spikes, so those outputs are discarded. This is computed layer by layer (:func:`valid_outputs`), per axis (a
2-D conv's receptive field is the product of its two axes'), from each layer's geometry, for any chain.

:func:`choose_axis` finds the smallest such window whose valid outputs contain a requested output interval;
:func:`plan_crop` does it for both axes and returns a :class:`Crop`, which crops input spikes, builds the
cropped layers (same integers, smaller shapes) and slices the compared output window. The verification
(:mod:`verify`) compares Lava and the emulation on exactly that window and checks on every run that the
emulation of the cropped chain equals the full-frame emulation there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from svformer_deploy.errors import VerificationError
from svformer_deploy.exporters.lava.quantize import LoihiLayer

__all__ = ["AxisConv", "AxisCrop", "Crop", "conv_out_size", "receptive_field", "valid_outputs", "choose_axis",
           "plan_crop", "axis_convs", "synops_per_step", "crop_policy", "crop_for", "spread_channels",
           "channel_pairs", "AUTO_SYNOPS_BUDGET", "AUTO_PAIRS_BUDGET", "AUTO_NEURONS_BUDGET",
           "AUTO_CHANNELS"]

AUTO_SYNOPS_BUDGET = 20_000_000
AUTO_PAIRS_BUDGET = 65_536
AUTO_NEURONS_BUDGET = 32_768
AUTO_CHANNELS = 64
"""``auto``: Lava 0.10's fixed-point conv synapse (``lava.proc.conv.utils.conv_scipy``; its torch path is disabled)
makes one ``scipy.signal.convolve2d`` call per output x input channel pair per step, over the whole padded
input, and strides afterwards; reading the sink (``Var.get``, ``lava.magma.runtime.runtime.get_var``) moves one
element per channel message, so every recorded output neuron-step costs tens of microseconds. A partition over
any budget, :data:`AUTO_SYNOPS_BUDGET` synaptic operations per step (:func:`synops_per_step`),
:data:`AUTO_PAIRS_BUDGET` channel pairs (:func:`channel_pairs`) or :data:`AUTO_NEURONS_BUDGET` output neurons,
is verified on :data:`AUTO_CHANNELS` output channels of its last layer (evenly spread) and the largest centred
square output window whose cropped chain then fits the synapse and neuron budgets (at least 1 x 1). Every
partition of ``svformer_tiny`` (32 px; at most 2.1 M synaptic operations, 32,768 pairs and 32,768 output
neurons) stays full frame."""


@dataclass(frozen=True)
class AxisConv:
    """One conv layer along one axis: kernel size, stride, padding (both sides), dilation."""

    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1


def conv_out_size(n: int, conv: AxisConv) -> int:
    """``(n + 2 p - d (k - 1) - 1) // s + 1``: the output length of a conv over ``n`` input pixels (<= 0: none)."""
    return (n + 2 * conv.padding - conv.dilation * (conv.kernel - 1) - 1) // conv.stride + 1


def receptive_field(convs: Sequence[AxisConv], lo: int, hi: int) -> tuple[int, int]:
    """Input interval ``[lo', hi')`` read by the chain's output pixels ``[lo, hi)`` (last layer's coordinates),
    padding positions included (may be < 0 or >= N): per layer, back to front,
    ``lo' = lo s - p``, ``hi' = (hi - 1) s - p + d (k - 1) + 1``."""
    for c in reversed(convs):
        lo, hi = lo * c.stride - c.padding, (hi - 1) * c.stride - c.padding + c.dilation * (c.kernel - 1) + 1
    return lo, hi


def valid_outputs(convs: Sequence[AxisConv], full: int, start: int, length: int) -> tuple[int, np.ndarray] | None:
    """The chain run on the input window ``[start, start + length)`` of a ``full``-pixel axis: (offset of the
    crop's output in the full output, boolean mask over the crop's output pixels: True where the crop's output
    equals the full run's, see the module docstring), or None when the window does not fit the strides (some
    layer's crop offset is not a multiple of its stride) or leaves no output."""
    valid = np.ones(length, dtype=bool)
    for c in convs:
        if start % c.stride:
            return None
        n_out = conv_out_size(length, c)
        if n_out <= 0:
            return None
        taps = np.arange(n_out)[:, None] * c.stride - c.padding + np.arange(c.kernel)[None, :] * c.dilation
        inside = (taps >= 0) & (taps < length)
        padding_in_full = (start + taps < 0) | (start + taps >= full)
        valid = np.where(inside, valid[np.clip(taps, 0, length - 1)], padding_in_full).all(axis=1)
        start, length, full = start // c.stride, n_out, conv_out_size(full, c)
    return start, valid


@dataclass(frozen=True)
class AxisCrop:
    """One axis of a crop: input window ``[in_start, in_start + in_size)`` of ``in_full`` pixels; compared
    output window ``[out_start, out_start + out_size)`` of ``out_full``; ``out_offset`` = full-output index of
    the crop's output pixel 0."""

    in_start: int
    in_size: int
    in_full: int
    out_start: int
    out_size: int
    out_full: int
    out_offset: int

    @property
    def full_frame(self) -> bool:
        return self.in_size == self.in_full


def choose_axis(convs: Sequence[AxisConv], full: int, out_start: int, out_size: int) -> AxisCrop:
    """The smallest input window (then the leftmost) whose valid outputs contain ``[out_start, out_start +
    out_size)`` of the chain's output. The full axis always qualifies (every output valid)."""
    out_full = full
    for c in convs:
        out_full = conv_out_size(out_full, c)
    if not (0 <= out_start and out_size >= 1 and out_start + out_size <= out_full):
        raise ValueError(f"output window [{out_start}, {out_start + out_size}) outside the {out_full} outputs")
    lo, hi = receptive_field(convs, out_start, out_start + out_size)
    lo, hi = max(lo, 0), min(hi, full)
    for n in range(hi - lo, full + 1):
        for start in range(max(0, hi - n), min(lo, full - n) + 1):
            got = valid_outputs(convs, full, start, n)
            if got is None:
                continue
            offset, valid = got
            a, b = out_start - offset, out_start + out_size - offset
            if a >= 0 and b <= len(valid) and valid[a:b].all():
                return AxisCrop(start, n, full, out_start, out_size, out_full, offset)
    raise AssertionError("unreachable: the full axis is always a valid window")


def axis_convs(layers: Sequence[LoihiLayer], axis: int) -> list[AxisConv]:
    """The chain's geometry along ``axis`` (0: H, 1: W). netx layers are written with dilation 1."""
    return [AxisConv(int(l.weight.shape[2 + axis]), int(l.stride[axis]), int(l.padding[axis]), 1) for l in layers]


@dataclass(frozen=True)
class Crop:
    """What a partition is checked on: the H and W axes (see :class:`AxisCrop`) and, optionally, a subset of the
    last layer's output channels (``channels``, of ``out_channels``; None: all). Dropping output channels of the
    last layer is exact too: output neuron (k, pixel) reads only weight row k, bias k and the input spikes, and
    every neuron of a layer has the same decay and threshold; it divides Lava's per-step conv work (one
    ``scipy.signal.convolve2d`` call per output x input channel pair) by ``out_channels / len(channels)``."""

    h: AxisCrop
    w: AxisCrop
    channels: tuple[int, ...] | None = None
    out_channels: int = 0

    @property
    def full_frame(self) -> bool:
        return self.h.full_frame and self.w.full_frame and self.channels is None

    def crop_input(self, spikes: Tensor) -> Tensor:
        """Input spikes (..., H, W) -> the input window (..., h, w)."""
        return spikes[..., self.h.in_start:self.h.in_start + self.h.in_size,
                      self.w.in_start:self.w.in_start + self.w.in_size]

    def full_output_window(self, spikes: Tensor) -> Tensor:
        """Full-frame output spikes (..., C', H', W') -> the compared window (and channels)."""
        out = spikes[..., self.h.out_start:self.h.out_start + self.h.out_size,
                     self.w.out_start:self.w.out_start + self.w.out_size]
        return out if self.channels is None else out[..., list(self.channels), :, :]

    def crop_output_window(self, spikes: Tensor) -> Tensor:
        """Output spikes of the cropped chain (:meth:`layers`) -> the compared window: the same neurons, in the same
        order, as :meth:`full_output_window`."""
        r, c = self.h.out_start - self.h.out_offset, self.w.out_start - self.w.out_offset
        return spikes[..., r:r + self.h.out_size, c:c + self.w.out_size]

    def layers(self, layers: Sequence[LoihiLayer]) -> list[LoihiLayer]:
        """The same layers (integers, stride, padding) with the shapes of the cropped input; the last layer keeps
        only the weight rows and biases of ``channels``."""
        out, (c, h, w) = [], (layers[0].in_shape[0], self.h.in_size, self.w.in_size)
        for i, l in enumerate(layers):
            keep = self.channels if i == len(layers) - 1 and self.channels is not None else None
            weight, bias = (l.weight, l.bias) if keep is None else (l.weight[list(keep)], l.bias[list(keep)])
            shape = (int(weight.shape[0]), conv_out_size(h, axis_convs([l], 0)[0]),
                     conv_out_size(w, axis_convs([l], 1)[0]))
            out.append(dataclasses.replace(l, weight=weight, bias=bias, in_shape=(c, h, w), out_shape=shape))
            c, h, w = shape
        return out

    def describe(self) -> str:
        """E.g. ``crop 8x8 of 28x28 output at (10, 10); Lava input 18x18 of 56x56 at (18, 18); 64 of 256 output
        channels (every 4th from 0)``."""
        if self.h.full_frame and self.w.full_frame:
            text = f"full frame ({self.h.out_full}x{self.w.out_full} output)"
        else:
            text = (f"crop {self.h.out_size}x{self.w.out_size} of {self.h.out_full}x{self.w.out_full} output at "
                    f"({self.h.out_start}, {self.w.out_start}); Lava input {self.h.in_size}x{self.w.in_size} of "
                    f"{self.h.in_full}x{self.w.in_full} at ({self.h.in_start}, {self.w.in_start})")
        if self.channels is not None:
            steps = set(np.diff(self.channels).tolist())
            how = f"every {steps.pop()}th from {self.channels[0]}" if len(steps) == 1 else "listed in 'channels'"
            text += f"; {len(self.channels)} of {self.out_channels} output channels ({how})"
        return text

    def to_dict(self) -> dict:
        return {"full_frame": self.full_frame, "description": self.describe(),
                "output_window": {"start": [self.h.out_start, self.w.out_start],
                                  "size": [self.h.out_size, self.w.out_size],
                                  "of": [self.h.out_full, self.w.out_full]},
                "input_window": {"start": [self.h.in_start, self.w.in_start],
                                 "size": [self.h.in_size, self.w.in_size], "of": [self.h.in_full, self.w.in_full]},
                "channels": list(self.channels) if self.channels is not None else None,
                "out_channels": self.out_channels}


def spread_channels(total: int, keep: int) -> tuple[int, ...] | None:
    """``keep`` output channels evenly spread over ``total`` (every ``total // keep``-th from 0); None if
    ``keep >= total`` (all of them)."""
    if keep >= total:
        return None
    return tuple(range(0, total, total // keep))[:keep]


def plan_crop(layers: Sequence[LoihiLayer], size: int | None, channels: tuple[int, ...] | None = None) -> Crop:
    """The crop verifying a centred ``size`` x ``size`` output window of the chain (the whole output along an
    axis no longer than ``size``; ``None``: full frame), on the last layer's output ``channels`` (None: all)."""
    axes = []
    for axis in (0, 1):
        convs, full = axis_convs(layers, axis), int(layers[0].in_shape[1 + axis])
        out_full = int(layers[-1].out_shape[1 + axis])
        m = out_full if size is None else min(size, out_full)
        axes.append(choose_axis(convs, full, (out_full - m) // 2, m))
    return Crop(*axes, channels=channels, out_channels=int(layers[-1].out_shape[0]))


def synops_per_step(layers: Sequence[LoihiLayer]) -> int:
    """Synaptic operations of one full-frame step: sum over layers of output neurons x fan-in
    (``C_out H' W' x C_in / groups x kH kW``), what Lava's dense conv synapse computes every step."""
    return sum(int(np.prod(l.out_shape)) * int(np.prod(l.weight.shape[1:])) for l in layers)


def channel_pairs(layers: Sequence[LoihiLayer]) -> int:
    """Output x input channel pairs (``C_out C_in / groups``), summed over layers: Lava's 2-D convolutions per step."""
    return sum(int(l.weight.shape[0]) * int(l.weight.shape[1]) for l in layers)


def crop_policy(value: str | int | None = None) -> int | str | None:
    """Parse the crop setting (``value``, else ``$SVFORMER_LAVA_CROP``, default ``auto``): ``"auto"`` (see
    :data:`AUTO_SYNOPS_BUDGET`), ``None`` for ``off`` (always full frame), or an output window size N >= 1 (every
    partition whose output is larger is cropped to a centred N x N window). An empty ``$SVFORMER_LAVA_CROP`` means
    the default, as an unset one does."""
    from svformer_deploy.exporters.lava._env import env_setting

    raw = (env_setting("SVFORMER_LAVA_CROP") or "auto") if value is None else value
    text = str(raw).strip().lower()
    if text == "auto":
        return "auto"
    if text == "off":
        return None
    if text.isascii() and text.isdigit() and int(text) >= 1:
        return int(text)
    raise VerificationError(f"Lava crop setting {raw!r} is not understood: use 'auto', 'off' or an output window "
                            "size in pixels (e.g. SVFORMER_LAVA_CROP=8)")


def crop_for(layers: Sequence[LoihiLayer], policy: int | str | None) -> Crop:
    """The crop a partition is verified on under ``policy`` (see :func:`crop_policy`)."""
    if policy != "auto":
        return plan_crop(layers, policy)
    def fits(chain: Sequence[LoihiLayer]) -> bool:
        return (synops_per_step(chain) <= AUTO_SYNOPS_BUDGET
                and int(np.prod(chain[-1].out_shape)) <= AUTO_NEURONS_BUDGET)

    if fits(layers) and channel_pairs(layers) <= AUTO_PAIRS_BUDGET:
        return plan_crop(layers, None)
    channels = spread_channels(int(layers[-1].out_shape[0]), AUTO_CHANNELS)
    best = plan_crop(layers, 1, channels)
    for size in range(2, max(layers[-1].out_shape[1:]) + 1):
        crop = plan_crop(layers, size, channels)
        if not fits(crop.layers(layers)):
            break
        best = crop
    return best
