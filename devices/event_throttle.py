"""Change events at most ~25 Hz per attribute, but never losing the final value (Tango Controls event documentation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Push = Callable[[str, Any], None]

DEFAULT_MAX_RATE_HZ = 25.0


class EventThrottle:
    """Pushes a value when it changed and the attribute's last push is older than 1/max_rate.

    A value held back by the window is pushed on a later ``offer`` once the window has passed, so the
    last value of a burst always reaches clients; ``force=True`` (final values, State) pushes at once.
    LImA's throttle can lose the final events; this one keeps the latest pending value instead.
    """

    def __init__(self, push: Push, max_rate_hz: float = DEFAULT_MAX_RATE_HZ) -> None:
        self._push = push
        self._min_interval_s = 1.0 / max_rate_hz
        self._last_pushed: dict[str, Any] = {}
        self._last_time: dict[str, float] = {}

    def offer(self, name: str, value: Any, *, force: bool = False) -> bool:
        if not force and name in self._last_pushed and _same(self._last_pushed[name], value):
            return False
        now = time.monotonic()
        if not force and now - self._last_time.get(name, -1e9) < self._min_interval_s:
            return False
        self._push(name, value)
        self._last_pushed[name] = value
        self._last_time[name] = now
        return True

    def forget(self) -> None:
        """Forget pushed values (on Prepare) so the first values of a new acquisition are always sent."""
        self._last_pushed.clear()


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except ValueError:  # numpy arrays
        return False
