"""Display rotation: a video whose container says "rotate" (phones write a display matrix) is decoded as it is
displayed, and short-side resizing and crops act on the displayed frames. Fixtures are written with PyAV's
``set_display_rotation`` (FFmpeg's display matrix)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from svformer_deploy.data.video_folder import VideoFolder, decode_frames, display_oriented
from svformer_deploy.models import get_config

RED, GREEN, BLUE, WHITE = (230, 20, 20), (20, 230, 20), (20, 20, 230), (235, 235, 235)


def quadrants(h: int = 48, w: int = 64) -> np.ndarray:
    """Landscape frame: red top-left, green top-right, blue bottom-left, white bottom-right."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2], img[: h // 2, w // 2:] = RED, GREEN
    img[h // 2:, : w // 2], img[h // 2:, w // 2:] = BLUE, WHITE
    return img


def write_video(path: Path, frame: np.ndarray, n: int = 12, rotation: int | None = None, hflip: bool = False) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv444p"
        stream.options = {"qp": "0"}  # lossless: the pixels of every file are exactly the frames written
        if rotation is not None:
            stream.set_display_rotation(rotation, hflip=hflip)
        for _ in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def colour_at(img: np.ndarray, y: float, x: float) -> tuple[int, ...]:
    return tuple(int(v) for v in img[int(y * (img.shape[0] - 1)), int(x * (img.shape[1] - 1))])


def close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return max(abs(u - v) for u, v in zip(a, b)) <= 8


@pytest.mark.parametrize("rotation, k", [(90, 1), (-90, -1), (180, 2), (0, 0)])
def test_rotated_video_is_decoded_as_displayed(tmp_path, rotation, k):
    """Rotation r (counter-clockwise, as FFmpeg/PyAV report it) turns the stored pixels r degrees CCW."""
    plain = decode_frames(write_video(tmp_path / "plain.mp4", quadrants()), lambda n: [0, n - 1])
    shown = decode_frames(write_video(tmp_path / "rot.mp4", quadrants(), rotation=rotation), lambda n: [0, n - 1])
    for p, s in zip(plain, shown):
        assert s.shape == np.rot90(p, k).shape
        assert np.array_equal(s, np.rot90(p, k))
    if rotation == 90:  # CCW: the top-right (green) corner comes to the top-left, red goes to the bottom-left
        img = shown[0]
        assert img.shape[:2] == (64, 48)
        assert close(colour_at(img, 0, 0), GREEN) and close(colour_at(img, 1, 0), RED)
        assert close(colour_at(img, 0, 1), WHITE) and close(colour_at(img, 1, 1), BLUE)


@pytest.mark.parametrize("rotation", [90, -90, 180, 0])
def test_mirrored_rotation_is_displayed_as_written(tmp_path, rotation):
    """Rotation with a horizontal mirror (the mirrored EXIF orientations): PyAV's writer documents the mirror as
    applied after the counter-clockwise turn."""
    frames = decode_frames(write_video(tmp_path / "m.mp4", quadrants(), rotation=rotation, hflip=True),
                           lambda n: [0])
    assert np.array_equal(frames[0], np.rot90(quadrants(), rotation // 90)[:, ::-1])


def test_display_oriented_without_matrix_is_identity():
    img = quadrants()
    assert display_oriented(img, None) is img
    assert np.array_equal(display_oriented(img, np.array([65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30])), img)


def test_crops_and_resizing_act_on_displayed_frames(tmp_path):
    """A portrait video stored as landscape + rotation gives the same views as the same video stored upright:
    short side = displayed width, the 3 crops run along the displayed height."""
    root = tmp_path / "ucf"
    (root / "Phone").mkdir(parents=True)
    write_video(root / "Phone" / "v_Phone_g01_c01.mp4", quadrants(), rotation=90)
    write_video(root / "Phone" / "v_Phone_g02_c01.mp4", np.ascontiguousarray(np.rot90(quadrants(), 1)))
    (root / "classInd.txt").write_text("1 Phone\n")
    (root / "trainlist01.txt").write_text("Phone/v_Phone_g02_c01.mp4 1\n")
    (root / "testlist01.txt").write_text("Phone/v_Phone_g01_c01.mp4\nPhone/v_Phone_g02_c01.mp4\n")
    cfg = get_config("svformer_tiny", num_classes=1, img_size=32, num_frames=4)
    ds = VideoFolder(root, cfg, split="test", train=False, crops=3, sampling_rate=2)
    rotated, _ = ds.test_views(0)
    upright, _ = ds.test_views(1)
    assert rotated.shape == upright.shape == (3, 3, 4, 32, 32)
    assert torch.equal(rotated, upright)
    top, bottom = rotated[0], rotated[2]  # the top crop holds green/white, the bottom one red/blue
    assert float(top[1].mean()) > float(top[0].mean()) and float(bottom[2].mean()) > float(bottom[1].mean())
