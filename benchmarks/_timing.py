"""Shared timing helper of the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Best time in seconds of ``repeat`` calls of ``fn`` (the least disturbed run), by ``clock``: wall time by
    default; ``time.process_time`` gives this process's CPU time, which other processes preempting this one do
    not inflate (run with OMP_NUM_THREADS=1, so CPU time is the single thread's compute)."""
    best = float("inf")
    for _ in range(repeat):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best
