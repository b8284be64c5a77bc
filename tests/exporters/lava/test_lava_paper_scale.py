"""Paper scale: the svformer_ucf101 architecture (shared BN, 10 classes, random weights) exports to a Lava bundle
that reads back with its manifest re-derived (every operation covered once), no weight clipped."""

import warnings

import pytest
import torch

from svformer_deploy.exporters.lava.export import export_lava
from svformer_deploy.exporters.lava.quantize import LoihiOverflowWarning
from svformer_deploy.exporters.lava.verify import load_lava_bundle
from svformer_deploy.models import create_model


@pytest.mark.slow
def test_paper_size_model_exports_to_lava(tmp_path):
    torch.manual_seed(0)
    model = create_model("svformer_ucf101", num_classes=10, bn="shared").eval()
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
