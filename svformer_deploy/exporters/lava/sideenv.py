"""The Lava side environment: a separate Python 3.10 virtual environment with lava-dl 0.6.0 and h5py.

lava-dl 0.6 pins Python 3.10, torch 2.3 and numpy < 2, so it cannot live in the main environment. Resolution
order of the interpreter used to run :mod:`svformer_deploy.exporters.lava.runner`:

1. ``$SVFORMER_LAVA_PYTHON``: an existing interpreter that has lava-dl (checked, never modified);
2. the cached venv ``$SVFORMER_LAVA_VENV`` (default ``~/.cache/svformer-deploy/lava-venv``), built on first
   use: ``python3.10 -m venv`` (from ``PYENV_VERSION=3.10.13 python3.10``, pyenv's versions folder or
   ``python3.10`` on PATH), then ``pip install --no-compile lava-dl==0.6.0 h5py`` (~5.6 GB, most of it the
   CUDA wheels that PyPI's torch 2.3.1 needs even on a CPU-only machine; ~2.5-3 min, most of it download).

Safety of the build:

* atomic: the venv is built in a temporary folder ``.<venv name>.build-*`` next to it and renamed into place
  only after it imports lava-dl's netx, so a failed or interrupted build never leaves a half-built venv;
* one builder at a time: the build holds an exclusive ``flock`` on ``<venv name>.lock`` next to the venv (the
  kernel releases it when the holder dies); another process waits for it, then uses the venv it built. The
  holder removes the temporary folders that killed builds left behind;
* every failure raises :class:`LavaEnvironmentError` saying why and what to do.

:func:`start_build` runs the same build in a background thread (``svformer-deploy demo`` starts it before
training, so the download overlaps it); :func:`lava_python` then waits for it instead of building again.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from svformer_deploy._atomic import chmod_as_created
from svformer_deploy.errors import LavaEnvironmentError

__all__ = ["LAVA_REQUIREMENTS", "BackgroundBuild", "LavaEnvironmentError", "default_venv_dir", "ensure_venv",
           "find_python310", "lava_python", "lock_path", "start_build"]

LAVA_REQUIREMENTS = ("lava-dl==0.6.0", "h5py")
PIP_OPTIONS = ("-q", "--disable-pip-version-check", "--no-compile")
"""``--no-compile``: no byte-compiling of the ~13,000 installed modules (torch, scipy, ...); the few that Lava
imports are compiled on first import."""
BUILD_NICE = 10
"""Niceness of a background build's subprocesses: the training it overlaps keeps the CPU it asks for."""
_CHECK = "import lava.lib.dl.netx, lava.proc.io, h5py, numpy; print(numpy.__version__)"

Say = Callable[[str], None]


def default_venv_dir() -> Path:
    return Path(os.environ.get("SVFORMER_LAVA_VENV") or Path.home() / ".cache" / "svformer-deploy" / "lava-venv")


def lock_path(venv: Path) -> Path:
    """The lock file of builds of ``venv``: ``<venv name>.lock`` in the same folder (kept; it holds no data)."""
    return venv.with_name(f"{venv.name}.lock")


def _build_prefix(venv: Path) -> str:
    return f".{venv.name}.build-"


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


def _explicit_python(explicit: str) -> str:
    problem = _check(explicit)
    if problem:
        raise LavaEnvironmentError(f"SVFORMER_LAVA_PYTHON={explicit} cannot import lava-dl's netx and h5py "
                                   f"({problem}); point it at a Python 3.10 with lava-dl==0.6.0 and h5py, or "
                                   "unset it to let svformer-deploy build its own environment")
    return explicit


_BACKGROUND: dict[Path, BackgroundBuild] = {}
_BACKGROUND_LOCK = threading.Lock()


def lava_python(progress: Say | None = None) -> str:
    """Path of a Python that runs the Lava runner; builds the cached venv on first use (see module docstring).
    If :func:`start_build` started a build of the same venv in this process, waits for it instead."""
    say = progress or (lambda _msg: None)
    explicit = os.environ.get("SVFORMER_LAVA_PYTHON")
    if explicit:
        return _explicit_python(explicit)
    venv = default_venv_dir()
    with _BACKGROUND_LOCK:
        background = _BACKGROUND.pop(venv, None)
    if background is not None:
        return background.wait(say)
    return ensure_venv(venv, say)


def ensure_venv(venv: Path, say: Say, cancel: threading.Event | None = None) -> str:
    """The venv's Python, built first if it is missing or broken (atomically, under the build lock)."""
    python = venv / "bin" / "python"
    if python.exists() and _check(str(python)) is None:
        return str(python)
    base = find_python310()
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        with _build_lock(venv, say, cancel):
            if python.exists() and _check(str(python)) is None:  # built by the process we waited for
                return str(python)
            _remove_stale_builds(venv)
            _build(venv, base, say, cancel)
    except OSError as err:
        raise LavaEnvironmentError(f"cannot build the Lava side environment in {venv}: {err}; check that the "
                                   "folder is writable and has ~6 GB free, or set SVFORMER_LAVA_VENV to another "
                                   "folder") from err
    return str(python)


@contextmanager
def _build_lock(venv: Path, say: Say, cancel: threading.Event | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on :func:`lock_path` (waiting, with a message, while another process holds
    it, until ``cancel`` is set); released on exit, and by the kernel if this process dies."""
    lock = lock_path(venv)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    say(f"Waiting for another process that is building the Lava side environment (lock {lock})...")
                    waiting = True
                if cancel is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    break
                if cancel.wait(0.5):
                    raise LavaEnvironmentError("the build of the Lava side environment was cancelled") from None
        yield
    finally:
        os.close(fd)


def _remove_stale_builds(venv: Path) -> None:
    """Remove the temporary build folders of builds that died (only called while holding the build lock)."""
    for stale in venv.parent.glob(f"{_build_prefix(venv)}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _build(venv: Path, base: list[str], say: Say, cancel: threading.Event | None) -> None:
    """Build the venv in a temporary folder next to it, check it, rename it into place (caller holds the lock)."""
    tmp = Path(tempfile.mkdtemp(prefix=_build_prefix(venv), dir=venv.parent))
    t0 = time.perf_counter()
    say(f"Building the Lava side environment in {venv} (Python 3.10 + {' '.join(LAVA_REQUIREMENTS)}; "
        "about 5.4 GB, a few minutes on first use)...")
    try:
        _run([*base, "-m", "venv", str(tmp)], "create the Python 3.10 virtual environment", cancel)
        _run([str(tmp / "bin" / "python"), "-m", "pip", "install", *PIP_OPTIONS, *LAVA_REQUIREMENTS],
             f"pip install {' '.join(LAVA_REQUIREMENTS)}", cancel)
        problem = _check(str(tmp / "bin" / "python"))
        if problem:
            raise LavaEnvironmentError(f"the new Lava environment cannot import lava-dl's netx ({problem})")
        chmod_as_created(tmp, 0o777)  # mkdtemp's 0700 -> what mkdir would give
        if venv.exists():
            shutil.rmtree(venv)
        os.replace(tmp, venv)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # the venv's scripts hold the temporary path, but bin/python finds its site-packages relative to itself
    say(f"Lava side environment ready in {time.perf_counter() - t0:.0f} s.")


def _run(cmd: list[str], what: str, cancel: threading.Event | None = None) -> None:
    """Run one build step. With ``cancel`` (a background build) it runs at lower priority in its own process
    group, which is terminated as a whole when ``cancel`` is set or this thread is interrupted."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=cancel is not None)
        if cancel is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, proc.pid, BUILD_NICE)  # pip's own children inherit it
            except OSError:
                pass
        try:
            while proc.poll() is None:
                if cancel is None:
                    proc.wait()
                elif cancel.wait(0.5):
                    raise LavaEnvironmentError("the build of the Lava side environment was cancelled")
        finally:
            if proc.poll() is None:
                _stop(proc, signal.SIGTERM, group=cancel is not None)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    _stop(proc, signal.SIGKILL, group=cancel is not None)
                    proc.wait()
        if proc.returncode != 0:
            log.seek(0)
            lines = [ln for ln in log.read().strip().splitlines() if not ln.startswith("WARNING: Location")]
            tail = "\n".join(lines[-5:])
            raise LavaEnvironmentError(f"cannot build the Lava side environment: `{what}` failed (exit "
                                       f"{proc.returncode}):\n{tail}\nCheck network access to PyPI and free disk "
                                       "space (~6 GB), or set SVFORMER_LAVA_PYTHON to an existing Python 3.10 "
                                       "with lava-dl==0.6.0")


def _stop(proc: subprocess.Popen, sig: int, group: bool) -> None:
    """Send ``sig`` to ``proc`` (and, with ``group``, to every process of its process group, pip's children)."""
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


class BackgroundBuild:
    """:func:`ensure_venv` of one venv running in a daemon thread; :meth:`wait` returns its Python or raises
    what the build raised, :meth:`cancel` stops it (its subprocess terminated, its temporary folder removed)."""

    def __init__(self, venv: Path, progress: Say | None = None) -> None:
        self.venv = venv
        self.seconds: float | None = None  # how long the build (or the check of a ready venv) took
        self.waited = 0.0  # how long wait() blocked
        self._say = progress or (lambda _msg: None)
        self._cancel = threading.Event()
        self._python: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="lava-side-env", daemon=True)

    def _work(self) -> None:
        t0 = time.perf_counter()
        try:
            self._python = ensure_venv(self.venv, self._say, self._cancel)
        except BaseException as err:  # noqa: BLE001 - handed to wait()
            self._error = err
        self.seconds = time.perf_counter() - t0

    def wait(self, progress: Say | None = None) -> str:
        """Block until the build ends; its Python, or its error re-raised."""
        if self._thread.is_alive():
            (progress or self._say)("Waiting for the Lava side environment that is being built in the "
                                    "background...")
            t0 = time.perf_counter()
            self._thread.join()
            self.waited = time.perf_counter() - t0
        if self._error is not None:
            raise self._error
        assert self._python is not None
        return self._python

    def cancel(self) -> None:
        """Stop the build if it still runs (nothing is left behind) and wait for the thread to end."""
        self._cancel.set()
        self._thread.join()
        with _BACKGROUND_LOCK:
            if _BACKGROUND.get(self.venv) is self:
                del _BACKGROUND[self.venv]


def start_build(progress: Say | None = None) -> BackgroundBuild | None:
    """Start :func:`ensure_venv` of the default venv in the background and register it, so that the next
    :func:`lava_python` in this process waits for it; None when ``$SVFORMER_LAVA_PYTHON`` is set (checked
    later, never built)."""
    if os.environ.get("SVFORMER_LAVA_PYTHON"):
        return None
    build = BackgroundBuild(default_venv_dir(), progress)
    with _BACKGROUND_LOCK:
        previous = _BACKGROUND.get(build.venv)
        if previous is not None:
            return previous
        _BACKGROUND[build.venv] = build
    build._thread.start()
    return build
