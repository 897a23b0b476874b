"""One memorized Tango attribute per peakfinder8/hit-rule parameter, under its OnDA/OM name.

A factory rather than fourteen hand-written read/write pairs: each attribute reads the requested
``TriageParams`` field and writes through the device's ``set_parameter`` (one validation path).
"""

from __future__ import annotations

from typing import Any

from tango import AttrWriteType
from tango.server import attribute

from detpipe.pipeline.triage_params import UNITS

_UNIT_LABELS = {"adu": "ADU"}


def triage_parameter(name: str, dtype: type, description: str, *, min_value: float | None = None) -> attribute:
    """A READ_WRITE, memorized attribute for ``TriageParams.<name>``; writes apply from the next series."""

    async def read(device: Any) -> Any:
        return getattr(device.requested_params, name)

    async def write(device: Any, value: Any) -> None:
        device.set_parameter(name, value)

    limits = {} if min_value is None else {"min_value": min_value}
    return attribute(
        name=name, dtype=dtype, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True,
        fget=read, fset=write, unit=_UNIT_LABELS.get(UNITS[name], UNITS[name]),
        format="%d" if dtype is int else ("%s" if dtype is bool else "%.3g"), label=name,
        description=f"{description} (applies from the next series)", **limits,
    )
