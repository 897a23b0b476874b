"""How big each benchmark's measurements are: the full run of ``make bench``, or the smoke run that ``make test``
uses to prove every benchmark still runs and reports every key it promises (its numbers mean nothing)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BenchSize:
    frames: int = 500  # 4M frames per writer, receiver and end-to-end measurement
    rounds: int = 5  # interleaved rounds of ours vs the baseline, median and spread kept (rounds.py)
    triage_frames: int = 300  # frames per triaged end-to-end series (~5 s at the 60 frame/s goal)
    triage_rounds: int = 5  # triaged series in one server
    agipd_trains: int = 10  # unpaced 64-cell trains per AGIPD measurement
    agipd_rounds: int = 5
    red_frames: int = 160  # 4M frames through the data policy stage
    kernel_repeats: int = 8  # rounds of the peakfinder8 kernel timings (median kept)
    accuracy_frames: int = 120  # EIGER2 4M frames scored per difficulty preset (30 % hits)
    accuracy_trains: int = 3  # AGIPD-1M trains of 64 corrected cells scored per difficulty preset (30 % hits)


FULL = BenchSize()
SMOKE = BenchSize(frames=20, rounds=1, triage_frames=20, triage_rounds=1, agipd_trains=2, agipd_rounds=1,
                  red_frames=40, kernel_repeats=1, accuracy_frames=4, accuracy_trains=1)
