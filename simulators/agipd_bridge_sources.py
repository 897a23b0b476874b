"""The Karabo bridge sources of one AGIPD train, as SPB sends them (Karabo bridge protocol).

Combined: one source, ``…/CAL/APPEND_RAW`` or ``…/CAL/APPEND_CORRECTED``, with ``image.data`` of all
modules, ``image.cellId`` (u2), ``image.pulseId`` (u8), ``image.trainId`` (u8), for corrected data also
``image.gain`` (u1) and ``image.mask`` (u4) in the layout of ``image.data``, plus ``sources`` (the 16
module source names) and ``modulesPresent`` (16 bools; a missing module is False and its data zero).
Unlike karabo-bridge's simulator, raw data keep the analog/digital axis and ``image.gain`` covers all
modules as uint8.

Per module: ``…/DET/{n}CH0:xtdf`` with the module's ``image.data`` (and gain/mask) and the id arrays;
a missing module's source is left out of that train. A module group's bridge sends only its modules' sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .agipd_frames import AgipdTrainArrays
from .agipd_layout import MODULES, AgipdLayout, AgipdSources, combined_source, module_source, wire_array


def bridge_sources(train: AgipdTrainArrays, *, layout: AgipdLayout, sources: AgipdSources,
                   modules: Sequence[int] = range(MODULES)) -> dict[str, dict[str, Any]]:
    """``{source: {key: value}}`` for the train; arrays are C-contiguous and in the wire ``layout``. Per-module
    sources are those of ``modules`` (a module group's bridge); the combined source always has all 16."""
    images = {"image.data": train.data, "image.gain": train.gain, "image.mask": train.mask}
    ids = {
        "image.cellId": np.ascontiguousarray(train.cell_ids, dtype=np.uint16),
        "image.pulseId": np.ascontiguousarray(train.pulse_ids, dtype=np.uint64),
        "image.trainId": train.train_ids,
    }
    if sources is AgipdSources.COMBINED:
        values: dict[str, Any] = {key: wire_array(a, layout) for key, a in images.items() if a is not None}
        values.update(ids)
        values["sources"] = [module_source(m) for m in range(MODULES)]
        values["modulesPresent"] = list(train.modules_present)
        return {combined_source(train.product): values}
    result = {}
    for module in (m for m in modules if train.modules_present[m]):
        values = {key: wire_array(a[:, module], layout) for key, a in images.items() if a is not None}
        values.update(ids)
        result[module_source(module)] = values
    return result
