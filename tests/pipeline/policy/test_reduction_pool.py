"""Kept frames reduced on several threads come back in the order they were kept, rejections and bugs included."""

from __future__ import annotations

import threading
import time

import pytest

from detpipe.pipeline.core.errors import FrameRejected
from detpipe.pipeline.policy.frame_reducer import ReducedFrame
from detpipe.pipeline.policy.reduction_pool import IN_FLIGHT, ReductionPool


def reduction(tag: int, seconds: float):
    def run() -> ReducedFrame:
        time.sleep(seconds)
        return ReducedFrame(red=None, bytes_kept_uncompressed=tag, pixels_considered=0)  # type: ignore[arg-type]
    return run


def test_outcomes_come_back_in_submission_order_whichever_finishes_first() -> None:
    pool: ReductionPool[int] = ReductionPool(threads=3)
    try:
        for tag, seconds in enumerate([0.3, 0.0, 0.1, 0.0, 0.2]):
            pool.submit(reduction(tag, seconds), tag)
        outcomes = list(pool.done(wait_all=True))
    finally:
        pool.close()
    assert [tag for _, tag in outcomes] == [0, 1, 2, 3, 4]
    assert [o.bytes_kept_uncompressed for o, _ in outcomes] == [0, 1, 2, 3, 4]


def test_nothing_waits_while_the_oldest_runs_unless_the_pool_is_full() -> None:
    pool: ReductionPool[int] = ReductionPool(threads=1)
    release = threading.Event()
    try:
        pool.submit(lambda: (release.wait(10), reduction(0, 0)())[1], 0)
        assert list(pool.done()) == [] and pool.pending == 1  # the oldest still runs: done() does not block
        for tag in range(1, IN_FLIGHT + 1):
            pool.submit(reduction(tag, 0), tag)
        threading.Timer(0.2, release.set).start()
        first = list(pool.done())  # over the limit: the oldest is waited for, and only it
        assert [tag for _, tag in first] == [0]
    finally:
        release.set()
        pool.close()


def test_what_comes_out_depends_on_the_count_submitted_never_on_which_reductions_are_done() -> None:
    """A RED file is written at the same points however fast its frames were reduced (byte-identical reruns)."""
    pool: ReductionPool[int] = ReductionPool(threads=2)
    try:
        for tag in range(IN_FLIGHT + 3):
            pool.submit(reduction(tag, 0), tag)
        time.sleep(0.2)  # every reduction has finished
        assert [tag for _, tag in pool.done()] == [0, 1, 2] and pool.pending == IN_FLIGHT
    finally:
        pool.close()


def test_a_rejected_reduction_is_an_outcome_and_a_bug_is_raised() -> None:
    def rejected() -> ReducedFrame:
        raise FrameRejected("corrupt_payload", "a block that does not decode")

    def broken() -> ReducedFrame:
        raise RuntimeError("a reducer bug")

    pool: ReductionPool[str] = ReductionPool(threads=2)
    try:
        pool.submit(rejected, "a")
        pool.submit(reduction(1, 0), "b")
        pool.submit(broken, "c")
        outcomes = pool.done(wait_all=True)
        outcome, tag = next(outcomes)
        assert tag == "a" and isinstance(outcome, FrameRejected) and outcome.reason == "corrupt_payload"
        assert next(outcomes)[1] == "b"
        with pytest.raises(RuntimeError, match="a reducer bug"):
            next(outcomes)
    finally:
        pool.close()
