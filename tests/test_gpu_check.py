"""benchmarks/gpu/check.sh --dry-run: the GPU check's CPU parts run here, so the device minutes go to the GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "check.sh"


@pytest.mark.slow
def test_dry_run_checks_the_wheels_collects_the_cuda_tests_and_runs_both_benchmarks(tmp_path):
    wheels = tmp_path / "wheels"
    fetch = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "fetch_wheels.sh")], capture_output=True,
                           text=True, timeout=600, env={**os.environ, "WHEELS_DIR": str(wheels)})
    assert fetch.returncode == 0, fetch.stderr[-2000:]
    assert "of 64" in fetch.stdout
    together = int(fetch.stdout.split("together ")[1].split()[0])
    assert together < 64, fetch.stdout
    out = tmp_path / "out"
    res = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run", "--wheels", str(wheels)], capture_output=True,
                         text=True, timeout=900, cwd=tmp_path, env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench_model.log", "bench_train.log", "cuda-tests.log", "env.txt", "install.log", "summary.txt",
                     "timings.tsv"]  # flat, at most 8: what the device tool brings back
    summary = (out / "summary.txt").read_text()
    assert "DRY RUN" in summary and "missing from image and wheels: none" in summary
    assert " skipped" in summary and "passed" not in summary.split("skipped")[0].splitlines()[-1]
    assert "speed-up" in summary and "fused vs reference kernel" in summary and "clips/s" in summary
    steps = [line.split("\t") for line in (out / "timings.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == ["env", "install", "cuda-tests", "bench_model", "bench_train"]
    assert all(s[1] == "ok" for s in steps), steps


def test_dry_run_refuses_a_wheel_folder_that_lacks_a_dependency(tmp_path):
    (tmp_path / "wheels").mkdir()
    res = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "--dry-run", "--wheels",
                          str(tmp_path / "wheels")], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode != 0
    assert "install: FAILED" in res.stdout and "fetch_wheels.sh" in (tmp_path / "out" / "install.log").read_text()
