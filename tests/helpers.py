"""Helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from svformer_deploy.cli import main


def run_cli(argv: list[str]) -> int | None:
    """Run the CLI in-process and return its exit code (``main`` always exits)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def write_ucf_tree(root: Path, groups: int, write_video: Callable[[Path, int, int], None], ext: str = ".avi",
                   classes: tuple[str, ...] = ("Calm", "Noisy")) -> tuple[list[str], list[str]]:
    """A UCF101 tree under ``root``: per class (label 1, 2, ...) videos ``<cls>/v_<cls>_g<gg>_c01<ext>`` for groups
    1..``groups``, each written by ``write_video(path, group, label)``; group 1 is the test split, the others train.
    Writes classInd.txt, trainlist01.txt and testlist01.txt; returns (train lines, test names)."""
    train, test = [], []
    for label, cls in enumerate(classes, 1):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for g in range(1, groups + 1):
            name = f"{cls}/v_{cls}_g{g:02d}_c01{ext}"
            write_video(root / name, g, label)
            if g == 1:
                test.append(name)
            else:
                train.append(f"{name} {label}")
    (root / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    (root / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (root / "testlist01.txt").write_text("\n".join(test) + "\n")
    return train, test


def write_mjpeg(path, sizes: list[tuple[int, int]], frames_each: int = 6) -> list:
    """Write an MJPEG AVI (PyAV) whose one video stream holds ``frames_each`` frames at each (width, height) of
    ``sizes`` in turn: a stream whose frame size changes mid-stream (PyAV #3, torchcodec #312), as MJPEG cameras,
    concatenated recordings and resolution switches produce. The container's header states the first size. Every
    frame is a different picture (a moving bright square on a ramp). Returns the RGB frames as encoded."""
    import fractions

    import av
    import numpy as np

    pictures = []
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = sizes[0][0], sizes[0][1], "yuvj420p"
        pts = 0
        for width, height in sizes:
            encoder = av.CodecContext.create("mjpeg", "w")  # one encoder per size, muxed into the same stream
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
            encoder.time_base = fractions.Fraction(1, 25)
            for _ in range(frames_each):
                image = np.zeros((height, width, 3), np.uint8)
                image[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
                y, x = (3 * pts) % (height - 8), (5 * pts) % (width - 8)
                image[y:y + 8, x:x + 8] = 255
                pictures.append(image)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
                frame.pts, frame.time_base = pts, encoder.time_base
                for packet in encoder.encode(frame):
                    packet.stream = stream
                    out.mux(packet)
                pts += 1
            for packet in encoder.encode(None):
                packet.stream = stream
                out.mux(packet)
    return pictures


def failing_av_open(real_open, name: str, error: BaseException, after: int = 2):  # noqa: ANN001, ANN201
    """``av.open`` for fault injection: files whose name is ``name`` decode ``after`` frames, then their decoder
    raises ``error`` (an exception type other than FFmpeg's, as a decoder library may raise on an odd file);
    every other file opens as usual."""
    from pathlib import Path

    class Failing:
        def __init__(self, container) -> None:  # noqa: ANN001
            self._container = container

        def __enter__(self) -> "Failing":
            return self

        def __exit__(self, *exc: object) -> None:
            self._container.close()

        def __getattr__(self, attr: str):  # noqa: ANN204
            return getattr(self._container, attr)

        def decode(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            for i, frame in enumerate(self._container.decode(*args, **kwargs)):
                if i == after:
                    raise error
                yield frame

    def open_(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        container = real_open(file, *args, **kwargs)
        return Failing(container) if Path(str(file)).name == name else container

    return open_
