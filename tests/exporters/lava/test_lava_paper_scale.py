"""Paper scale: the svformer_ucf101 architecture (shared BN, 10 classes, random weights, BN calibrated) exports to a Lava bundle
that reads back with its manifest re-derived (every operation covered once), no weight clipped, and one clip goes
through every partition in Lava (fixed_pt), the costly ones on the crops ``auto`` chooses, bit-exact on the
pixels each partition reports.

Needs the Lava side environment (fails, never skips, if it cannot be built)."""

import time
import warnings

import pytest
import torch

from svformer_deploy.data import build_dataset
from svformer_deploy.exporters.lava.export import export_lava
from svformer_deploy.exporters.lava.quantize import LoihiOverflowWarning
from svformer_deploy.exporters.lava.sideenv import lava_python
from svformer_deploy.exporters.lava.verify import load_lava_bundle, verify_lava
from svformer_deploy.models import create_model
from svformer_deploy.training import precise_bn


@pytest.mark.slow
def test_paper_size_model_exports_to_lava_and_verifies_one_clip_on_crops(tmp_path):
    python = lava_python(progress=print)
    torch.manual_seed(0)
    model = create_model("svformer_ucf101", num_classes=10, bn="shared")
    # BN statistics of 2 moving-digits clips (as bench_export.py --calibrate 1): with the initial statistics the
    # random model is silent from stage 2 on, and a silent partition would check nothing
    ds = build_dataset("moving-digits", model.config, split="train", seed=0, num_clips=2)
    precise_bn(model, [torch.stack([ds[0][0], ds[1][0]])])
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoihiOverflowWarning)  # nothing clipped at paper size either
        path, manifest, parts = export_lava(model, tmp_path / "b", checkpoint_sha256="0" * 64)
    # 6 blocks: 6 mlp + 4 x (q, k, v) + 3 patch-embed partitions + the two-layer local path
    assert len(parts) == 6 + 12 + 3 + 1 == len(manifest.partitions)
    _, reloaded, read_back = load_lava_bundle(path)  # raises if the manifest does not re-derive
    assert [p.name for p in read_back] == [p.name for p in parts]
    assert read_back[0].source.shape[1:] == (56, 56)  # stage 1 at 224 px: a 56 x 56 token map
    for a, b in zip(parts, read_back):
        assert all((l.weight == o.weight).all() for l, o in zip(a.layers, b.layers)), a.name

    clip = torch.randn(1, 3, model.config.num_frames, 224, 224, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    report = verify_lava(path, clips=clip, lava_clips=1, workers=2, crop="auto", python=python, write=False)
    print(f"paper-size Lava verification of 1 clip: {time.perf_counter() - t0:.0f} s, "
          f"{report['lava_seconds']} s in Lava")
    assert report["all_bit_exact"] and report["passed"]
    assert report["partitions_cropped"] == 22  # every partition is over the budget at paper size
    for name, r in report["partitions"].items():
        assert r["lava_vs_emulation_mismatches"] == 0 and r["crop_vs_full_frame_emulation_mismatches"] == 0, name
        assert r["clips"] == 1 and r["input_spikes"] > 0, name
        assert r["neurons"] < r["neurons_full_frame"] and "output channels" in r["checked"]["description"], name
    assert report["partitions"]["patch_embed2.lif>blocks2.0.lif"]["checked"]["description"].startswith("crop ")
    assert sum(r["lava_spikes"] for r in report["partitions"].values()) > 0
