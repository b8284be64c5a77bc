"""Crop verification is exact in Lava itself: the same partitions run in Lava (fixed_pt) on the full frame and on
crops (non-square, at borders and in the interior, a two-layer chain, a subset of output channels), and on every
compared neuron, step and clip the crop run's spikes are the full run's.

Needs the Lava side environment, like ``test_lava_in_lava.py`` (fails, never skips, if it cannot be built)."""

import dataclasses
import tempfile
from pathlib import Path

import pytest
import torch

from svformer_deploy.exporters.lava.crop import Crop, axis_convs, choose_axis, plan_crop
from svformer_deploy.exporters.lava.export import RUNNER_NAME, export_lava
from svformer_deploy.exporters.lava.netx import write_netx
from svformer_deploy.exporters.lava.sideenv import lava_python
from svformer_deploy.exporters.lava.verify import run_lava
from svformer_deploy.models import record_spikes
from tests.exporters.conftest import active_model, clips


def _window(layers, rows: tuple[int, int], cols: tuple[int, int]) -> Crop:
    _, h, w = layers[0].in_shape
    return Crop(choose_axis(axis_convs(layers, 0), h, *rows), choose_axis(axis_convs(layers, 1), w, *cols))


@pytest.mark.slow
def test_lava_on_a_crop_gives_the_full_frame_spikes(tmp_path):
    python = lava_python(progress=print)
    model = active_model()
    bundle, manifest, parts = export_lava(model, tmp_path / "b", checkpoint_sha256="ab" * 32)
    by_name = {p.name: p for p in parts}
    mlp = by_name["blocks1.0.mlp.lif1>blocks1.0.mlp.lif2"]  # 1x1, 16 x 16 tokens
    embed = by_name["patch_embed2.lif>blocks2.0.lif"]  # 4x4 stride 2 padding 1, 16 -> 8
    local = by_name["patch_embed3.lif>head.lif"]  # two layers: 4x4 s2 p1 then 3x3 s2 p1, 8 -> 4 -> 2
    crops = {mlp.name: _window(mlp.layers, (0, 3), (9, 5)),  # top border x interior, 3 x 5
             embed.name: dataclasses.replace(_window(embed.layers, (3, 4), (5, 3)),  # interior (halo) x right border,
                                             channels=(0, 7, 8, 30), out_channels=embed.layers[-1].out_shape[0]),
             local.name: plan_crop(local.layers, 1)}  # one output pixel through both layers
    x = clips(2, size=model.config.img_size)
    with record_spikes(model) as rec, torch.no_grad():
        model(x)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {}
        for i, p in enumerate((mlp, embed, local)):
            crop = crops[p.name]
            assert not crop.full_frame
            spikes = p.source.to_chw(rec.spikes[p.source.neuron]).to(torch.int8)  # (T, B, C, H, W)
            jobs[f"{p.name}.full"] = (bundle / manifest.partition(p.name).file, spikes.transpose(0, 1).numpy())
            jobs[f"{p.name}.crop"] = (write_netx(Path(tmp) / f"crop{i}.net", crop.layers(p.layers),
                                                 {"partition": p.name}),
                                      crop.crop_input(spikes).transpose(0, 1).numpy())
        out, _ = run_lava(python, jobs, Path(tmp), bundle / RUNNER_NAME, workers=2)
    for name, crop in crops.items():
        full = crop.full_output_window(torch.from_numpy(out[f"{name}.full"]))  # (B, T, C, h, w)
        got = crop.crop_output_window(torch.from_numpy(out[f"{name}.crop"]))
        channels = len(crop.channels) if crop.channels else by_name[name].layers[-1].out_shape[0]
        assert got.shape == full.shape == (2, model.config.num_frames, channels, crop.h.out_size, crop.w.out_size), name
        assert full.sum() > 0, name  # real activity on the compared pixels
        assert torch.equal(got, full), (name, crop.describe(), int((got != full).sum()))
