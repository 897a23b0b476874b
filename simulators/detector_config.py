"""The detector ``config`` task of a simulated EIGER2 DCU (DECTRIS SIMPLON API documentation) and its side effects.

Side effects a PUT has, as on hardware, reported in the PUT reply:
- ``photon_energy``/``incident_energy``/``wavelength``: all three follow (λ[Å] = 12398.42 / E[eV]) and
  the threshold is re-derived as E/2.
- ``count_time``: ``frame_time`` grows to ``count_time + detector_readout_time`` if it was shorter;
  ``frame_time`` shorter than that shrinks ``count_time`` instead.
- ``bit_depth_image`` is 32 when ``auto_summation`` is on and ``count_time >= 0.1 s``, else 16. This is
  this simulator's rule: DECTRIS documents only that the depth depends on count_time and auto_summation
  (SIMPLON API documentation); 0.1 s keeps fast SFX series at 16 bit, as at real beamlines. A replayed dataset
  pins the depth to the file's dtype.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .detector_models import PIXEL_SIZE_M, SENSOR_MATERIAL, SENSOR_THICKNESS_M, DetectorGeometry
from .simplon_parameters import (
    API_1_8,
    ONLY_1_6,
    ONLY_1_8,
    AccessMode,
    Parameter,
    ParameterTable,
    ValueType,
    utc_timestamp,
)

HC_EV_ANGSTROM = 12398.42
READOUT_TIME_S = 1e-7  # EIGER2 counts continuously; 100 ns is what count_time = frame_time − readout shows
SUMMATION_THRESHOLD_S = 0.1
_ENERGY_RANGE_EV = (2500.0, 100000.0)
GONIOMETER_AXES = ("chi", "kappa", "omega", "phi", "two_theta")
_EPS = 1e-12
_R = AccessMode.READ
_F, _I, _S, _B = ValueType.FLOAT, ValueType.INT, ValueType.STRING, ValueType.BOOL


class TriggerMode(enum.Enum):
    """``trigger_mode`` values of API 1.6 and 1.8 (1.8's ``eies``/``extg`` are not simulated)."""

    INTS = "ints"  # internal series: one REST trigger exposes nimages images at frame_time
    INTE = "inte"  # internal enable: the REST trigger's value is the exposure of each image
    EXTS = "exts"  # external series: one trigger pulse exposes nimages images
    EXTE = "exte"  # external enable: the gate length is the exposure

    @property
    def is_internal(self) -> bool:
        return self in (TriggerMode.INTS, TriggerMode.INTE)

    @property
    def is_gated(self) -> bool:
        """The trigger (or gate) carries the exposure time rather than count_time."""
        return self in (TriggerMode.INTE, TriggerMode.EXTE)


@dataclass(frozen=True, slots=True)
class ImageFormat:
    """What the frame source fixes: image size, and the bit depth when replaying a file (else None)."""

    height: int
    width: int
    fixed_bit_depth: int | None = None


class DetectorConfig(ParameterTable):
    """``/detector/api/<v>/config/…``; values are shared by both API versions."""

    def __init__(self, geometry: DetectorGeometry, image: ImageFormat, *, api_version: str = API_1_8) -> None:
        self.image = image
        super().__init__(_parameters(geometry), _initial_values(geometry, image, api_version))
        with self._lock:
            self._derive("count_time")

    def _derive(self, changed: str) -> None:
        v = self._values
        if changed in ("photon_energy", "incident_energy", "wavelength"):
            energy = HC_EV_ANGSTROM / v["wavelength"] if changed == "wavelength" else v[changed]
            v["photon_energy"] = v["incident_energy"] = energy
            v["wavelength"] = HC_EV_ANGSTROM / energy
            v["threshold_energy"] = v["threshold/1/energy"] = energy / 2.0
        elif changed in ("threshold_energy", "threshold/1/energy"):
            v["threshold_energy"] = v["threshold/1/energy"] = v[changed]
        elif changed == "count_time" and v["frame_time"] < v["count_time"] + READOUT_TIME_S - _EPS:
            v["frame_time"] = v["count_time"] + READOUT_TIME_S
        elif changed == "frame_time" and v["count_time"] > v["frame_time"] - READOUT_TIME_S + _EPS:
            v["count_time"] = v["frame_time"] - READOUT_TIME_S
        if self.image.fixed_bit_depth is not None:
            depth = self.image.fixed_bit_depth
        else:
            depth = 32 if v["auto_summation"] and v["count_time"] >= SUMMATION_THRESHOLD_S - _EPS else 16
        v["bit_depth_image"] = depth
        v["countrate_correction_count_cutoff"] = (1 << depth) - 2
        v["frame_count_time"] = v["count_time"]
        v["frame_period"] = v["frame_time"]


def _parameters(geometry: DetectorGeometry) -> list[Parameter]:
    min_frame_time = round(1.0 / geometry.max_frame_rate_hz, 9)
    params = [
        Parameter("count_time", _F, unit="s", min=round(min_frame_time - READOUT_TIME_S, 9), max=3600.0),
        Parameter("frame_time", _F, unit="s", min=min_frame_time, max=3600.0),
        Parameter("nimages", _I, min=1, max=2**31 - 1),
        Parameter("ntrigger", _I, min=1, max=2**31 - 1),
        Parameter("trigger_mode", _S, allowed_values=tuple(mode.value for mode in TriggerMode)),
        Parameter("photon_energy", _F, unit="eV", min=_ENERGY_RANGE_EV[0], max=_ENERGY_RANGE_EV[1]),
        Parameter(
            "incident_energy", _F, unit="eV", min=_ENERGY_RANGE_EV[0], max=_ENERGY_RANGE_EV[1], versions=ONLY_1_8
        ),
        Parameter(
            "wavelength",
            _F,
            unit="Å",
            min=HC_EV_ANGSTROM / _ENERGY_RANGE_EV[1],
            max=HC_EV_ANGSTROM / _ENERGY_RANGE_EV[0],
        ),
        Parameter("threshold_energy", _F, unit="eV", min=1000.0, max=_ENERGY_RANGE_EV[1]),
        Parameter("threshold/1/energy", _F, unit="eV", min=1000.0, max=_ENERGY_RANGE_EV[1], versions=ONLY_1_8),
        Parameter("beam_center_x", _F, unit="pixel"),
        Parameter("beam_center_y", _F, unit="pixel"),
        Parameter("detector_distance", _F, unit="m", min=0.0),
        Parameter("detector_translation", ValueType.LIST, _R, unit="m"),
        Parameter("compression", _S, allowed_values=("lz4", "bslz4"), versions=ONLY_1_6),
        Parameter("compression", _S, allowed_values=("lz4", "bslz4", "none"), versions=ONLY_1_8),
        Parameter("bit_depth_image", _I, _R),
        Parameter("bit_depth_readout", _I, _R),
        Parameter("countrate_correction_count_cutoff", _I, _R, unit="counts"),
        Parameter("frame_count_time", _F, _R, unit="s"),
        Parameter("frame_period", _F, _R, unit="s"),
        Parameter("x_pixels_in_detector", _I, _R),
        Parameter("y_pixels_in_detector", _I, _R),
        Parameter("x_pixel_size", _F, _R, unit="m"),
        Parameter("y_pixel_size", _F, _R, unit="m"),
        Parameter("sensor_material", _S, _R),
        Parameter("sensor_thickness", _F, _R, unit="m"),
        Parameter("description", _S, _R),
        Parameter("detector_number", _S, _R),
        Parameter("software_version", _S, _R),
        Parameter("eiger_fw_version", _S, _R, versions=ONLY_1_8),
        Parameter("detector_readout_time", _F, _R, unit="s"),
        Parameter("data_collection_date", ValueType.DATE, _R),
        Parameter("element", _S),
        Parameter("roi_mode", _S, allowed_values=("disabled",)),
    ]
    params += [Parameter(key, _B) for key in _CORRECTION_FLAGS]
    for axis in GONIOMETER_AXES:
        params += [Parameter(f"{axis}_start", _F, unit="degree"), Parameter(f"{axis}_increment", _F, unit="degree")]
    return params


_CORRECTION_FLAGS = (
    "auto_summation",
    "countrate_correction_applied",
    "flatfield_correction_applied",
    "pixel_mask_applied",
    "virtual_pixel_correction_applied",
)


def _initial_values(geometry: DetectorGeometry, image: ImageFormat, api_version: str) -> dict[str, Any]:
    energy = 12400.0
    values: dict[str, Any] = {
        "count_time": 0.01 - READOUT_TIME_S,
        "frame_time": 0.01,
        "nimages": 1,
        "ntrigger": 1,
        "trigger_mode": TriggerMode.INTS.value,
        "photon_energy": energy,
        "incident_energy": energy,
        "wavelength": HC_EV_ANGSTROM / energy,
        "threshold_energy": energy / 2.0,
        "threshold/1/energy": energy / 2.0,
        "beam_center_x": image.width / 2.0,
        "beam_center_y": image.height / 2.0,
        "detector_distance": 0.12,
        "detector_translation": [0.0, 0.0, 0.12],
        "compression": "bslz4",
        "bit_depth_image": 16,
        "bit_depth_readout": 16,
        "countrate_correction_count_cutoff": 65534,
        "frame_count_time": 0.0,
        "frame_period": 0.0,
        "x_pixels_in_detector": image.width,
        "y_pixels_in_detector": image.height,
        "x_pixel_size": PIXEL_SIZE_M,
        "y_pixel_size": PIXEL_SIZE_M,
        "sensor_material": SENSOR_MATERIAL,
        "sensor_thickness": SENSOR_THICKNESS_M,
        "description": geometry.description,
        "detector_number": geometry.detector_number,
        "software_version": "2022.1.2" if api_version == API_1_8 else "1.6.6",
        "eiger_fw_version": "release-2022.1.2",
        "detector_readout_time": READOUT_TIME_S,
        "data_collection_date": utc_timestamp(),
        "element": "",
        "roi_mode": "disabled",
    }
    values.update({key: True for key in _CORRECTION_FLAGS})
    for axis in GONIOMETER_AXES:
        values[f"{axis}_start"] = 0.0
        values[f"{axis}_increment"] = 0.0
    return values
