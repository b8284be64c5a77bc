"""DDP through torchrun: 2 CPU processes with the gloo backend share one epoch of moving digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from svformer_deploy.models import load_checkpoint


def test_torchrun_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "svformer_deploy", "train", "--device", "cpu", "--epochs", "1", "--batch-size", "4",
           "--train-clips", "32", "--val-videos", "10", "--set", "img_size=32", "--set", "num_frames=4",
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "metrics.json").read_text())
    # 32 clips / (4 per step x 2 processes) = 4 steps per process; both shards together cover the 32 clips
    assert len(rows) == 1 and rows[0]["train_clips"] == 32
    model, meta = load_checkpoint(out / "last.pt")
    assert meta["world_size"] == 2 and not any(k.startswith("module.") for k in model.state_dict())
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
