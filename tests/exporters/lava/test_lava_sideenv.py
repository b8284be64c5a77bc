"""Building the Lava side environment: atomic, one builder at a time (lock), in the background for the demo,
cancellable, with one clear error when it fails.

No network and no real Python 3.10: ``find_python310`` returns a fake interpreter (a shell script) whose
``-m venv`` copies itself, whose ``-m pip install`` logs its pid and then succeeds, fails or hangs as
``$FAKE_PIP`` says, and whose lava-dl import check passes only after a successful install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from svformer_deploy.errors import LavaEnvironmentError
from svformer_deploy.exporters.lava import sideenv

FAKE_PYTHON = r"""#!/bin/sh
here=$(dirname "$0")
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit $?; fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "$$ $*" >> "$FAKE_PIP_LOG"
  case "$FAKE_PIP" in
    fail) echo "ERROR: Could not find a version that satisfies the requirement lava-dl==0.6.0" >&2; exit 1;;
    hang) sleep 600 & echo "$! sleep" >> "$FAKE_PIP_LOG"; wait;;
    slow) sleep 2;;
  esac
  touch "$here/../lava-installed"; exit 0
fi
if [ "$1" = "-c" ]; then
  if [ -e "$here/../lava-installed" ]; then echo 1.26.4; exit 0; fi
  echo "ModuleNotFoundError: No module named 'lava'" >&2; exit 1
fi
exit 3
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake Python 3.10 and an empty venv location under ``tmp_path``; returns (venv path, pip log path)."""
    py = tmp_path / "python3.10"
    py.write_text(FAKE_PYTHON)
    py.chmod(0o755)
    log = tmp_path / "pip.log"
    monkeypatch.setattr(sideenv, "find_python310", lambda: [str(py)])
    monkeypatch.delenv("SVFORMER_LAVA_PYTHON", raising=False)
    monkeypatch.setenv("SVFORMER_LAVA_VENV", str(tmp_path / "cache" / "venv"))
    monkeypatch.setenv("FAKE_PIP_LOG", str(log))
    monkeypatch.setenv("FAKE_PIP", "ok")
    return tmp_path / "cache" / "venv", log


def _pip_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _leftovers(venv: Path) -> list[str]:
    """Names next to the venv other than the venv and its lock file."""
    return sorted(p.name for p in venv.parent.iterdir() if p not in (venv, sideenv.lock_path(venv)))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, timeout=30.0):
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_build_installs_lava_dl_without_byte_compiling_and_renames_into_place(fake):
    venv, log = fake
    messages: list[str] = []
    python = sideenv.lava_python(messages.append)
    assert python == str(venv / "bin" / "python") and (venv / "lava-installed").exists()
    umask = os.umask(0)
    os.umask(umask)
    assert venv.stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir would make it, not mkdtemp's 0700
    (call,) = _pip_calls(log)
    assert call.endswith("-m pip install -q --disable-pip-version-check --no-compile lava-dl==0.6.0 h5py")
    assert _leftovers(venv) == []
    assert any("Building the Lava side environment" in m for m in messages)
    assert sideenv.lava_python() == python and len(_pip_calls(log)) == 1  # built once, then reused


def test_failed_pip_install_says_why_and_leaves_nothing(fake, monkeypatch):
    venv, log = fake
    monkeypatch.setenv("FAKE_PIP", "fail")
    with pytest.raises(LavaEnvironmentError, match=r"(?s)`pip install lava-dl==0.6.0 h5py` failed \(exit 1\).*"
                                                   r"Could not find a version.*SVFORMER_LAVA_PYTHON"):
        sideenv.lava_python()
    assert not venv.exists() and _leftovers(venv) == []
    build = sideenv.start_build()  # the same error, raised where the demo's Lava step waits for the build
    with pytest.raises(LavaEnvironmentError, match=r"`pip install lava-dl==0.6.0 h5py` failed"):
        sideenv.lava_python()
    assert build.seconds is not None and not venv.exists() and _leftovers(venv) == []
    assert len(_pip_calls(log)) == 2  # a failed build is not cached: each attempt runs pip again


def test_background_build_is_awaited_by_lava_python_not_repeated(fake, monkeypatch):
    venv, log = fake
    monkeypatch.setenv("FAKE_PIP", "slow")
    build = sideenv.start_build()
    assert sideenv.start_build() is build  # one build per venv in this process
    messages: list[str] = []
    python = sideenv.lava_python(messages.append)
    assert python == str(venv / "bin" / "python") and len(_pip_calls(log)) == 1
    assert any("being built in the background" in m for m in messages) and build.waited > 0
    assert sideenv.lava_python() == python and len(_pip_calls(log)) == 1


def test_second_process_waits_for_the_lock_then_uses_the_venv_built_by_the_first(fake, monkeypatch, tmp_path):
    venv, log = fake
    monkeypatch.setenv("FAKE_PIP", "slow")
    code = ("import sys; from pathlib import Path; from svformer_deploy.exporters.lava import sideenv as s; "
            f"s.find_python310 = lambda: [{str(tmp_path / 'python3.10')!r}]; "
            "print(s.ensure_venv(Path(sys.argv[1]), print))")
    other = subprocess.Popen(
        [sys.executable, "-c", code, str(venv)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])})
    try:
        _wait_for(lambda: len(_pip_calls(log)) == 1)  # the other process holds the lock and is installing
        messages: list[str] = []
        python = sideenv.lava_python(messages.append)
    finally:
        out, _ = other.communicate(timeout=60)
    assert other.returncode == 0 and out.strip().splitlines()[-1] == python == str(venv / "bin" / "python")
    assert any("Waiting for another process" in m and str(sideenv.lock_path(venv)) in m for m in messages)
    assert len(_pip_calls(log)) == 1 and _leftovers(venv) == []


def test_cancel_stops_the_install_and_leaves_nothing_behind(fake, monkeypatch):
    venv, log = fake
    monkeypatch.setenv("FAKE_PIP", "hang")
    build = sideenv.start_build()
    _wait_for(lambda: len(_pip_calls(log)) == 2)
    pids = [int(line.split()[0]) for line in _pip_calls(log)]  # pip and a child it started
    t0 = time.monotonic()
    build.cancel()
    assert time.monotonic() - t0 < 15
    assert not any(_alive(pid) for pid in pids)  # the install and its children were stopped, not left running
    assert not venv.exists() and _leftovers(venv) == []
    with pytest.raises(LavaEnvironmentError, match="cancelled"):
        build.wait()
    monkeypatch.setenv("FAKE_PIP", "ok")  # the lock was released: the next build goes through
    assert sideenv.lava_python() == str(venv / "bin" / "python")


def test_cancel_while_waiting_for_another_builders_lock_returns_at_once(fake):
    import fcntl

    venv, log = fake
    venv.parent.mkdir(parents=True)
    holder = os.open(sideenv.lock_path(venv), os.O_RDWR | os.O_CREAT)  # another builder holds the lock
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        messages: list[str] = []
        build = sideenv.start_build(messages.append)
        _wait_for(lambda: any("Waiting for another process" in m for m in messages))
        t0 = time.monotonic()
        build.cancel()
        assert time.monotonic() - t0 < 5
    finally:
        os.close(holder)
    with pytest.raises(LavaEnvironmentError, match="cancelled"):
        build.wait()
    assert _pip_calls(log) == [] and not venv.exists() and _leftovers(venv) == []


def test_build_folder_left_by_a_killed_build_is_removed_by_the_next_build(fake):
    venv, _ = fake
    stale = venv.parent / ".venv.build-dead1234"
    (stale / "bin").mkdir(parents=True)
    (stale / "bin" / "python").write_text("half-written")
    unrelated = venv.parent / "other-venv"
    unrelated.mkdir()
    sideenv.lava_python()
    assert _leftovers(venv) == ["other-venv"] and (venv / "lava-installed").exists()


def test_broken_venv_is_rebuilt(fake):
    venv, log = fake
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")
    (venv / "bin" / "python").chmod(0o755)
    assert sideenv.lava_python() == str(venv / "bin" / "python") and (venv / "lava-installed").exists()
    assert len(_pip_calls(log)) == 1 and _leftovers(venv) == []


def test_explicit_interpreter_is_never_built(fake, monkeypatch):
    venv, log = fake
    monkeypatch.setenv("SVFORMER_LAVA_PYTHON", sys.executable)  # the main env has no lava-dl
    assert sideenv.start_build() is None
    with pytest.raises(LavaEnvironmentError, match="SVFORMER_LAVA_PYTHON=.*cannot import lava-dl"):
        sideenv.lava_python()
    assert _pip_calls(log) == [] and not venv.parent.exists()
