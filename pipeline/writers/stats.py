"""The writer's counters, published under odin-data's and LImA's writer names (``frames_written``, …)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.rate_meter import RateMeter
from ..core.stage_stats import StageStats


@dataclass
class WriterStats(StageStats):
    """Exact counters of one acquisition; ``reset()`` on Prepare. Written by the writer thread only.

    ``bytes_written`` counts chunk payloads as they lie on disk (the detector's encoded bytes, HDF5
    metadata excluded); ``bytes_uncompressed`` what the same frames take as pixels. ``frames_expected``
    is 0 while the series length is unknown (no config in the series header). ``last_image_saved`` is
    the 0-based index of the highest frame written, -1 before the first (LImA convention, so with lost
    frames it can exceed ``frames_written - 1``). ``current_file`` is the open data file, "" when none.
    """

    frames_written: int = 0
    frames_expected: int = 0
    bytes_written: int = 0
    bytes_uncompressed: int = 0
    files_closed: int = 0
    last_image_saved: int = -1
    current_file: str = ""
    close_time_last_ms: float = 0.0
    close_time_max_ms: float = 0.0
    rate_meter: RateMeter = field(default_factory=RateMeter, repr=False, compare=False)

    def record_frame(self, index: int, nbytes_encoded: int, nbytes_uncompressed: int) -> None:
        self.frames_written += 1
        self.processed += 1
        self.bytes_written += nbytes_encoded
        self.bytes_processed += nbytes_encoded
        self.bytes_uncompressed += nbytes_uncompressed
        self.last_image_saved = max(self.last_image_saved, index)
        self.rate_meter.add(nbytes_encoded)

    def record_close(self, ms: float) -> None:
        self.files_closed += 1
        self.close_time_last_ms = ms
        self.close_time_max_ms = max(self.close_time_max_ms, ms)

    def rates(self) -> tuple[float, float]:
        """(frames/s, MB/s on disk) over the meter's sliding window; 0 soon after writing stops."""
        return self.rate_meter.rates()

    @property
    def compression_ratio(self) -> float:
        """Uncompressed over written bytes; 0 before the first frame."""
        return self.bytes_uncompressed / self.bytes_written if self.bytes_written else 0.0

    def reset(self) -> None:
        super().reset()
        self.frames_written = self.frames_expected = 0
        self.bytes_written = self.bytes_uncompressed = 0
        self.files_closed = 0
        self.last_image_saved = -1
        self.current_file = ""
        self.close_time_last_ms = self.close_time_max_ms = 0.0
        self.rate_meter.reset()
