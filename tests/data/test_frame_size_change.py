"""Videos whose frame size changes mid-stream, and decoders that fail with any exception type (issue 26, item 1).

The case (PyAV #3, torchcodec #312): an MJPEG stream going from 64x48 to 48x64. Before, ``evaluate`` and ``train``
stopped with a traceback (``ValueError`` from ``np.stack``). Now every frame of a video comes out at the displayed
size of its first frame; a video that still cannot be made into a clip, or whose decoder raises anything at all, is
a ``DataError``: skipped and counted in training, one line and exit 2 in ``evaluate``.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from svformer_deploy.data import build_dataset, iter_eval_videos
from svformer_deploy.data.video_folder import TrainAugment, decode_frames, resize_frame
from svformer_deploy.errors import DataError
from svformer_deploy.models import create_model, get_config, save_checkpoint
from tests.helpers import failing_av_open, run_cli, write_mjpeg, write_ucf_tree

CFG = get_config("svformer_tiny", num_classes=2, img_size=32, num_frames=4)

SEQUENCES = {  # (width, height) of each run of frames
    "landscape-portrait": [(64, 48), (48, 64)],
    "portrait-landscape": [(48, 64), (64, 48)],
    "three-sizes": [(64, 48), (32, 32), (80, 64)],
}


def _plain_decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_every_frame_comes_out_at_the_first_frames_size(tmp_path, name):
    sizes = SEQUENCES[name]
    path = tmp_path / "v.avi"
    pictures = write_mjpeg(path, sizes, frames_each=5)
    plain = _plain_decode(path)
    assert {f.shape for f in plain} == {(h, w, 3) for w, h in sizes}  # the file really changes size
    frames = decode_frames(path, lambda n: list(range(n)))
    w0, h0 = sizes[0]
    assert len(frames) == len(plain) == 5 * len(sizes)
    assert all(f.shape == (h0, w0, 3) and f.dtype == np.uint8 for f in frames)
    for i, (got, decoded, picture) in enumerate(zip(frames, plain, pictures)):
        if decoded.shape[:2] == (h0, w0):
            assert np.array_equal(got, decoded)  # frames of the first size are untouched
        else:
            # the whole picture stretched to the first size (not cropped, not padded): close to the encoded
            # picture resized, up to JPEG's loss
            want = F.interpolate(torch.from_numpy(picture).permute(2, 0, 1)[None].float(), size=(h0, w0),
                                 mode="bilinear", align_corners=False, antialias=True)[0].permute(1, 2, 0).numpy()
            assert np.abs(got.astype(np.float64) - want).mean() < 6, i


def test_resize_frame_hand_computed():
    image = np.array([[[0, 0, 0], [100, 100, 100]], [[200, 200, 200], [50, 50, 50]]], dtype=np.uint8)
    assert resize_frame(image, (2, 2)) is image
    # to 1x1: the antialiased bilinear filter averages all four pixels: (0 + 100 + 200 + 50) / 4 = 87.5 -> 88
    assert resize_frame(image, (1, 1)).tolist() == [[[88, 88, 88]]]
    assert resize_frame(image, (4, 3)).shape == (4, 3, 3)


@pytest.fixture()
def size_change_tree(tmp_path) -> Path:
    """UCF101 layout: 2 classes x 3 videos, every one an MJPEG stream whose frame size changes."""
    root = tmp_path / "ucf"
    names = list(SEQUENCES)
    write_ucf_tree(root, 3, lambda path, g, label: write_mjpeg(path, SEQUENCES[names[(g + label) % 3]], frames_each=6))
    return root


def test_clips_and_views_of_size_changing_videos(size_change_tree):
    ds = build_dataset(size_change_tree, CFG, split="train", sampling_rate=2)
    for i in range(len(ds)):
        clip, label = ds[i]
        assert clip.shape == (3, 4, 32, 32) and torch.isfinite(clip).all()
    samples = list(iter_eval_videos(size_change_tree, CFG, clips=2, crops=3))
    assert len(samples) == 2 and all(s.views.shape == (6, 3, 4, 32, 32) for s in samples)


ERRORS = [RuntimeError("decoder thread died"), TypeError("'NoneType' object is not subscriptable"),
          IndexError("list index out of range"), KeyError("side_data"), MemoryError(), AssertionError("bad state"),
          NotImplementedError("pixel format yuv444p12le"), ZeroDivisionError("division by zero")]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_any_decoder_exception_is_a_data_error_naming_the_file_and_the_skip_counts_it(size_change_tree, monkeypatch,
                                                                                      error):
    monkeypatch.setattr(av, "open", failing_av_open(av.open, "v_Calm_g02_c01.avi", error))
    with pytest.raises(DataError, match=rf"cannot decode video .*v_Calm_g02_c01\.avi: {type(error).__name__}"):
        decode_frames(size_change_tree / "Calm" / "v_Calm_g02_c01.avi", lambda n: list(range(n)))
    ds = build_dataset(size_change_tree, CFG, split="train", sampling_rate=2)
    assert ds[0] == (None, 0, "Calm/v_Calm_g02_c01.avi")
    assert ds[1][0].shape == (3, 4, 32, 32)


def test_frames_that_cannot_be_made_into_a_clip_are_a_data_error(size_change_tree, monkeypatch):
    def broken(self, frames, size):  # noqa: ANN001, ANN202
        raise RuntimeError("Input and output sizes should be greater than 0")

    monkeypatch.setattr(TrainAugment, "__call__", broken)
    ds = build_dataset(size_change_tree, CFG, split="train", sampling_rate=2)
    with pytest.raises(DataError, match=r"cannot make a clip of video .*v_Calm_g02_c01\.avi \(RuntimeError"):
        ds.train_clip(0)
    assert ds[0] == (None, 0, "Calm/v_Calm_g02_c01.avi")


def _checkpoint(tmp_path: Path, root: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("svformer_tiny", img_size=32, num_frames=4, num_classes=2).eval()
    return save_checkpoint(tmp_path / "m.pt", model, class_names=["Calm", "Noisy"], data=str(root))


def test_cli_evaluate_size_changing_videos_and_a_failing_decoder(size_change_tree, tmp_path, monkeypatch, capsys):
    ckpt = _checkpoint(tmp_path, size_change_tree)
    assert run_cli(["evaluate", str(ckpt), "--data", str(size_change_tree), "--out", str(tmp_path / "ev"),
                    "--clips", "2", "--crops", "3"]) == 0
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["num_videos"] == 2
    capsys.readouterr()
    monkeypatch.setattr(av, "open", failing_av_open(av.open, "v_Noisy_g01_c01.avi", IndexError("out of range")))
    assert run_cli(["evaluate", str(ckpt), "--data", str(size_change_tree), "--out", str(tmp_path / "ev2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: cannot decode video ") and "v_Noisy_g01_c01.avi: IndexError: out of range" in err
    assert not (tmp_path / "ev2" / "eval.json").exists()


def test_cli_train_on_size_changing_videos_and_a_failing_decoder(size_change_tree, tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    args = ["train", "--data", str(size_change_tree), "--epochs", "1", "--batch-size", "2", "--set", "img_size=32",
            "--set", "num_frames=4", "--sampling-rate", "2", "--precise-bn-batches", "0", "--device", "cpu"]
    assert run_cli([*args, "--out", str(tmp_path / "run")]) == 0
    row = json.loads((tmp_path / "run" / "metrics.json").read_text())[0]
    assert row["train_clips"] == 4 and row["skipped_videos"] == 0 and row["val_clips"] == 2
    monkeypatch.setattr(av, "open", failing_av_open(av.open, "v_Noisy_g03_c01.avi", RuntimeError("decoder died")))
    assert run_cli([*args, "--out", str(tmp_path / "run2")]) == 0
    row = json.loads((tmp_path / "run2" / "metrics.json").read_text())[0]
    assert row["skipped_videos"] == 1 and row["skipped_ids"] == "Noisy/v_Noisy_g03_c01.avi"
    assert "skipped 1 unreadable video(s)" in capsys.readouterr().out
