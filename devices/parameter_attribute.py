"""Memorized settings declared in one line each: one attribute per field of an engine parameter dataclass
(TriageParams, ReductionParams), and DevEnum choices.

A factory rather than dozens of hand-written read/write pairs: each parameter attribute reads the device's
``requested_params`` field and writes through the device's ``set_parameter`` (one validation path, in the
engine), so a bad value is refused with the engine's message and changes nothing. A choice attribute keeps
in one place what a DevEnum needs: Tango exchanges and memorizes the label's index, the device deals in labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tango import AttrWriteType
from tango.server import attribute

_UNIT_LABELS = {"adu": "ADU"}


def parameter_attribute(name: str, label: str, dtype: type, description: str, *, units: Mapping[str, str],
                        min_value: float | None = None, max_value: float | None = None) -> attribute:
    """A READ_WRITE, memorized attribute for ``requested_params.<name>``; writes apply from the next series."""

    async def read(device: Any) -> Any:
        return getattr(device.requested_params, name)

    async def write(device: Any, value: Any) -> None:
        device.set_parameter(name, value)

    limits = {key: value for key, value in (("min_value", min_value), ("max_value", max_value)) if value is not None}
    unit = units.get(name, "")
    return attribute(
        name=name, dtype=dtype, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True,
        fget=read, fset=write, unit=_UNIT_LABELS.get(unit, unit),
        format="%d" if dtype is int else ("%s" if dtype in (bool, str) else "%.3g"), label=label,
        description=f"{description} (applies from the next series)", **limits,
    )


def choice_attribute(name: str, choices: Sequence[str], *, label: str, description: str,
                     get: Callable[[Any], str], put: Callable[[Any, str], None]) -> attribute:
    """A READ_WRITE, memorized DevEnum (a drop-down in Taurus) whose labels are ``choices``; ``get`` reads the
    device's current label, ``put`` applies a label (and may refuse it). An index beyond the labels is refused
    by Tango itself before ``put`` is called."""
    labels = list(choices)

    async def read(device: Any) -> int:
        return labels.index(get(device))

    async def write(device: Any, index: int) -> None:
        put(device, labels[index])

    return attribute(
        name=name, dtype="DevEnum", enum_labels=labels, access=AttrWriteType.READ_WRITE, memorized=True,
        hw_memorized=True, fget=read, fset=write, label=label, description=description,
    )
