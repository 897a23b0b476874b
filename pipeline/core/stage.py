"""What the stage runner needs of a stage: a pure ``process()`` plus series hooks and a ``stats`` object."""

from __future__ import annotations

from typing import Protocol

from .frame import Frame
from .series import EndOfSeries, SeriesStart
from .stage_stats import StageStats
from .train import Train

Item = Frame | Train | SeriesStart | EndOfSeries
"""What travels the queues: data (an Eiger frame or an AGIPD train) between its series markers."""


class Stage(Protocol):
    """A pipeline stage.

    ``process`` returns the frame to forward, or ``None`` when the stage is a sink (the writer) or
    deliberately keeps the frame back; it raises ``FrameRejected`` for a bad frame, which is counted.
    ``abort`` is called once when ``process`` raised anything else: it must leave files valid.
    """

    stats: StageStats

    def start_series(self, start: SeriesStart) -> None: ...

    def process(self, frame: Frame | Train) -> Frame | Train | None: ...

    def finish(self, end: EndOfSeries) -> None: ...

    def abort(self, reason: str) -> None: ...
