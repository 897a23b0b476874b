"""peakfinder8 and hit-rule parameters under their OnDA/OM and Cheetah names, validated in one place.

The same dataclass is filled from the HitFinder device's memorized attributes, from YAML and from the JSON
stored in a file's NXprocess note, so all three share one validation path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

# Units of each parameter, written next to the values in the NXprocess/NXparameters group and on the
# Tango attributes. "adu" stands for the detector's unit: counts for an Eiger, photons for corrected AGIPD.
UNITS: Mapping[str, str] = {
    "adc_threshold": "adu",
    "minimum_snr": "",
    "min_pixel_count": "pixel",
    "max_pixel_count": "pixel",
    "local_bg_radius": "pixel",
    "min_res": "pixel",
    "max_res": "pixel",
    "max_num_peaks": "peak",
    "fast_mode": "",
    "pixels_per_ring": "pixel",
    "min_peaks": "peak",
    "max_peaks": "peak",
    "lit_pixel_threshold": "adu",
    "min_lit_pixels": "pixel",
    "saturation_value": "adu",
    "max_saturated_peaks": "peak",
}


@dataclass(frozen=True, slots=True)
class TriageParams:
    """One series' triage settings; defaults are detpipe's documented defaults (docs/triage.md).

    ``min_res``/``max_res`` are radii in pixels from the beam centre; pixels at exactly either radius are
    kept, as OM keeps them, and ``max_res = 0`` disables the upper cut (CrystFEL's convention: an outer
    radius of 0 that removed every pixel would never be what was meant).
    ``fast_mode`` computes ring statistics on at most ``pixels_per_ring`` fixed, randomly sampled pixels
    per 1-px ring (OM's ``number_of_pixel_per_bin_in_radial_statistics``). The hit rule is inclusive on
    both sides, Cheetah style: ``min_peaks <= n_peaks <= max_peaks`` (OM's strict ``min = 8`` is our 9).
    ``min_lit_pixels > 0`` turns on the lit-pixel pre-veto: frames with fewer masked-in pixels above
    ``lit_pixel_threshold`` are misses without running peakfinder8 (docs/triage.md). A peak whose brightest
    pixel reaches ``saturation_value`` is saturated (0: the detector's count-rate cut-off, from the series'
    header); a frame with more than ``max_saturated_peaks`` saturated peaks is no hit (-1: no such veto, the
    default; OM's ``max_saturated_peaks``). OM's names of the hit rule and the ring sample size are accepted too
    (``OM_NAMES``).
    """

    adc_threshold: float = 6.0
    minimum_snr: float = 6.0
    min_pixel_count: int = 2
    max_pixel_count: int = 200
    local_bg_radius: int = 4
    min_res: float = 0.0
    max_res: float = 0.0
    max_num_peaks: int = 2048
    fast_mode: bool = True
    pixels_per_ring: int = 100
    min_peaks: int = 10
    max_peaks: int = 2048
    lit_pixel_threshold: float = 0.7
    min_lit_pixels: int = 0
    saturation_value: float = 0.0
    max_saturated_peaks: int = -1

    def __post_init__(self) -> None:
        if problems := _problems(self):
            raise ConfigError(problems)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> TriageParams:
        """From YAML/JSON/attributes, detpipe's names or OM's (``OM_NAMES``): unknown keys and bad values are
        all reported in one ``ConfigError``."""
        raw = canonical_names(raw)
        known = {f.name for f in fields(cls)}
        problems = [f"unknown triage parameter {key!r}; known: {sorted(known | set(OM_NAMES))}"
                    for key in raw.keys() - known]
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            kind = type(getattr(cls(), f.name))
            try:
                values[f.name] = _coerce(kind, raw[f.name])
            except (TypeError, ValueError):
                problems.append(f"{f.name} must be a {kind.__name__}, got {raw[f.name]!r}")
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """The exact document ``from_mapping`` accepts (stored in files, shown by the device)."""
        return asdict(self)


OM_NAMES: Mapping[str, tuple[str, int]] = {
    "min_num_peaks_for_hit": ("min_peaks", 1),
    "max_num_peaks_for_hit": ("max_peaks", -1),
    "number_of_pixel_per_bin_in_radial_statistics": ("pixels_per_ring", 0),
}
"""OM's monitor.yaml name -> (detpipe's name, what to add). OM's hit rule ``min < n_peaks < max`` is strict on
both sides where detpipe's is inclusive, so OM's ``min_num_peaks_for_hit: 8`` is ``min_peaks: 9``. Every other
peakfinder8 name is the same in both."""
OM_SECTIONS = ("peakfinder8_peak_detection", "crystallography")
"""The sections of an OM monitor.yaml that hold triage parameters."""
OM_DIFFERENT_MEANING = frozenset({"saturation_value"})
"""Names an OM monitor.yaml uses for something else: OM's ``saturation_value`` bounds a peak's integrated
intensity, detpipe's its brightest pixel (the detector's count-rate cut-off), so it is not taken from there."""


def canonical_names(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with OM's names replaced by detpipe's (``OM_NAMES``); ``ConfigError`` when both spellings of one
    parameter are given and disagree, or an OM count is not a whole number."""
    values = {key: value for key, value in raw.items() if key not in OM_NAMES}
    problems = []
    for om_name, (name, shift) in OM_NAMES.items():
        if om_name not in raw:
            continue
        try:
            converted = _coerce(int, raw[om_name]) + shift
        except (TypeError, ValueError):
            problems.append(f"{om_name} must be an int, got {raw[om_name]!r}")
            continue
        if name in values and values[name] != converted:
            problems.append(f"{om_name} {raw[om_name]} (OM) means {name} {converted}, but {name} is {values[name]}")
        values[name] = converted
    if problems:
        raise ConfigError(problems)
    return values


def om_monitor_parameters(document: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The triage parameters of an OM monitor.yaml (its ``OM_SECTIONS``), and the keys of those sections
    detpipe does not take (``section.key``: OM's broadcast, geometry and saturation settings). A document
    without those sections is taken as a flat mapping of parameters, as it is."""
    if not any(section in document for section in OM_SECTIONS):
        return dict(document), []
    known = ({f.name for f in fields(TriageParams)} | set(OM_NAMES)) - OM_DIFFERENT_MEANING
    values: dict[str, Any] = {}
    ignored = []
    for section in OM_SECTIONS:
        body = document.get(section) or {}
        if not isinstance(body, Mapping):
            raise ConfigError([f"OM section {section} must be a mapping, got {body!r}"])
        for key, value in body.items():
            if key in known:
                values[key] = value
            else:
                ignored.append(f"{section}.{key}")
    return values, ignored


def _coerce(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(value)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError(value)
        return int(value)
    if isinstance(value, bool):
        raise TypeError(value)
    return kind(value)


# Lower bounds checked alike: a peak needs a pixel, a background disc and a ring sample need a radius.
_AT_LEAST: Mapping[str, int] = {
    "min_pixel_count": 1, "local_bg_radius": 1, "pixels_per_ring": 1, "min_peaks": 0, "min_lit_pixels": 0,
    "saturation_value": 0, "max_saturated_peaks": -1,
}


def _problems(p: TriageParams) -> list[str]:
    problems = [f"{name} must be >= {low}, got {getattr(p, name)}"
                for name, low in _AT_LEAST.items() if getattr(p, name) < low]
    if not p.minimum_snr > 0:
        problems.append(f"minimum_snr must be > 0, got {p.minimum_snr}")
    if p.max_pixel_count < p.min_pixel_count:
        problems.append(f"max_pixel_count {p.max_pixel_count} is below min_pixel_count {p.min_pixel_count}")
    if p.min_res < 0 or p.max_res < 0:
        problems.append(f"min_res and max_res must be >= 0 (0 = no cut), got {p.min_res}, {p.max_res}")
    if p.max_res and p.max_res <= p.min_res:
        problems.append(f"max_res {p.max_res} must exceed min_res {p.min_res} (or be 0 for no upper cut)")
    if not 1 <= p.max_num_peaks <= 65536:
        problems.append(f"max_num_peaks must be within 1..65536, got {p.max_num_peaks}")
    if p.max_peaks < p.min_peaks:
        problems.append(f"max_peaks {p.max_peaks} is below min_peaks {p.min_peaks}")
    return problems
