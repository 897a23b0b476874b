"""What the user asks of an Eiger acquisition, in LImA's vocabulary, and how it maps to SIMPLON keys."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..core.errors import ConfigError


class TriggerMode(enum.Enum):
    """LImA ``acq_trigger_mode`` values (LImA documentation) that an Eiger can honour."""

    INTERNAL_TRIGGER = "INTERNAL_TRIGGER"  # ints: one trigger acquires every frame
    INTERNAL_TRIGGER_MULTI = "INTERNAL_TRIGGER_MULTI"  # ints, one frame per software trigger
    EXTERNAL_TRIGGER = "EXTERNAL_TRIGGER"  # exts: one hardware trigger starts the series
    EXTERNAL_TRIGGER_MULTI = "EXTERNAL_TRIGGER_MULTI"  # exts, one frame per hardware trigger
    EXTERNAL_GATE = "EXTERNAL_GATE"  # exte: the gate length is the exposure

    @property
    def simplon(self) -> str:
        return {"INTERNAL": "ints", "EXTERNAL": "exte" if self is TriggerMode.EXTERNAL_GATE else "exts"}[
            self.value.split("_")[0]
        ]

    @property
    def one_frame_per_trigger(self) -> bool:
        return self in (TriggerMode.INTERNAL_TRIGGER_MULTI, TriggerMode.EXTERNAL_TRIGGER_MULTI, TriggerMode.EXTERNAL_GATE)

    @property
    def software_triggered(self) -> bool:
        return self.simplon == "ints"


class StreamFormatChoice(enum.Enum):
    """What to ask the DCU to stream; ``legacy`` (V1) is the only choice on API 1.6.0 (SIMPLON API docs)."""

    LEGACY = "legacy"
    CBOR = "cbor"


COMPRESSIONS = ("bslz4", "lz4")
HEADER_DETAILS = ("all", "basic", "none")


@dataclass(frozen=True, slots=True)
class AcquisitionParams:
    """One acquisition's settings. ``latency_time_s`` is the gap between frames: frame_time = expo + latency."""

    nb_frames: int = 1
    expo_time_s: float = 0.01
    latency_time_s: float = 0.0
    trigger_mode: TriggerMode = TriggerMode.INTERNAL_TRIGGER
    photon_energy_ev: float = 12400.0
    compression: str = "bslz4"
    stream_format: StreamFormatChoice = StreamFormatChoice.LEGACY
    header_detail: str = "all"  # the header brings the pixel mask the NXmx master must carry

    def __post_init__(self) -> None:
        problems = []
        if self.nb_frames < 1:
            problems.append(f"nb_frames must be >= 1, got {self.nb_frames}")
        if self.expo_time_s <= 0:
            problems.append(f"expo_time_s must be > 0, got {self.expo_time_s}")
        if self.latency_time_s < 0:
            problems.append(f"latency_time_s must be >= 0, got {self.latency_time_s}")
        if self.photon_energy_ev <= 0:
            problems.append(f"photon_energy_ev must be > 0, got {self.photon_energy_ev}")
        if self.compression not in COMPRESSIONS:
            problems.append(f"compression must be one of {COMPRESSIONS}, got {self.compression!r}")
        if self.header_detail not in HEADER_DETAILS:
            problems.append(f"header_detail must be one of {HEADER_DETAILS}, got {self.header_detail!r}")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> AcquisitionParams:
        known = {f.name for f in fields(cls)}
        problems = [f"unknown key {k!r}" for k in raw.keys() - known]
        if problems:
            raise ConfigError(problems)
        values = dict(raw)
        try:
            if "trigger_mode" in values:
                values["trigger_mode"] = TriggerMode(values["trigger_mode"])
            if "stream_format" in values:
                values["stream_format"] = StreamFormatChoice(values["stream_format"])
        except ValueError as err:
            raise ConfigError([str(err)]) from err
        return cls(**values)

    @property
    def nimages(self) -> int:
        return 1 if self.trigger_mode.one_frame_per_trigger else self.nb_frames

    @property
    def ntrigger(self) -> int:
        return self.nb_frames if self.trigger_mode.one_frame_per_trigger else 1

    def detector_settings(self) -> dict[str, Any]:
        """SIMPLON config keys in the order they must be PUT: count_time before frame_time, because a
        count_time PUT moves frame_time (DECTRIS SIMPLON API documentation)."""
        return {
            "trigger_mode": self.trigger_mode.simplon,
            "photon_energy": self.photon_energy_ev,
            "count_time": self.expo_time_s,
            "frame_time": self.expo_time_s + self.latency_time_s,
            "nimages": self.nimages,
            "ntrigger": self.ntrigger,
            "compression": self.compression,
        }
