"""The Lava side environment: a separate Python 3.10 virtual environment with lava-dl 0.6.0 and h5py.

lava-dl 0.6 pins Python 3.10, torch 2.3 and numpy < 2, so it cannot live in the main environment. Resolution
order of the interpreter used to run :mod:`svformer_deploy.exporters.lava.runner`:

1. ``$SVFORMER_LAVA_PYTHON``: an existing interpreter that has lava-dl (checked, never modified);
2. the cached venv ``$SVFORMER_LAVA_VENV`` (default ``~/.cache/svformer-deploy/lava-venv``), built on first
   use: ``python3.10 -m venv`` (from ``PYENV_VERSION=3.10.13 python3.10``, pyenv's versions folder or
   ``python3.10`` on PATH), then ``pip install lava-dl==0.6.0 h5py`` (~5.4 GB with CUDA torch, ~1.5 min on a
   fast mirror). The venv is built in a temporary folder and renamed into place, so a failed build leaves
   nothing behind; every failure raises :class:`LavaEnvironmentError` saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from svformer_deploy.errors import LavaEnvironmentError

__all__ = ["LavaEnvironmentError", "lava_python", "find_python310", "LAVA_REQUIREMENTS", "default_venv_dir"]

LAVA_REQUIREMENTS = ("lava-dl==0.6.0", "h5py")
_CHECK = "import lava.lib.dl.netx, lava.proc.io, h5py, numpy; print(numpy.__version__)"


def default_venv_dir() -> Path:
    return Path(os.environ.get("SVFORMER_LAVA_VENV") or Path.home() / ".cache" / "svformer-deploy" / "lava-venv")


def find_python310() -> list[str]:
    """A command that starts Python 3.10, or raise :class:`LavaEnvironmentError` listing what was tried."""
    tried = []
    candidates: list[tuple[list[str], dict]] = []
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    if shutil.which("pyenv"):
        roots.insert(0, subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip())
    for root in dict.fromkeys(r for r in roots if r):  # pyenv's versions folder, even when pyenv is not on PATH
        versions = sorted(Path(root, "versions").glob("3.10.*"))
        candidates += [([str(v / "bin" / "python3.10")], {}) for v in reversed(versions)]
    candidates += [(["python3.10"], {"PYENV_VERSION": "3.10.13"}), (["python3.10"], {})]
    for cmd, env in candidates:
        tried.append(" ".join([*(f"{k}={v}" for k, v in env.items()), *cmd]))
        try:
            r = subprocess.run([*cmd, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                               capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and r.stdout.strip() == "True":
            if env:  # resolve the pyenv shim to a real path, so the env var is not needed later
                exe = subprocess.run([*cmd, "-c", "import sys; print(sys.executable)"], capture_output=True,
                                     text=True, env={**os.environ, **env}).stdout.strip()
                return [exe]
            return cmd
    raise LavaEnvironmentError(
        "cannot build the Lava side environment: lava-dl 0.6 needs Python 3.10 and none was found (tried: "
        f"{'; '.join(tried)}). Install it (`pyenv install 3.10.13`) or set SVFORMER_LAVA_PYTHON to a Python 3.10 "
        "interpreter that has lava-dl==0.6.0 and h5py installed")


def _check(python: str) -> str | None:
    """None if ``python`` can import lava-dl's netx and h5py, else the error text."""
    try:
        r = subprocess.run([python, "-c", _CHECK], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["(no output)"])[-1]


def lava_python(progress: Callable[[str], None] | None = None) -> str:
    """Path of a Python that runs the Lava runner; builds the cached venv on first use (see module docstring)."""
    say = progress or (lambda _msg: None)
    explicit = os.environ.get("SVFORMER_LAVA_PYTHON")
    if explicit:
        problem = _check(explicit)
        if problem:
            raise LavaEnvironmentError(f"SVFORMER_LAVA_PYTHON={explicit} cannot import lava-dl's netx and h5py "
                                       f"({problem}); point it at a Python 3.10 with lava-dl==0.6.0 and h5py, or "
                                       "unset it to let svformer-deploy build its own environment")
        return explicit
    venv = default_venv_dir()
    python = venv / "bin" / "python"
    if python.exists() and _check(str(python)) is None:
        return str(python)
    base = find_python310()
    venv.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".lava-venv.", dir=venv.parent))
    t0 = time.perf_counter()
    say(f"Building the Lava side environment in {venv} (Python 3.10 + {' '.join(LAVA_REQUIREMENTS)}; "
        "about 5.4 GB, a few minutes on first use)...")
    try:
        _run([*base, "-m", "venv", str(tmp)], "create the Python 3.10 virtual environment")
        _run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              *LAVA_REQUIREMENTS], f"pip install {' '.join(LAVA_REQUIREMENTS)}")
        problem = _check(str(tmp / "bin" / "python"))
        if problem:
            raise LavaEnvironmentError(f"the new Lava environment cannot import lava-dl's netx ({problem})")
        if venv.exists():
            shutil.rmtree(venv)
        os.replace(tmp, venv)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # the venv's scripts hold the temporary path, but bin/python finds its site-packages relative to itself
    say(f"Lava side environment ready in {time.perf_counter() - t0:.0f} s.")
    return str(python)


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        raise LavaEnvironmentError(f"cannot build the Lava side environment: `{what}` failed (exit {r.returncode}):"
                                   f"\n{tail}\nCheck network access to PyPI and free disk space (~6 GB), or set "
                                   "SVFORMER_LAVA_PYTHON to an existing Python 3.10 with lava-dl==0.6.0")
