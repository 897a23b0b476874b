"""Progress of a long command: a tqdm bar on a terminal, plain periodic lines otherwise (a log file, a CI job,
a pipe), so neither a user watching nor a log reader sees a long silence or a screen of carriage returns."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

tqdm.monitor_interval = 0  # no monitor thread: the bar is updated at every report anyway
LINE_INTERVAL_S = 5.0  # plain lines: one at the first report, then at most one this often, and one at the end


class Progress:
    """Called with (done, total); opened at the first report, so a command refused before any work leaves
    nothing on the stream but its error line."""

    def __init__(self, description: str, unit: str, stream: TextIO | None = None) -> None:
        self.description, self.unit = description, unit
        self.stream = stream or sys.stderr
        self._bar: tqdm | None = None
        self._started = self._last_line = 0.0
        self._done = self._total = 0
        self._note = ""
        self._finished = False
        self._first_done = 0

    def __call__(self, done: int, total: int, note: str = "") -> None:
        """``note`` (e.g. "312 MB written") follows the counts."""
        self._done, self._total, self._note = done, total, note
        if self.stream.isatty():
            if self._bar is None:
                self._bar = tqdm(unit=self.unit, desc=self.description, file=self.stream)
            self._bar.total = total
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(done - self._bar.n)
            return
        now = time.monotonic()
        first = not self._started
        if first:
            self._started, self._first_done = now, done
        if self._finished or not (first or done >= total or now - self._last_line >= LINE_INTERVAL_S):
            return
        self._finished, self._last_line = done >= total, now
        self._print_line(now, first)

    @property
    def _units(self) -> str:
        return self.unit if self.unit.endswith("s") else f"{self.unit}s"  # "frames", and "series" as it is

    def _print_line(self, now: float, first: bool) -> None:
        if first and self._done < self._total:
            print(f"{self.description}: {self._total} {self._units} to go", file=self.stream, flush=True)
            return
        elapsed = now - self._started
        rate = (self._done - self._first_done) / elapsed if elapsed > 0 else 0.0
        eta = f", about {(self._total - self._done) / rate:.0f} s left" if rate and self._done < self._total else ""
        share = f" ({100 * self._done / self._total:.0f} %)" if self._total else ""
        note = f", {self._note}" if self._note else ""
        print(f"{self.description}: {self._done}/{self._total} {self._units}{share}, {rate:.1f} {self._units}/s{eta}"
              f"{note}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
