"""Timing helper shared by the benchmark scripts (run as `python benchmarks/NAME.py`, they import it as `timing`)."""

from __future__ import annotations

import time


def best_of(repeats: int, function) -> tuple[float, object]:
    """(best wall time in seconds over `repeats` calls, result of the last call): the least noisy figure."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result
