"""Waiting without bare sleeps: poll with a deadline and report the last value seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], ok: Callable[[T], bool], timeout_s: float = 10.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout_s
    while not ok(value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or check} still {value!r} after {timeout_s}s")
        time.sleep(0.02)
    return value
