"""How big each benchmark's measurements are: the full run of ``make bench``, or the smoke run that ``make test``
uses to prove every benchmark still runs, reports every key it promises and keeps each ratio above half its goal
(its numbers are coarse: the regression guard only)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BenchSize:
    frames: int = 500  # 4M frames per end-to-end measurement
    # 4M frames per receiver measurement, ~0.8 s at the unpaced simulator's rate, in 9 rounds: a receiver round
    # swings by 0.7-1.3 (the simulator and two ZMQ I/O threads share 2 cores), and a round costs ~3 s for 3 arms
    receiver_frames: int = 2000
    receiver_rounds: int = 9
    # 4M frames per writer measurement: a 2.4 GB series (a 3,600-image rotation is 4.3 GB), long enough that the
    # per-series cost of creating and closing the files (~20 ms) is what it is in a real series, ~2 %
    writer_frames: int = 2000
    rounds: int = 5  # interleaved rounds of ours vs the baseline, median and spread kept (rounds.py)
    triage_frames: int = 300  # frames per triaged end-to-end series (~5 s at the 60 frame/s goal)
    triage_rounds: int = 5  # triaged series in one server
    agipd_trains: int = 10  # unpaced 64-cell trains per AGIPD measurement
    agipd_rounds: int = 5
    # seconds the cold AGIPD arm idles before its trains: on the benchmark VM, memory left free is handed back to
    # its host over ~16 s (page-cache writes 4.3 GB/s at once, 1.4 after 4 s, 0.44 after 16 s; recycled_memory.py)
    agipd_idle_s: float = 20.0
    # 4M frames through the data policy stage: a series long enough that writing the RED master's provenance
    # (~60 ms a series) weighs what it does in a real one
    red_frames: int = 1000
    scale_frames: int = 200  # 4M frames in each of the 8 raw series reduced on Dask (scale_bench.py)
    red_realistic_frames: int = 160  # triaged `realistic` frames whose Bragg signal the RED data must keep
    kernel_repeats: int = 8  # rounds of the peakfinder8 kernel timings (median kept)
    accuracy_frames: int = 120  # EIGER2 4M frames scored per difficulty preset (30 % hits)
    accuracy_trains: int = 3  # AGIPD-1M trains of 64 corrected cells scored per difficulty preset (30 % hits)


FULL = BenchSize()
# Big enough for the regression guard (goals.py): each ratio the median of 3 rounds of a few tenths of a second.
SMOKE = BenchSize(frames=300, receiver_frames=300, receiver_rounds=3, writer_frames=500, rounds=3, triage_frames=20,
                  triage_rounds=1, agipd_trains=4, agipd_rounds=3, agipd_idle_s=1.0,
                  red_frames=100, scale_frames=10,
                  red_realistic_frames=40, kernel_repeats=1, accuracy_frames=4, accuracy_trains=1)
