"""Interleaved rounds of our code and its baseline, reported as the median with its spread (min, max).

On a shared 2-core VM page-cache writeback and loopback scheduling change a run's speed by up to 2×, more than
the differences measured. Interleaving (ours, baseline, ours, …) puts both under the same conditions round by
round; the ratio is taken per round, and its median over the rounds, with the lowest and highest round, says
how far one run can be trusted. Every round starts after ``os.sync()``, so no round pays for an earlier one's
dirty pages.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Spread:
    """A number measured once per round: its median, lowest and highest round."""

    median: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        ordered = sorted(values)
        return cls(statistics.median(ordered), ordered[0], ordered[-1], len(ordered))


Measured = float | Spread  # what a benchmark reports for one key


def interleaved_times(measurements: Sequence[Callable[[], float]], rounds: int) -> list[list[float]]:
    """Seconds of each measurement in each round, ``[measurement][round]``, run alternately."""
    times: list[list[float]] = [[] for _ in measurements]
    for _ in range(rounds):
        for i, measure in enumerate(measurements):
            os.sync()
            times[i].append(measure())
    return times


def rate(amount: float, seconds: Sequence[float]) -> Spread:
    """``amount`` per second (frames/s, trains/s), per round."""
    return Spread.of(amount / s for s in seconds)


def ratio(baseline_seconds: Sequence[float], our_seconds: Sequence[float]) -> Spread:
    """Our speed over the baseline's, round by round (1.0 = as fast; > 1 = faster)."""
    return Spread.of(b / o for b, o in zip(baseline_seconds, our_seconds, strict=True))


def value(measured: Measured) -> float:
    """The number a key stands for: the median of a spread."""
    return measured.median if isinstance(measured, Spread) else float(measured)
