"""Series boundaries: the header that opens a series and the sentinel that closes it.

Both travel down the same queues as frames, so every stage sees start, frames and end in order and
Stop drains naturally (odin-data's ``EndOfAcquisitionFrame``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .triage_params import TriageParams

MAX_ID = 2**63 - 1  # series, frame and train ids are int64 downstream (Tango DevLong64, HDF5): larger ones are refused


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """The detector settings a series was taken with, as the NXmx master needs them.

    Units follow SIMPLON: seconds, eV, Å, metres, pixels. ``shape`` is (height, width). ``header`` keeps the
    complete flat config object the detector sent (V1 part 2, or the V2 start fields) for
    ``detectorSpecific``; it is a wire dict on purpose and is only copied into the file.
    """

    shape: tuple[int, int]
    dtype: np.dtype
    nimages: int = 1
    ntrigger: int = 1
    count_time_s: float | None = None
    frame_time_s: float | None = None
    photon_energy_ev: float | None = None
    wavelength_a: float | None = None
    beam_center_x_px: float | None = None
    beam_center_y_px: float | None = None
    detector_distance_m: float | None = None
    x_pixel_size_m: float = 75e-6
    y_pixel_size_m: float = 75e-6
    sensor_material: str = "Si"
    sensor_thickness_m: float = 450e-6
    description: str = ""
    detector_number: str = ""
    bit_depth_readout: int | None = None
    saturation_value: int | None = None
    trigger_mode: str = "ints"
    compression: str = "bslz4"
    header: Mapping[str, Any] = field(default_factory=dict)

    @property
    def frames_expected(self) -> int:
        return self.nimages * self.ntrigger

    @property
    def bit_depth_image(self) -> int:
        return self.dtype.itemsize * 8


@dataclass(frozen=True, slots=True)
class SeriesStart:
    """Opens a series. ``config`` is ``None`` when the stream sent no config (V1 header_detail=none);
    the acquisition then supplies the configuration it read over REST (see ``with_config``).
    ``triage`` tells the writer that frames carry triage results made with these parameters."""

    series_id: int
    header_detail: str = "basic"
    config: DetectorConfig | None = None
    pixel_mask: np.ndarray | None = None
    flatfield: np.ndarray | None = None
    appendix: Any = None
    received_s: float = 0.0
    unique_id: str = ""
    triage: TriageParams | None = None  # set by the hit finder when it triages this series


class EndReason(enum.Enum):
    """Why a series ended; the writer trims its files the same way for all of them."""

    END_MESSAGE = "end_message"  # the detector's dseries_end / end message
    DISARMED = "disarmed"  # detpipe's own end after disarm: no end message came (some DCUs send none)
    STOP = "stop"  # operator Stop: drain, keep every frame received
    ABORT = "abort"  # operator Abort: files closed as they are
    TIMEOUT = "timeout"  # the stream went silent (detector vanished)
    ERROR = "error"  # an upstream stage failed


@dataclass(frozen=True, slots=True)
class EndOfSeries:
    """Closes a series; ``frames_sent`` is known only when the source counts them (None otherwise)."""

    series_id: int
    reason: EndReason = EndReason.END_MESSAGE
    frames_sent: int | None = None
    detail: str = ""
