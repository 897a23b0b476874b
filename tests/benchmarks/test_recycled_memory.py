"""The AGIPD benchmark's memory recycling touches every page it frees, and never more than the machine can spare."""

from __future__ import annotations

import resource

from benchmarks import recycled_memory
from benchmarks.recycled_memory import recycle_memory

MiB = 2**20
LARGEST_PAGE = 2 * MiB  # a transparent huge page: the fewest faults that can back a block


def test_every_page_of_the_block_is_touched() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touched = recycle_memory(64 * MiB)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert touched == 64 * MiB
    assert faults >= touched // LARGEST_PAGE  # an untouched (calloc'd or empty) block faults in nothing


def test_at_most_half_the_available_memory_is_touched(monkeypatch) -> None:
    monkeypatch.setattr(recycled_memory, "_available_bytes", lambda: 32 * MiB)
    assert recycle_memory(10 * 2**30) == 16 * MiB


def test_nothing_is_touched_where_the_kernel_does_not_say_what_is_available(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(recycled_memory, "_MEMINFO", str(tmp_path / "no-meminfo"))
    assert recycle_memory(64 * MiB) == 0
