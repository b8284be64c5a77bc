"""Thread-count policy: affinity and cgroup quota at start-up, fewer threads while other processes are busy."""

from __future__ import annotations

import os

import pytest
import torch

from svformer_deploy import _threads
from svformer_deploy._threads import ThreadGovernor, cgroup_cpu_limit, configure_threads, threads_for


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _tree(tmp_path, files: dict[str, str], proc: str):
    for rel, text in files.items():
        p = tmp_path / "cg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (tmp_path / "cg").mkdir(exist_ok=True)
    (tmp_path / "self_cgroup").write_text(proc)
    return tmp_path / "cg", tmp_path / "self_cgroup"


def test_cgroup_v2_takes_the_tightest_level(tmp_path):
    root, proc = _tree(tmp_path, {"cpu.max": "max 100000", "a/cpu.max": "150000 100000",
                                  "a/b/cpu.max": "300000 100000"}, "0::/a/b\n")
    assert cgroup_cpu_limit(root, proc) == 1.5
    root, proc = _tree(tmp_path / "u", {"cpu.max": "max 100000", "a/cpu.max": "max 100000"}, "0::/a\n")
    assert cgroup_cpu_limit(root, proc) is None


def test_cgroup_v1_quota_and_unlimited(tmp_path):
    root, proc = _tree(tmp_path, {"cpu,cpuacct/job/cpu.cfs_quota_us": "250000",
                                  "cpu,cpuacct/job/cpu.cfs_period_us": "100000",
                                  "cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
                       "4:memory:/job\n3:cpu,cpuacct:/job\n")
    assert cgroup_cpu_limit(root, proc) == 2.5
    root, proc = _tree(tmp_path / "u", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"},
                       "1:cpu:/\n")
    assert cgroup_cpu_limit(root, proc) is None
    assert cgroup_cpu_limit(tmp_path / "none", tmp_path / "missing") is None


@pytest.mark.parametrize(("affinity", "limit", "want"), [(8, None, 8), (8, 2.5, 2), (2, 4.0, 2), (4, 0.5, 1)])
def test_usable_cpus_is_affinity_capped_by_the_quota(monkeypatch, affinity, limit, want):
    monkeypatch.setattr(_threads, "_affinity", lambda: set(range(affinity)))
    monkeypatch.setattr(_threads, "cgroup_cpu_limit", lambda: limit)
    assert _threads.usable_cpus() == want


def test_configure_threads_follows_the_cpus_unless_pinned(monkeypatch, keep_threads):
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    torch.set_num_threads(1)
    assert configure_threads() == 2 == torch.get_num_threads()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes share the 2 CPUs
    assert configure_threads() == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert configure_threads() == 1  # the user's pin wins


def test_threads_for():
    assert [threads_for(2, o, 2) for o in (0.0, 0.4, 0.6, 1.0, 1.7, 3.0)] == [2, 2, 1, 1, 1, 1]
    assert threads_for(8, 2.0, 8) == 6 and threads_for(8, 0.0, 4) == 4


class FakeClock:
    """(wall, CPU s used on our CPUs by everyone, CPU s used by us), advanced by hand."""

    def __init__(self) -> None:
        self.now = [0.0, 0.0, 0.0]

    def advance(self, wall: float, ours: float, others: float) -> None:
        self.now = [self.now[0] + wall, self.now[1] + ours + others, self.now[2] + ours]

    def __call__(self):
        return tuple(self.now)


def test_governor_drops_a_thread_while_another_process_is_busy_and_restores_it(keep_threads):
    torch.set_num_threads(2)
    clock = FakeClock()
    gov = ThreadGovernor(cpus=2, interval=2.0, sampler=clock)
    clock.advance(2.0, ours=4.0, others=0.0)  # quiet: we use both CPUs
    assert gov.tick() == 2
    clock.advance(2.0, ours=2.6, others=1.4)  # a busy competitor arrives
    assert gov.tick() == 1 == torch.get_num_threads()
    clock.advance(1.0, ours=1.0, others=1.0)
    assert gov.tick() == 1  # not re-measured before the interval has passed
    clock.advance(1.0, ours=1.0, others=1.0)
    assert gov.tick() == 1
    clock.advance(2.0, ours=2.0, others=0.1)  # it left
    assert gov.tick() == 2 == torch.get_num_threads()
    clock.advance(2.0, ours=2.0, others=2.0)
    gov.tick()
    gov.restore()
    assert torch.get_num_threads() == 2


def test_governor_is_off_at_one_thread_or_when_pinned(monkeypatch, keep_threads):
    torch.set_num_threads(1)
    clock = FakeClock()
    gov = ThreadGovernor(cpus=2, interval=0.0, sampler=clock)
    clock.advance(2.0, ours=2.0, others=0.0)
    assert gov.tick() == 1  # ceiling = the thread count it found
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    gov = ThreadGovernor(cpus=2, interval=0.0)
    assert not gov.active and gov.tick() == 2


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux only")
def test_default_sampler_measures_our_own_cpu_time():
    import time

    sample = _threads.default_sampler()
    assert sample is not None
    a = sample()
    t = time.process_time()
    while time.process_time() - t < 0.3:
        pass
    b = sample()
    assert b[0] > a[0] and b[2] - a[2] >= 0.3 and b[1] - a[1] >= 0.2  # our busy loop shows in both
