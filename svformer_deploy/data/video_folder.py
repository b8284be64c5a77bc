"""UCF101 / HMDB51 folder datasets, decoded with PyAV.

Layouts (see docs/data.md):

- UCF101: ``<root>/<Class>/<video>`` and the official split files ``classInd.txt`` (``1 ApplyEyeMakeup``),
  ``trainlist0N.txt`` (``Class/video.avi 1``) and ``testlist0N.txt`` (``Class/video.avi``), in ``root`` or one
  folder below it (e.g. ``ucfTrainTestlist/``).
- HMDB51: ``<root>/<class>/<video>`` and ``<class>_test_split{N}.txt`` files (``video.avi 1|2|0``: train,
  test, unused), in ``root`` or one folder below it; classes are the sorted class names.

Clip sampling follows the reference (SlowFast's ``get_start_end_idx``): a clip spans ``T x rate`` frames;
training clips start uniformly at random in [0, n - T*rate]; test clip i of K starts at (n - T*rate) * i / K;
frame indices are ``linspace(start, start + T*rate - 1, T)`` rounded and clamped to the video.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from svformer_deploy._paths import read_user_text
from svformer_deploy.errors import DataError
from svformer_deploy.models.config import SVFormerConfig

__all__ = ["Layout", "detect_layout", "clip_indices", "decode_frames", "display_oriented", "resize_frame",
           "short_side_resize",
           "spatial_crops", "TrainAugment", "VideoFolder", "mix_batch"]


@dataclass(frozen=True)
class Layout:
    """A dataset's classes and its (relative path, label) lists for one official split."""

    kind: str
    root: Path
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...] = field(repr=False)
    test: tuple[tuple[str, int], ...] = field(repr=False)


def _find(root: Path, pattern: str) -> list[Path]:
    found = sorted(root.glob(pattern))
    return found or sorted(root.glob(f"*/{pattern}"))


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in read_user_text(path).splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read split file {path} ({err}); re-extract the official split files") from err


def _ucf(root: Path, class_ind: Path, split_no: int) -> Layout:
    classes: list[str] = []
    for i, ln in enumerate(_read_lines(class_ind), 1):
        parts = ln.split()
        if len(parts) != 2 or parts[0] != str(i):
            raise DataError(f"{class_ind}: line {i} is {ln!r}, expected '{i} <ClassName>'")
        classes.append(parts[1])
    index = {c: i for i, c in enumerate(classes)}
    lists = {}
    for kind in ("train", "test"):
        path = class_ind.parent / f"{kind}list0{split_no}.txt"
        if not path.exists():
            raise DataError(f"split file {path} is missing; UCF101 needs classInd.txt, trainlist0{split_no}.txt and "
                            f"testlist0{split_no}.txt next to each other (or choose another --split)")
        items = []
        for ln in _read_lines(path):
            rel = ln.split()[0].replace("\\", "/")
            cls = rel.split("/")[0]
            if cls not in index:
                raise DataError(f"{path}: {rel!r} is in class {cls!r}, which classInd.txt does not list")
            items.append((rel, index[cls]))
        lists[kind] = tuple(items)
    return Layout("ucf101", root, tuple(classes), lists["train"], lists["test"])


def _hmdb(root: Path, split_files: list[Path], split_no: int) -> Layout:
    per_class: dict[str, list[tuple[str, int]]] = {}
    for path in split_files:
        cls = re.sub(rf"_test_split{split_no}\.txt$", "", path.name)
        per_class[cls] = []
        for ln in _read_lines(path):
            parts = ln.split()
            if len(parts) != 2 or parts[1] not in "012":
                raise DataError(f"{path}: line {ln!r} is not '<video> <0|1|2>'")
            per_class[cls].append((parts[0], int(parts[1])))
    classes = tuple(sorted(per_class))
    train, test = [], []
    for label, cls in enumerate(classes):
        for name, use in per_class[cls]:
            (train if use == 1 else test if use == 2 else []).append((f"{cls}/{name}", label))
    return Layout("hmdb51", root, classes, tuple(train), tuple(test))


def detect_layout(root: str | os.PathLike, split_no: int = 1) -> Layout:
    """Read the official split files under ``root`` (UCF101 or HMDB51 layout) for split ``split_no``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data {str(root)!r} is neither 'moving-digits' nor a folder; pass 'moving-digits' or the "
                        "root folder of a UCF101/HMDB51 copy")
    if split_no not in (1, 2, 3):
        raise DataError(f"split {split_no}: UCF101 and HMDB51 have official splits 1, 2 and 3")
    class_ind = _find(root, "classInd.txt")
    if class_ind:
        return _ucf(root, class_ind[0], split_no)
    hmdb = _find(root, f"*_test_split{split_no}.txt")
    if hmdb:
        return _hmdb(root, hmdb, split_no)
    raise DataError(f"{root} has no split files: expected UCF101's classInd.txt + trainlist0N.txt/testlist0N.txt or "
                    "HMDB51's <class>_test_splitN.txt (in the folder or one level below); copy the official split "
                    "files there")


def clip_indices(num_frames_video: int, num_frames: int, rate: int, clip_idx: int, num_clips: int,
                 rng: random.Random | None = None) -> np.ndarray:
    """Frame indices of one clip (T of them): random start if ``clip_idx == -1`` (training), else test clip
    ``clip_idx`` of ``num_clips`` starting at delta * clip_idx / num_clips, delta = max(n - T*rate, 0)."""
    clip_size = num_frames * rate
    delta = max(num_frames_video - clip_size, 0)
    start = (rng or random).uniform(0, delta) if clip_idx == -1 else delta * clip_idx / num_clips
    idx = np.round(np.linspace(start, start + clip_size - 1, num_frames)).astype(np.int64)
    return np.clip(idx, 0, num_frames_video - 1)


def display_oriented(image: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """(H, W, C) decoded pixels as a player displays them, given the stream's 3x3 display matrix (FFmpeg's
    ``AV_FRAME_DATA_DISPLAYMATRIX``, 9 int32 in 16.16 fixed point, row-major) or None.

    The rule is FFmpeg's autorotate (fftools): theta = -(counter-clockwise angle of the matrix), in [0, 360);
    theta 90: vertical flip if m[3] > 0, then rotate 90 degrees clockwise; theta 270: vertical flip if
    m[3] < 0, then rotate 90 degrees counter-clockwise; theta 180: horizontal flip if m[0] < 0, vertical
    flip if m[4] < 0; theta 0: vertical flip if m[4] < 0. Phones record portrait video as landscape pixels plus
    such a matrix (usually theta 90). Other angles are left as stored.
    """
    if matrix is None:
        return image
    m = np.asarray(matrix, dtype=np.float64)
    s0, s1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if not s0 or not s1:  # a degenerate matrix (av_display_rotation_get gives NaN): keep the pixels as stored
        return image
    ccw = -math.degrees(math.atan2(m[1] / s1, m[0] / s0))  # av_display_rotation_get
    theta = -round(ccw) % 360
    if abs(theta - 90) < 1:
        image = np.rot90(image[::-1] if m[3] > 0 else image, -1)
    elif abs(theta - 270) < 1:
        image = np.rot90(image[::-1] if m[3] < 0 else image, 1)
    elif abs(theta - 180) < 1:
        image = image[:, ::-1] if m[0] < 0 else image
        image = image[::-1] if m[4] < 0 else image
    elif abs(theta) < 1 and m[4] < 0:
        image = image[::-1]
    return np.ascontiguousarray(image)


def _display_matrix(frame) -> np.ndarray | None:  # noqa: ANN001 (av.VideoFrame)
    """The frame's display matrix (9 int32) or None when the file states none."""
    for data in frame.side_data:
        if data.type.name == "DISPLAYMATRIX":
            return np.frombuffer(data, dtype=np.int32).copy()
    return None


def resize_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 pixels resized to ``size`` = (H', W'): bilinear with antialiasing (the filter of
    :func:`short_side_resize`), rounded to the nearest integer; the array itself when it already has that size."""
    if image.shape[:2] == tuple(size):
        return image
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    out = F.interpolate(pixels, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def _decode_failure(path: Path, err: Exception, what: str = "decode") -> DataError:
    """The one error of a video that its decoder gave up on, whatever the exception (FFmpeg's, the OS's, or any
    other type a decoder library raises on a damaged or unusual file: then its type is named too)."""
    import av

    reason = str(err) if isinstance(err, (av.FFmpegError, OSError)) else f"{type(err).__name__}: {err}"
    return DataError(f"cannot {what} video {path}: {reason}; the file is truncated or corrupt -- re-copy it or "
                     "remove it from the split list")


def _decode(path: Path, wanted: set[int] | None, stop: int | None) -> tuple[dict[int, np.ndarray], int]:
    """Frames ``wanted`` (all for None, none for an empty set: a count) of the first video stream, up to index
    ``stop``, and the number of frames decoded. Every frame comes out at one size: the displayed size of the
    stream's first frame (:func:`resize_frame` for a frame of another size, e.g. a stream whose resolution
    changes mid-stream)."""
    import av

    frames: dict[int, np.ndarray] = {}
    count = 0
    size: tuple[int, int] | None = None  # (H, W) of the first frame, as displayed
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream; remove it from the split list")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                keep = wanted is None or count in wanted
                if keep or (size is None and wanted):  # the first frame sets the size of all (not when counting)
                    image = display_oriented(frame.to_ndarray(format="rgb24"), _display_matrix(frame))
                    size = size or image.shape[:2]
                    if keep:
                        frames[count] = resize_frame(image, size)
                count += 1
                if stop is not None and count > stop:
                    break
    except DataError:
        raise
    except Exception as err:  # one bad file never stops a run with a traceback, whatever its decoder raises
        raise _decode_failure(path, err) from err
    return frames, count


def _declared_frames(path: Path) -> int:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream; remove it from the split list")
            return int(container.streams.video[0].frames or 0)
    except DataError:
        raise
    except Exception as err:
        raise _decode_failure(path, err, "open") from err


def decode_frames(path: str | os.PathLike, select) -> list[np.ndarray]:  # noqa: ANN001
    """Decode the frames ``select(n)`` picks from a video of n frames: list of (H, W, 3) uint8 RGB arrays per
    returned index (repeats allowed), all of one size, the displayed size of the video's first frame (a frame of
    another size is resized to it: :func:`resize_frame`). Uses the container's frame count when it states one,
    else decodes once to count; if the file holds fewer frames than it claims, the indices are re-drawn for the
    frames it holds. Any failure of the decoder is a :class:`DataError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video {path} does not exist; check the dataset root and the split files")
    n = _declared_frames(path)
    if n <= 0:
        n = _decode(path, set(), None)[1]
    if n <= 0:
        raise DataError(f"video {path} holds no decodable frames; re-copy it or remove it from the split list")
    idx = [int(i) for i in select(n)]
    frames, count = _decode(path, set(idx), max(idx))
    if any(i not in frames for i in idx):  # fewer frames than declared
        if count <= 0:
            raise DataError(f"video {path} holds no decodable frames; re-copy it or remove it from the split list")
        idx = [int(i) for i in select(count)]
        frames, _ = _decode(path, set(idx), max(idx))
    return [frames[i] for i in idx]


def short_side_resize(video: Tensor, size: int) -> Tensor:
    """Resize (T, C, H, W) float frames so that min(H, W) == size, keeping the aspect ratio (bilinear)."""
    h, w = video.shape[-2:]
    if min(h, w) == size:
        return video
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(video, size=new, mode="bilinear", align_corners=False, antialias=True)


def spatial_crops(video: Tensor, size: int, num_crops: int) -> list[Tensor]:
    """``size`` x ``size`` crops of short-side-resized (T, C, H, W) frames: 1 = centre; 3 = start, centre and end of
    the long side (as the reference's test-time uniform crops)."""
    h, w = video.shape[-2:]
    if num_crops == 1:
        offsets = [((h - size) // 2, (w - size) // 2)]
    elif h >= w:
        offsets = [(0, (w - size) // 2), ((h - size) // 2, (w - size) // 2), (h - size, (w - size) // 2)]
    else:
        offsets = [((h - size) // 2, 0), ((h - size) // 2, (w - size) // 2), ((h - size) // 2, w - size)]
    return [video[..., y:y + size, x:x + size] for y, x in offsets]


@dataclass(frozen=True)
class TrainAugment:
    """Training augmentation of one clip, the same random parameters for all its frames.

    Always: multi-scale random resized crop (area ``scale``, aspect ``ratio``) to img_size and a horizontal
    flip with p = 0.5. Options: RandAugment (``rand_augment=(num_ops, magnitude)``, the reference uses (2, 5)),
    random erasing with probability ``erase_prob`` (reference 0.25). Mixup / CutMix act on batches: see
    :func:`mix_batch`.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rand_augment: tuple[int, int] | None = None
    erase_prob: float = 0.0

    def __call__(self, frames: Tensor, size: int) -> Tensor:
        """(T, C, H, W) uint8 -> (T, C, size, size) float in [0, 1]."""
        from torchvision.transforms import v2

        ops: list = [v2.RandomResizedCrop(size, scale=self.scale, ratio=self.ratio, antialias=True),
                     v2.RandomHorizontalFlip()]
        if self.rand_augment is not None:
            ops.append(v2.RandAugment(num_ops=self.rand_augment[0], magnitude=self.rand_augment[1]))
        ops.append(v2.ToDtype(torch.float32, scale=True))
        if self.erase_prob > 0:
            ops.append(v2.RandomErasing(p=self.erase_prob, value=0))
        return v2.Compose(ops)(frames)


def mix_batch(clips: Tensor, labels: Tensor, num_classes: int, *, mixup_alpha: float = 0.0,
              cutmix_alpha: float = 0.0, smoothing: float = 0.0, rng: np.random.Generator | None = None,
              ) -> tuple[Tensor, Tensor]:
    """Mixup or CutMix (one of them, chosen with p = 0.5 when both are on) on a batch (B, C, T, H, W).

    Targets become soft: y = lam * onehot_s(labels) + (1 - lam) * onehot_s(labels[perm]) with perm the reversed
    batch and onehot_s the label-smoothed one-hot (1 - s + s/K on the label, s/K elsewhere). Mixup:
    x = lam x + (1 - lam) x[perm], lam ~ Beta(a, a). CutMix pastes one box of x[perm] into all frames of x and sets
    lam = 1 - box area / frame area.
    """
    off = smoothing / num_classes
    onehot = torch.full((len(labels), num_classes), off, device=clips.device)
    onehot.scatter_(1, labels[:, None], 1.0 - smoothing + off)
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return clips, onehot
    rng = rng or np.random.default_rng()
    perm = torch.arange(len(labels) - 1, -1, -1, device=clips.device)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.uniform() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    if use_cutmix:
        h, w = clips.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        clips = clips.clone()
        clips[..., y0:y1, x0:x1] = clips[perm][..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        clips = lam * clips + (1 - lam) * clips[perm]
    return clips, lam * onehot + (1 - lam) * onehot[perm]


@contextlib.contextmanager
def _making_clip(path: Path) -> Iterator[None]:
    """Decoded frames that still cannot be stacked, resized, cropped or augmented into a clip (the errors numpy and
    torch raise for such arrays) make a :class:`DataError` naming the video, like a file that cannot be decoded."""
    try:
        yield
    except (ValueError, RuntimeError, TypeError, IndexError) as err:
        raise DataError(f"cannot make a clip of video {path} ({type(err).__name__}: {err}); re-encode it (e.g. "
                        "ffmpeg -i IN -c:v libx264 OUT.mp4) or remove it from the split list") from err


class VideoFolder(torch.utils.data.Dataset):
    """Clips of a UCF101 / HMDB51 folder for training (one random augmented clip per video) or testing.

    Items are ``(clip (C, T, H, W) normalised, label)`` (training: one augmented clip; else the first test view);
    a video that cannot be decoded or made into a clip (:class:`DataError`, whatever its decoder raised) gives
    ``(None, label, video_id)`` instead so that
    :func:`svformer_deploy.training.collate_skip_bad` can drop, count and name it (training and the validation
    inside ``train`` go on). All test views come from :meth:`test_views`, which raises :class:`DataError`.
    """

    def __init__(self, root: str | os.PathLike, config: SVFormerConfig, *, split: str = "train", train: bool = True,
                 split_no: int = 1, sampling_rate: int = 4, clips: int = 1, crops: int = 1, seed: int = 0,
                 augment: TrainAugment | None = None, **augment_options) -> None:  # noqa: ANN003
        self.layout = detect_layout(root, split_no)
        self.items = self.layout.train if split == "train" else self.layout.test
        if not self.items:
            raise DataError(f"{root}: the {split} list of split {split_no} is empty; check the split files")
        if len(self.layout.classes) != config.num_classes:
            raise DataError(f"{root} has {len(self.layout.classes)} classes but the model has {config.num_classes}; "
                            f"build the model with num_classes={len(self.layout.classes)}")
        self.config, self.train, self.rate, self.clips, self.crops = config, train, sampling_rate, clips, crops
        self.augment = augment or TrainAugment(**augment_options)
        self.mean = torch.tensor(config.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(config.std).view(1, -1, 1, 1)
        self.classes = list(self.layout.classes)
        self.epoch = 0
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def video_id(self, i: int) -> str:
        return self.items[i][0]

    def path(self, i: int) -> Path:
        return self.layout.root / self.items[i][0]

    def _normalise(self, frames: Tensor) -> Tensor:
        """(T, C, H, W) float in [0, 1] -> (C, T, H, W) normalised."""
        return ((frames - self.mean) / self.std).permute(1, 0, 2, 3).contiguous()

    def train_clip(self, i: int) -> Tensor:
        """One random clip of video i with training augmentation, (C, T, H, W)."""
        rng = random.Random(hash((self.seed, self.epoch, i)))
        T = self.config.num_frames
        frames = decode_frames(self.path(i), lambda n: clip_indices(n, T, self.rate, -1, 1, rng))
        with _making_clip(self.path(i)):
            video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
            return self._normalise(self.augment(video, self.config.img_size))

    def test_views(self, i: int) -> tuple[Tensor, int]:
        """All clips x crops views of video i, (V, C, T, H, W) with view = clip * crops + crop."""
        T, size = self.config.num_frames, self.config.img_size

        def select(n: int) -> list[int]:
            return [int(j) for k in range(self.clips) for j in clip_indices(n, T, self.rate, k, self.clips)]

        frames = decode_frames(self.path(i), select)
        views = []
        with _making_clip(self.path(i)):
            for k in range(self.clips):
                clip = torch.from_numpy(np.stack(frames[k * T:(k + 1) * T])).permute(0, 3, 1, 2).float() / 255.0
                clip = short_side_resize(clip, size)
                views.extend(self._normalise(c) for c in spatial_crops(clip, size, self.crops))
            return torch.stack(views), self.items[i][1]

    def __getitem__(self, i: int):  # noqa: ANN204
        label = self.items[i][1]
        try:
            return (self.train_clip(i) if self.train else self.test_views(i)[0][0]), label
        except DataError:
            return None, label, self.video_id(i)
