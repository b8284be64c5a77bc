"""How many threads torch may use: the CPUs this process may actually run on, fewer while others keep them busy.

Two rules.

1. At start-up (:func:`configure_threads`, called by the CLI, training and evaluation) the thread count is
   ``usable_cpus() = max(1, min(len(sched_getaffinity), floor(cgroup CPU quota / period)))``: the CPUs the
   scheduler lets this process use, capped by a cgroup v1 (``cpu.cfs_quota_us / cpu.cfs_period_us``) or v2
   (``cpu.max``) quota, the tightest level of the process's cgroup path. ``OMP_NUM_THREADS`` set by the user
   wins over both (and pins the count: rule 2 is then off).

2. While training or evaluating, a :class:`ThreadGovernor` measures every couple of seconds how much of those
   CPUs *other* processes used (busy time of the allowed CPUs, or of the cgroup under a quota, minus this
   process's own CPU time) and sets ``threads = clamp(round(cpus - others), 1, ceiling)``. Each torch
   operation splits its work evenly over its threads and waits for the slowest, so a thread that shares its
   core with a busy process stalls all of them; one fewer thread avoids that collapse.

Results of CPU runs repeat bit for bit at a fixed thread count: pin it (``OMP_NUM_THREADS=N``) when that matters.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["usable_cpus", "cgroup_cpu_limit", "configure_threads", "threads_for", "ThreadGovernor"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_dirs(root: Path, proc_cgroup: Path) -> list[tuple[str, Path, Path]]:
    """(version, mount, folder) of every cgroup level of this process with CPU controls, innermost first."""
    text = _read(proc_cgroup) or ""
    out: list[tuple[str, Path, Path]] = []
    for line in text.splitlines():
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            mounts = [("v2", root)]
        elif "cpu" in controllers.split(","):
            mounts = [("v1", root / c) for c in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
        else:
            continue
        for version, mount in mounts:
            if not mount.is_dir():
                continue
            level = mount / rel.lstrip("/")
            while True:
                out.append((version, mount, level))
                if level == mount or mount not in level.parents:
                    break
                level = level.parent
    return out


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs allowed by the tightest cgroup quota on this process's path (quota / period), or None if unlimited.

    cgroup v2: ``cpu.max`` = ``"<quota> <period>"`` or ``"max <period>"``; v1: ``cpu.cfs_quota_us`` (-1 = none)
    and ``cpu.cfs_period_us``.
    """
    limits = []
    for version, _, folder in _cgroup_dirs(root, proc_cgroup):
        if version == "v2":
            fields = (_read(folder / "cpu.max") or "max").split()
            quota, period = fields[0], fields[1] if len(fields) > 1 else "100000"
        else:
            quota, period = _read(folder / "cpu.cfs_quota_us") or "-1", _read(folder / "cpu.cfs_period_us") or "0"
        if quota not in ("max", "-1") and float(period) > 0:
            limits.append(float(quota) / float(period))
    return min(limits) if limits else None


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """``max(1, min(CPUs in this process's affinity mask, floor(cgroup quota)))``."""
    n = len(_affinity())
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, math.floor(limit))
    return max(1, n)


def _pinned() -> bool:
    return bool(os.environ.get("OMP_NUM_THREADS", "").strip())


def configure_threads() -> int:
    """Set torch's thread count to :func:`usable_cpus` shared among the ``LOCAL_WORLD_SIZE`` processes of this
    machine (torchrun), unless ``OMP_NUM_THREADS`` pins it; return the count."""
    if not _pinned():
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
        torch.set_num_threads(max(1, usable_cpus() // local))
    return torch.get_num_threads()


def threads_for(cpus: float, others: float, ceiling: int) -> int:
    """Threads to use when other processes keep ``others`` of our ``cpus`` CPUs busy:
    ``clamp(round(cpus - others), 1, ceiling)`` (round half up)."""
    return max(1, min(ceiling, math.floor(cpus - others + 0.5)))


def _proc_stat_busy(cpus: set[int]) -> float:
    """Busy seconds (all but idle and iowait) of the given CPUs since boot, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    busy = 0
    for line in (_read(Path("/proc/stat")) or "").splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(f) for f in fields[:8]]
            busy += sum(v) - v[3] - v[4]
    return busy / tick


def _cgroup_usage(level: tuple[str, Path, Path]) -> float | None:
    """CPU seconds used by the whole cgroup (v2 ``cpu.stat`` usage_usec, v1 ``cpuacct.usage`` ns)."""
    version, mount, path = level
    if version == "v2":
        for line in (_read(path / "cpu.stat") or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
        return None
    for acct in (path, mount.parent / "cpuacct" / path.relative_to(mount)):
        value = _read(acct / "cpuacct.usage")
        if value:
            return int(value) / 1e9
    return None


def default_sampler() -> Callable[[], tuple[float, float, float]] | None:
    """A function returning (wall s, CPU s used by everyone on our CPUs, CPU s used by this process), or None
    where that cannot be measured. Under a cgroup quota tighter than the affinity mask, "everyone" is the cgroup."""
    cpus = _affinity()
    limit = cgroup_cpu_limit()
    if limit is not None and limit < len(cpus):
        dirs = _cgroup_dirs(CGROUP_ROOT, PROC_CGROUP)
        if not dirs or _cgroup_usage(dirs[0]) is None:
            return None
        return lambda: (time.monotonic(), _cgroup_usage(dirs[0]) or 0.0, time.process_time())
    if not Path("/proc/stat").exists():
        return None
    return lambda: (time.monotonic(), _proc_stat_busy(cpus), time.process_time())


class ThreadGovernor:
    """Adapts torch's thread count to the CPU left by other processes (rule 2 of the module docstring).

    Call :meth:`tick` once per step; at most every ``interval`` seconds it compares the CPU time used on our
    CPUs with our own and sets ``threads_for(cpus, others, ceiling)``. ``ceiling`` defaults to the thread
    count when it is created; with ``OMP_NUM_THREADS`` set, or a ceiling of 1, it does nothing.
    """

    def __init__(self, ceiling: int | None = None, cpus: float | None = None, interval: float = 2.0,
                 sampler: Callable[[], tuple[float, float, float]] | None = None) -> None:
        self.ceiling = ceiling or torch.get_num_threads()
        self.cpus = float(cpus if cpus is not None else usable_cpus())
        self.interval = interval
        self.sampler = sampler if sampler is not None else default_sampler()
        self.active = self.ceiling > 1 and self.sampler is not None and not (sampler is None and _pinned())
        self.last = self.sampler() if self.active else None
        self.threads = torch.get_num_threads()

    def tick(self) -> int:
        """Re-measure if ``interval`` has passed; set and return the thread count."""
        if not self.active:
            return self.threads
        now = self.sampler()
        wall = now[0] - self.last[0]
        if wall < self.interval:
            return self.threads
        others = max(0.0, (now[1] - self.last[1]) - (now[2] - self.last[2])) / wall
        self.last = now
        threads = threads_for(self.cpus, others, self.ceiling)
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return threads

    def restore(self) -> None:
        """Give back the thread count the governor started from."""
        if self.active and self.threads != self.ceiling:
            torch.set_num_threads(self.ceiling)
            self.threads = self.ceiling
