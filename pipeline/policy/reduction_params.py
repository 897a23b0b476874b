"""What a run keeps (the RED/raw data policy) and how its RED data is reduced, validated in one place.

The same dataclass is filled from the DataPolicy device's memorized attributes, from a YAML/JSON policy
file (``detpipe reduce --policy``) and from the JSON stored in a RED file's NXnote (``--config-from``), so
all three share one validation path. Reductions run in this order: event selection, spatial
selection, precision rounding or binning, sparsification, lossless compression.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..core.errors import ConfigError


class Policy(enum.Enum):
    """What a run keeps. ``RAW_RED`` writes raw to a short-retention path and RED for the archive."""

    RAW = "raw"
    RED = "red"
    RAW_RED = "raw+red"

    @property
    def keeps_raw(self) -> bool:
        return self is not Policy.RED

    @property
    def keeps_red(self) -> bool:
        return self is not Policy.RAW


@dataclass(frozen=True, slots=True)
class Roi:
    """A kept rectangle in image pixels: ``x``/``width`` along fast scan, ``y``/``height`` along slow scan
    (for AGIPD, in the stacked frame of 16 modules × 512 rows)."""

    x: int
    y: int
    width: int
    height: int

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]


# Units written next to the values in NXparameters and on the Tango attributes.
UNITS: Mapping[str, str] = {
    "miss_fraction": "",
    "lit_cell_min_pixels": "pixel",
    "rounding_step": "photon",
    "sparse_threshold_sigma": "",
    "sparse_noise": "photon",
    "sparse_radial_bins": "bin",
    "raw_retention_days": "day",
}

MAX_MANTISSA_BITS = 23  # float32: 23 = lossless; integer pixels keep this many significant bits
ROUNDING_STEP_EXPONENTS = range(-10, 11)  # errb_round's abspw: the step is 2**k photons


@dataclass(frozen=True, slots=True)
class ReductionParams:
    """One run's data policy and reductions; defaults keep everything losslessly.

    Event selection (``hits_only``) keeps hits plus a deterministic random sample of ``miss_fraction`` of
    the misses (seeded by ``miss_seed`` and the frame's identity, so offline reduction picks the same
    misses). Frames that were not triaged are always kept (err towards inclusion, EuXFEL's reduction policy). AGIPD
    cells with fewer than ``lit_cell_min_pixels`` lit pixels saw no pulse and are dropped when
    ``drop_unlit_cells``. ``modules`` (empty = all) and ``rois`` (empty = whole frame) select pixels; the
    rest read as masked. Rounding follows ``extra_redu.errb_round``: at most ``mantissa_bits`` significant
    bits and a multiple of ``rounding_step`` photons (a power of two; 0 = off), half to even.
    ``sparse`` keeps only pixels more than ``sparse_threshold_sigma`` σ (and ``sparse_noise`` photons)
    above a radial background (pyFAI sparsify-Bragg). Retention: raw kept ``raw_retention_days``,
    RED archived when ``red_archive``, public after ``embargo_date`` (ISO date; empty = none set).
    Under policy ``raw`` the reductions are kept as configured but not applied (nothing is reduced).
    """

    policy: Policy = Policy.RAW
    hits_only: bool = False
    miss_fraction: float = 0.01
    miss_seed: int = 0
    drop_unlit_cells: bool = False
    lit_cell_min_pixels: int = 1000
    modules: tuple[int, ...] = ()
    rois: tuple[Roi, ...] = ()
    mantissa_bits: int = MAX_MANTISSA_BITS
    rounding_step: float = 0.0
    binning: int = 1
    sparse: bool = False
    sparse_threshold_sigma: float = 3.0
    sparse_noise: float = 1.0
    sparse_radial_bins: int = 800
    raw_retention_days: int = 60
    red_archive: bool = True
    embargo_date: str = ""

    def __post_init__(self) -> None:
        if problems := _problems(self):
            raise ConfigError(problems)

    @property
    def lossy(self) -> bool:
        """True when kept pixels may differ from raw (rounding, binning or sparsification)."""
        return self.mantissa_bits < MAX_MANTISSA_BITS or self.rounding_step > 0 or self.binning > 1 or self.sparse

    @property
    def rounds(self) -> bool:
        """True when kept pixels are rounded (mantissa bits and/or an absolute step)."""
        return self.mantissa_bits < MAX_MANTISSA_BITS or self.rounding_step > 0

    @property
    def rounding_exponent(self) -> int | None:
        """``k`` of the absolute step 2**k, errb_round's ``abspw``; None when there is no absolute step."""
        return round(math.log2(self.rounding_step)) if self.rounding_step > 0 else None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ReductionParams:
        """From YAML/JSON/attributes: unknown keys and bad values are all reported in one ``ConfigError``."""
        known = {f.name for f in fields(cls)}
        problems = [f"unknown data policy parameter {key!r}; known: {sorted(known)}" for key in raw.keys() - known]
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in known:
                continue
            try:
                values[name] = _CONVERTERS.get(name, _scalar_of(name))(value)
            except (TypeError, ValueError) as err:
                problems.append(f"{name}: {err}")
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """The exact document ``from_mapping`` accepts (JSON-ready: enums as strings, ROIs as lists)."""
        mapping: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        mapping["policy"] = self.policy.value
        mapping["modules"] = list(self.modules)
        mapping["rois"] = [roi.to_list() for roi in self.rois]
        return mapping


def _scalar_of(name: str) -> Any:
    kind = type(next(f.default for f in fields(ReductionParams) if f.name == name))

    def convert(value: Any) -> Any:
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError(f"expected true or false, got {value!r}")
            return value
        if isinstance(value, bool):
            raise TypeError(f"expected a {kind.__name__}, got {value!r}")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise TypeError(f"expected an integer, got {value!r}")
            return int(value)
        if kind is str:
            if not isinstance(value, str):
                raise TypeError(f"expected a string, got {value!r}")
            return value
        return float(value)

    return convert


def _to_policy(value: Any) -> Policy:
    if isinstance(value, Policy):
        return value
    choices = [p.value for p in Policy]
    if isinstance(value, str) and value.lower() in choices:
        return Policy(value.lower())
    raise ValueError(f"unknown policy {value!r}; choose one of {choices}")


def _to_modules(value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"expected a list of module numbers, got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise TypeError(f"module numbers must be integers, got {list(value)!r}")
    return tuple(int(v) for v in value)


def _to_rois(value: Any) -> tuple[Roi, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"expected a list of [x, y, width, height] rectangles, got {value!r}")
    rois = []
    for item in value:
        if isinstance(item, Roi):
            rois.append(item)
            continue
        if (isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 4
                or any(isinstance(v, bool) or not isinstance(v, int) for v in item)):
            raise TypeError(f"each ROI is [x, y, width, height] in integer pixels, got {item!r}")
        rois.append(Roi(*(int(v) for v in item)))
    return tuple(rois)


_CONVERTERS = {"policy": _to_policy, "modules": _to_modules, "rois": _to_rois}


def _problems(p: ReductionParams) -> list[str]:
    problems = []
    if not 0.0 <= p.miss_fraction <= 1.0:
        problems.append(f"miss_fraction must be within 0..1, got {p.miss_fraction}")
    if not 0 <= p.miss_seed < 2**63:
        problems.append(f"miss_seed must be within 0..2**63-1, got {p.miss_seed}")
    if p.lit_cell_min_pixels < 0:
        problems.append(f"lit_cell_min_pixels must be >= 0, got {p.lit_cell_min_pixels}")
    if len(set(p.modules)) != len(p.modules) or any(m < 0 for m in p.modules):
        problems.append(f"modules must be distinct module numbers >= 0, got {list(p.modules)}")
    problems += [f"ROI {roi.to_list()} needs x, y >= 0 and width, height >= 1"
                 for roi in p.rois if roi.x < 0 or roi.y < 0 or roi.width < 1 or roi.height < 1]
    if not 1 <= p.mantissa_bits <= MAX_MANTISSA_BITS:
        problems.append(f"mantissa_bits must be within 1..{MAX_MANTISSA_BITS} ({MAX_MANTISSA_BITS} = lossless), "
                        f"got {p.mantissa_bits}")
    if p.rounding_step != 0 and not _power_of_two_step(p.rounding_step):
        steps = ", ".join(f"{2.0**k:g}" for k in (-2, -1, 0, 1, 2))
        problems.append(f"rounding_step must be 0 (off) or a power of two from 2**-10 to 2**10 photons "
                        f"(errb_round's abspw: {steps} ...), got {p.rounding_step}")
    if p.binning not in (1, 2):
        problems.append(f"binning must be 1 (off) or 2 (2x2), got {p.binning}")
    if p.binning > 1 and p.sparse:
        problems.append("binning and sparse exclude each other (choose rounding/binning or sparsification)")
    if not p.sparse_threshold_sigma > 0:
        problems.append(f"sparse_threshold_sigma must be > 0, got {p.sparse_threshold_sigma}")
    if p.sparse_noise < 0:
        problems.append(f"sparse_noise must be >= 0 photons, got {p.sparse_noise}")
    if not 16 <= p.sparse_radial_bins <= 100_000:
        problems.append(f"sparse_radial_bins must be within 16..100000, got {p.sparse_radial_bins}")
    if p.raw_retention_days < 0:
        problems.append(f"raw_retention_days must be >= 0, got {p.raw_retention_days}")
    if p.embargo_date:
        try:
            dt.date.fromisoformat(p.embargo_date)
        except ValueError:
            problems.append(f"embargo_date must be an ISO date such as 2027-06-30 (or empty), got {p.embargo_date!r}")
    return problems


def _power_of_two_step(step: float) -> bool:
    if not step > 0 or not math.isfinite(step):
        return False
    exponent = math.log2(step)
    return exponent.is_integer() and int(exponent) in ROUNDING_STEP_EXPONENTS
