"""``make bench``: throughput of writers, receivers and whole chains, as ratios to baselines of the same run.

Prints a table and writes ``benchmarks/results/latest.json``: ``values``, a flat object of named numbers, and
``spread``, for every number measured once per round, its lowest and highest round and how many rounds there
were (the value is then their median; ``rounds.py``). Absolute numbers depend on the machine; the ratios are
what the targets are about. Triage numbers are per frame on one core (``triage.*_ms_*``) and whole-chain
frames/s (``triage.e2e_fps``).
``--smoke`` runs every benchmark on a few frames, as ``make test`` does, and fails when a benchmark does not
report every key it promises, or when a ratio falls below half its goal (``goals.py``: the regression guard).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from . import (
    agipd_bench,
    e2e_bench,
    eiger_scale_bench,
    exdf_compression_bench,
    receiver_bench,
    red_bench,
    scale_bench,
    triage_accuracy,
    triage_kernel_bench,
    writer_bench,
)
from .bench_size import FULL, SMOKE, BenchSize
from .goals import below_guard, goal_lines
from .rounds import Measured, Spread, value

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

Bench = Callable[[BenchSize], dict[str, Measured]]
BENCHES: tuple[tuple[Bench, tuple[str, ...]], ...] = (
    (writer_bench.bench_writer, writer_bench.KEYS),
    (receiver_bench.bench_receiver, receiver_bench.KEYS),
    (e2e_bench.bench_e2e, e2e_bench.KEYS),
    (agipd_bench.bench_agipd, agipd_bench.KEYS),
    (exdf_compression_bench.bench_exdf_compression, exdf_compression_bench.KEYS),
    (triage_kernel_bench.triage_kernel_bench, triage_kernel_bench.KEYS),
    (triage_accuracy.bench_accuracy, triage_accuracy.KEYS),
    (e2e_bench.bench_triage_e2e, e2e_bench.TRIAGE_KEYS),
    (red_bench.bench_red, red_bench.KEYS),
    (eiger_scale_bench.bench_eiger_scale, eiger_scale_bench.KEYS),
    # Last: Dask's client keeps threads for the life of this process, and the end-to-end benchmarks fork servers
    (scale_bench.bench_scale, scale_bench.KEYS),
)


class MissingKeys(RuntimeError):
    def __init__(self, bench: str, missing: list[str]) -> None:
        super().__init__(f"{bench} did not report {', '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    # The end-to-end benchmarks fork their device servers from this process, after its own Tango clients have
    # started an ORB; with this every ORB here and in those servers listens on loopback only.
    os.environ.setdefault("ORBendPoint", "giop:tcp:127.0.0.1:")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=None,
                        help=f"4M frames per writer, receiver and end-to-end measurement (default "
                             f"{FULL.writer_frames} for the writer, {FULL.receiver_frames} for the receiver, "
                             f"{FULL.frames} for the others; smoke {SMOKE.frames})")
    parser.add_argument("--smoke", action="store_true",
                        help="every benchmark on a few frames, 3 rounds: checks they run, report every key and "
                             "keep each ratio above half its goal (the regression guard make test runs)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.frames is not None and args.frames < 1:
        parser.error(f"--frames must be at least 1, got {args.frames}")
    size = SMOKE if args.smoke else FULL
    if args.frames is not None:
        size = replace(size, frames=args.frames, receiver_frames=args.frames, writer_frames=args.frames)
    results: dict[str, Measured] = {}
    for bench, keys in BENCHES:
        measured = bench(size)
        if missing := [k for k in keys if not math.isfinite(value(measured.get(k, math.nan)))]:
            raise MissingKeys(bench.__name__, missing)
        results.update(measured)
        print_table(measured)
    print("\nall benchmarks", end="")
    print_table(results)
    values = {name: value(measured) for name, measured in results.items()}
    print("\ngoals (ratios to a baseline of this run; medians)")
    print("\n".join(goal_lines(values)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results_document(results), indent=2, sort_keys=True) + "\n")
    print(f"\nwritten {args.output}")
    if args.smoke and (regressions := below_guard(values)):
        print("regression guard: " + "; ".join(regressions), file=sys.stderr)
        return 1
    return 0


def results_document(results: dict[str, Measured]) -> dict[str, dict]:
    """What latest.json holds: every key's value, and the spread of those measured per round."""
    return {"values": {name: value(measured) for name, measured in results.items()},
            "spread": {name: {"min": m.low, "max": m.high, "rounds": m.rounds}
                       for name, m in results.items() if isinstance(m, Spread)}}


def print_table(results: dict[str, Measured]) -> None:
    """One line a key: the value (a median where measured per round) and, for those, [min … max] over n rounds."""
    width = max(map(len, results))
    print("\n" + "-" * (width + 44))
    print(f"{'key':<{width}}  {'value':>12}  spread over rounds")
    for name, measured in results.items():
        spread = (f"  [{measured.low:.3f} … {measured.high:.3f}] in {measured.rounds}"
                  if isinstance(measured, Spread) else "")
        print(f"{name:<{width}}  {value(measured):>12.3f}{spread}")


if __name__ == "__main__":
    sys.exit(main())
