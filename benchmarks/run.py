"""``make bench``: throughput of writers, receivers and whole chains, as ratios to baselines of the same run.

Prints a table and writes ``benchmarks/results/latest.json`` (a flat object of named numbers). Absolute
numbers depend on the machine; the ratios are what the targets are about (goal ≥ 0.95 for both). Triage
numbers are per frame on one core (``triage.*_ms_*``) and whole-chain frames/s (``triage.e2e_fps``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .agipd_bench import bench_agipd
from .e2e_bench import bench_e2e, bench_triage_e2e
from .receiver_bench import bench_receiver
from .red_bench import bench_red
from .triage_kernel_bench import triage_kernel_bench
from .writer_bench import bench_writer

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=500, help="4M frames per measurement (default 500)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    for bench in (bench_writer, bench_receiver, bench_e2e, bench_agipd, triage_kernel_bench, bench_triage_e2e,
                  bench_red):
        results.update(bench(args.frames))
        print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwritten {args.output}")
    return 0


def print_table(results: dict[str, float]) -> None:
    width = max(map(len, results))
    print("\n" + "-" * (width + 16))
    for name, value in results.items():
        print(f"{name:<{width}}  {value:>12.3f}")


if __name__ == "__main__":
    sys.exit(main())
