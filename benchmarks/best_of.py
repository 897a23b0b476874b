"""Interleaved repetitions, best time kept: page-cache writeback and loopback scheduling on a shared
2-core VM vary run to run by several times, far more than the differences measured."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

ROUNDS = 5


def best_times(measurements: Sequence[Callable[[], float]], rounds: int = ROUNDS) -> list[float]:
    """Run each measurement once per round, alternating, after flushing dirty pages; keep each best."""
    best = [float("inf")] * len(measurements)
    for _ in range(rounds):
        for i, measure in enumerate(measurements):
            os.sync()
            best[i] = min(best[i], measure())
    return best
