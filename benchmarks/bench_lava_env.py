"""Cost of building the Lava side environment from scratch: pip with byte-compiling (the baseline) against
``--no-compile`` (what :mod:`svformer_deploy.exporters.lava.sideenv` uses), in the same run.

Each variant builds a fresh venv in its own temporary folder with its own empty pip cache (so both download
everything, as on a fresh machine) through ``sideenv.ensure_venv`` (venv, ``pip install``, the lava-dl import
check, rename), then deletes it. Prints wall time, CPU time of the build's subprocesses (user + system) and
size per variant, and the ratios to the baseline. Needs network access to PyPI and ~6 GB free per variant
(one at a time); never touches the cached venv (``$SVFORMER_LAVA_VENV`` is not used).

    python benchmarks/bench_lava_env.py [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from svformer_deploy.exporters.lava import sideenv

VARIANTS = {"byte-compiling (baseline)": ("-q", "--disable-pip-version-check"),
            "--no-compile": ("-q", "--disable-pip-version-check", "--no-compile")}


def children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def build_once(root: Path, pip_options: tuple[str, ...]) -> dict[str, float]:
    """Build the side environment under ``root`` with ``pip_options``; wall s, children CPU s, size GB."""
    venv = root / "lava-venv"
    old_options, old_cache = sideenv.PIP_OPTIONS, os.environ.get("PIP_CACHE_DIR")
    sideenv.PIP_OPTIONS = pip_options
    os.environ["PIP_CACHE_DIR"] = str(root / "pip-cache")
    try:
        cpu0, t0 = children_cpu(), time.perf_counter()
        sideenv.ensure_venv(venv, print)
        wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    finally:
        sideenv.PIP_OPTIONS = old_options
        if old_cache is None:
            os.environ.pop("PIP_CACHE_DIR", None)
        else:
            os.environ["PIP_CACHE_DIR"] = old_cache
    size = int(subprocess.run(["du", "-sb", str(venv)], capture_output=True, text=True, check=True).stdout.split()[0])
    return {"wall_s": wall, "cpu_s": cpu, "size_gb": size / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="Folder for the temporary venvs (~6 GB each).")
    args = ap.parse_args()
    results = {}
    for name, options in VARIANTS.items():
        root = Path(tempfile.mkdtemp(prefix="bench-lava-env-", dir=args.dir))
        try:
            results[name] = build_once(root, options)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        r = results[name]
        print(f"{name}: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU, {r['size_gb']:.2f} GB", flush=True)
    base = results["byte-compiling (baseline)"]
    for name, r in results.items():
        print(f"{name:28s} wall x{r['wall_s'] / base['wall_s']:.2f}  CPU x{r['cpu_s'] / base['cpu_s']:.2f}  "
              f"size x{r['size_gb'] / base['size_gb']:.2f}")
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
