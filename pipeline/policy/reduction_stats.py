"""What a RED run kept and what it lost, published as DataPolicy attributes and in the manifest.

Byte counts during a run are chunk payloads as they pass; when the run is finalised ``bytes_raw`` and
``bytes_red`` are replaced by the sizes of the files on disk (HDF5 metadata included), so the manifest's
numbers are what a catalogue would measure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..core.stage_stats import StageStats
from .event_selection import KeepReason
from .precision_rounding import RoundingError


@dataclass
class ReductionStats(StageStats):
    """Counters of one run; ``reset()`` on Prepare, written by the data policy's thread only.

    ``frames_in`` counts frames (AGIPD: memory cells) received; ``kept`` counts them by ``KeepReason``,
    kept or not. ``bytes_in`` is what arrived (the detector's encoded bytes; AGIPD: pixel bytes),
    ``bytes_kept_uncompressed`` what the kept frames take as dense pixels before any lossy step.
    ``pixels_considered``/``pixels_dropped`` count valid pixels of kept frames and those that ROI, module
    selection or sparsification removed. ``rounding`` accumulates the pixel error of lossy steps.
    """

    frames_in: int = 0
    kept: Counter[KeepReason] = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_raw: int = 0
    bytes_red: int = 0
    bytes_kept_uncompressed: int = 0
    pixels_considered: int = 0
    pixels_dropped: int = 0
    rounding: RoundingError = field(default_factory=RoundingError)

    @property
    def frames_kept(self) -> int:
        return sum(n for reason, n in self.kept.items() if reason.kept)

    @property
    def hits_kept(self) -> int:
        return self.kept[KeepReason.HIT]

    @property
    def misses_kept(self) -> int:
        return self.kept[KeepReason.SAMPLED_MISS]

    @property
    def frames_dropped_by_policy(self) -> int:
        return self.frames_in - self.frames_kept

    @property
    def reduction_ratio(self) -> float:
        """Bytes received over RED bytes stored; 0 while nothing is stored."""
        return self.bytes_in / self.bytes_red if self.bytes_red else 0.0

    @property
    def compression_ratio(self) -> float:
        """Dense bytes of the kept frames over RED bytes stored (lossless back end plus lossy steps)."""
        return self.bytes_kept_uncompressed / self.bytes_red if self.bytes_red else 0.0

    @property
    def pixels_dropped_fraction(self) -> float:
        return self.pixels_dropped / self.pixels_considered if self.pixels_considered else 0.0

    def metrics(self) -> dict[str, int | float]:
        """The numbers a run reports (attribute names = manifest keys after ``DataPolicy_``)."""
        return {
            "frames_in": self.frames_in,
            "frames_kept": self.frames_kept,
            "hits_kept": self.hits_kept,
            "misses_kept": self.misses_kept,
            "untriaged_kept": self.kept[KeepReason.UNTRIAGED],
            "frames_dropped_by_policy": self.frames_dropped_by_policy,
            "bytes_in": self.bytes_in,
            "bytes_raw": self.bytes_raw,
            "bytes_red": self.bytes_red,
            "reduction_ratio": self.reduction_ratio,
            "compression_ratio": self.compression_ratio,
            "rms_error_photons": self.rounding.rms_photons,
            "rms_error_sigma": self.rounding.rms_sigma,
            "pixels_dropped_fraction": self.pixels_dropped_fraction,
        }

    def reset(self) -> None:
        super().reset()
        self.frames_in = 0
        self.kept.clear()
        self.bytes_in = self.bytes_raw = self.bytes_red = self.bytes_kept_uncompressed = 0
        self.pixels_considered = self.pixels_dropped = 0
        self.rounding = RoundingError()
