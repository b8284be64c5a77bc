"""The data contract: ``iter_eval_videos``, ``class_names`` and ``build_dataset`` over every data source."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from svformer_deploy.errors import DataError
from svformer_deploy.models.config import SVFormerConfig

__all__ = ["MOVING_DIGITS", "data_spec", "VideoSample", "iter_eval_videos", "eval_video_count", "class_names", "num_classes",
           "build_dataset"]

MOVING_DIGITS = "moving-digits"


class VideoSample(NamedTuple):
    """One evaluation video: its id, its label, and V = clips x crops normalised views (V, C, T, H, W)."""

    video_id: str
    label: int
    views: Tensor


def _is_digits(spec: str | os.PathLike) -> bool:
    return str(spec) == MOVING_DIGITS


def data_spec(spec: str | os.PathLike) -> str:
    """A data source as the user gives it, as the pipeline takes it: ``'moving-digits'`` unchanged, a folder as its
    resolved path (:func:`svformer_deploy._paths.user_path`)."""
    from svformer_deploy._paths import user_path

    return MOVING_DIGITS if _is_digits(spec) else str(user_path(spec))


def _eval_split(split: str) -> str:
    # The reference evaluates on the test list and calls it "val"; accept both names.
    if split in ("val", "test"):
        return "val"
    if split == "train":
        return "train"
    raise DataError(f"unknown split {split!r}; use 'train', 'val' or 'test'")


def class_names(spec: str | os.PathLike, config: SVFormerConfig | None = None) -> list[str]:
    """Label names of a data source, index = label."""
    if _is_digits(spec):
        from svformer_deploy.data.moving_digits import CLASS_NAMES

        return list(CLASS_NAMES)
    from svformer_deploy.data.video_folder import detect_layout

    return list(detect_layout(Path(spec)).classes)


def num_classes(spec: str | os.PathLike) -> int:
    """Number of labels of a data source."""
    return len(class_names(spec))


def _eval_dataset(spec: str | os.PathLike, config: SVFormerConfig, split: str, clips: int, crops: int, seed: int):
    """The dataset :func:`iter_eval_videos` reads (split already normalised)."""
    if _is_digits(spec):
        from svformer_deploy.data.moving_digits import MovingDigits

        return MovingDigits.for_config(split, config, seed=seed)
    from svformer_deploy.data.video_folder import VideoFolder

    return VideoFolder(spec, config, split=split, train=False, clips=clips, crops=crops)


def eval_video_count(spec: str | os.PathLike, config: SVFormerConfig, *, split: str = "val",
                     num_videos: int | None = None) -> int:
    """How many videos :func:`iter_eval_videos` yields: ``min(num_videos, N)`` for a split of N videos (N for
    ``num_videos`` None). What a record states it used, and how a command tells that it used fewer than asked."""
    n = len(_eval_dataset(spec, config, _eval_split(split), 1, 1, 0))
    return n if num_videos is None else min(num_videos, n)


def iter_eval_videos(spec: str | os.PathLike, config: SVFormerConfig, *, split: str = "val",
                     num_videos: int | None = None, clips: int = 1, crops: int = 1, seed: int = 0,
                     ) -> Iterator[VideoSample]:
    """Yield every video of ``split`` (or the first ``num_videos``; all of them if the split has fewer, see
    :func:`eval_video_count`) as ``clips x crops`` test views.

    Views are ordered clip-major (view = clip * crops + crop), each (C, T, H, W) with T = config.num_frames,
    H = W = config.img_size, normalised with config.mean / config.std. Video files: ``clips`` clips spread
    uniformly over the video, each short-side resized and cut into ``crops`` (1 = centre, 3 = both ends and
    centre of the long side) crops. Moving digits: a clip is exactly T frames at the model's size, so all views
    of a video are the same clip. A file that cannot be decoded raises :class:`DataError` naming it.
    """
    if clips < 1 or crops not in (1, 3):
        raise DataError(f"clips={clips}, crops={crops}: use clips >= 1 and crops 1 or 3")
    if num_videos is not None and num_videos < 1:
        raise DataError(f"num_videos={num_videos} must be positive (or None for the whole split)")
    split = _eval_split(split)
    ds = _eval_dataset(spec, config, split, clips, crops, seed)
    n = len(ds) if num_videos is None else min(num_videos, len(ds))
    for i in range(n):
        if _is_digits(spec):
            clip, label = ds[i]
            views = clip.unsqueeze(0).repeat(clips * crops, 1, 1, 1, 1)
            yield VideoSample(f"{MOVING_DIGITS}/{split}/{i:05d}", label, views)
        else:
            views, label = ds.test_views(i)
            yield VideoSample(ds.video_id(i), label, views)


def build_dataset(spec: str | os.PathLike, config: SVFormerConfig, *, split: str = "train", seed: int = 0,
                  num_clips: int | None = None, **augment: Any) -> torch.utils.data.Dataset:
    """A Dataset of (clip (C, T, H, W), label) for training (``split="train"``: augmented, fresh clips per epoch
    where the source allows) or single-view validation (``split="val"``).

    ``augment`` options apply to video folders (see :class:`~svformer_deploy.data.video_folder.TrainAugment`);
    ``num_clips`` sets the epoch size of moving digits.
    """
    split = _eval_split(split)
    if _is_digits(spec):
        from svformer_deploy.data.moving_digits import MovingDigits

        if augment:
            raise DataError(f"moving-digits takes no augmentation options (got {sorted(augment)}); its training "
                            "clips are new every epoch")
        return MovingDigits.for_config(split, config, seed=seed, num_clips=num_clips)
    from svformer_deploy.data.video_folder import VideoFolder

    return VideoFolder(spec, config, split=split, train=split == "train", seed=seed, **augment)
