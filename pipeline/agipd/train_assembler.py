"""Bridge sources → one canonical AGIPD ``Train`` (every wire layout to one in-memory layout).

Accepted sources, in order of preference:

* a combined source: ``…/CAL/APPEND_CORRECTED``, ``…/CAL/APPEND_RAW``, or any source whose
  ``image.data`` has a 16-module axis in a known layout (``modulesPresent`` says which modules are real);
* per-module sources ``…/DET/{n}CH0:xtdf``, ``…/CORR/{n}CH0:output`` (and ``…/CAL/{n}CH0:xtdf``, the
  names karabo-bridge lists in ``sources``); a module without a source is missing.

The product follows the dtype (uint16 raw, float32 corrected), because old corrected files reused the
raw source names. File-layout combined data is passed on as the received buffer (zero-copy); every
other case costs exactly one copy into a new canonical array (the transpose for online input).

karabo-bridge's simulator quirks (see karabo-bridge-py's simulator) are accepted and noted, never rejected: raw data
without the analog/digital axis becomes the analog plane with digital gain 0 (so a correction puts
every pixel in the high-gain stage) and is noted ``raw_without_gain_axis``; an ``image.gain`` (or
``image.mask``) whose shape differs from the data's (the simulator sends one online-order module) is
ignored, zeros are used, and it is noted ``gain_shape_quirk`` (``mask_shape_quirk``). Raw trains never
read ``image.gain``/``image.mask``: their gain is the data's digital plane.

Cost of decode + assemble per 64-cell train (2-core development VM, protocol 2.2, 2 runs): file-layout
combined ~0.1 ms (zero-copy), per-module file 65–230 ms (stacking 16 modules); online layout
210–220 ms for corrected data alone (256 MiB), 410–480 ms with online gain and mask, 280–370 ms raw;
protocol 1.0 adds msgpack's copy (270–1100 ms online).

Rejections (``FrameRejected``): ``unknown_source`` (no AGIPD source), ``missing_key`` (no image.data,
no train id, no cellId/pulseId), ``wrong_shape`` (no layout fits, modules disagree, id vectors of the
wrong length, ragged lists), ``wrong_dtype``, ``train_id_mismatch`` (per-module sources of different trains),
``bad_train_id`` (outside 0 … 2**63 − 1), ``bad_ids`` (cell/pulse ids that are not integers of their range).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import FrameRejected
from ..core.series import MAX_ID
from ..core.train import AGIPD_MODULES, MODULE_SHAPE, Product, Train
from .bridge_decoder import BridgeMessage, SourceData
from .layout import (
    COMBINED_AXES,
    MODULE_AXES,
    Layout,
    copy_to_file_order,
    matching_axes,
    pulses_of,
    to_file_order,
)
from .transpose import warm_up

COMBINED_NAME = re.compile(r"/CAL/APPEND_(CORRECTED|RAW)$")
MODULE_NAME = re.compile(r"/(?:DET|CORR|CAL)/(\d+)CH0:(?:xtdf|output)$")
PRODUCT_OF_DTYPE = {np.dtype(np.uint16): Product.RAW, np.dtype(np.float32): Product.CORRECTED}


@dataclass(frozen=True, slots=True)
class AssembledTrain:
    """A canonical train plus what the receiver counts about it: the source(s) used, the layout found,
    and notes (accepted quirks, not rejections)."""

    train: Train
    source: str
    layout: Layout
    notes: tuple[str, ...] = ()


class AgipdTrainAssembler:
    """Turns decoded bridge messages into canonical trains; pure apart from the remembered layout.

    ``layout`` forces the wire layout (a shape that does not fit it is ``wrong_shape``); AUTO recognises
    it from the shape. The one ambiguous shape, a single module's (128, 512, 128) corrected array, takes
    the layout this assembler saw last, or ONLINE (the online pipeline's and the simulator's default).
    ``detector_id`` (e.g. ``SPB_DET_AGIPD1M-1``) ignores the sources of any other device.
    """

    def __init__(self, *, layout: Layout = Layout.AUTO, detector_id: str | None = None) -> None:
        self.layout = layout
        self.detector_id = detector_id
        self._last_layout = Layout.ONLINE
        warm_up()

    def assemble(self, message: BridgeMessage, *, series_id: int, index: int, received_s: float) -> AssembledTrain:
        """One train; ``index`` is its 0-based position in the run, ``received_s`` host time of receipt."""
        sources = {n: s for n, s in message.sources.items() if self._is_ours(n)}
        combined = self._combined_source(sources)
        if combined is not None:
            return self._from_combined(combined, series_id, index, received_s)
        modules = {}
        for name, src in sorted(sources.items()):
            if (match := MODULE_NAME.search(name)) and int(match.group(1)) < AGIPD_MODULES:
                modules.setdefault(int(match.group(1)), src)
        if not modules:
            raise FrameRejected("unknown_source", f"no AGIPD source among {sorted(message.sources)}")
        return self._from_modules(modules, series_id, index, received_s)

    def _is_ours(self, name: str) -> bool:
        return self.detector_id is None or name.startswith(self.detector_id.rstrip("/") + "/")

    def _combined_source(self, sources: Mapping[str, SourceData]) -> SourceData | None:
        named = [s for n, s in sorted(sources.items()) if COMBINED_NAME.search(n)]
        if named:
            return named[0]
        for name, src in sorted(sources.items()):
            image = src.data.get("image.data")
            if not MODULE_NAME.search(name) and isinstance(image, np.ndarray):
                if matching_axes(image.shape, COMBINED_AXES, self.layout):
                    return src
        return None

    def _from_combined(self, src: SourceData, series_id: int, index: int, received_s: float) -> AssembledTrain:
        image = _image(src)
        product = _product(src.source, image.dtype)
        axes, layout = self._axes(image.shape, COMBINED_AXES, src.source)
        frames = pulses_of(image.shape, axes)
        labels = _labels(src, frames, received_s)  # cheap checks first: a bad train costs no copy
        present = _modules_present(src)
        notes: list[str] = list(labels.notes)
        if product is Product.RAW and "g" not in axes:
            data = np.zeros((frames, AGIPD_MODULES, 2, *MODULE_SHAPE), np.uint16)
            copy_to_file_order(image, axes, data[:, :, 0])
            notes.append("raw_without_gain_axis")
        elif product is Product.CORRECTED and "g" in axes:
            raise FrameRejected("wrong_shape", f"{src.source}: corrected data {image.shape} has a gain axis")
        else:
            data = to_file_order(image, axes)
        if not all(present):
            if not data.flags.writeable:
                data = data.copy()  # a received buffer is read-only; a missing module must read as zeros
            data[:, [m for m, p in enumerate(present) if not p]] = 0
        gain = mask = None
        if product is Product.CORRECTED:
            gain = _companion(src, "image.gain", image, axes, np.uint8, notes, "gain_shape_quirk")
            mask = _companion(src, "image.mask", image, axes, np.uint32, notes, "mask_shape_quirk")
        train = Train(series_id, index, labels.train_id, product, data, labels.cell_ids, labels.pulse_ids,
                      present, labels.timestamp_s, received_s, gain, mask)
        return AssembledTrain(train, src.source, layout, tuple(notes))

    def _from_modules(
        self, modules: Mapping[int, SourceData], series_id: int, index: int, received_s: float
    ) -> AssembledTrain:
        first = modules[min(modules)]
        image0 = _image(first)
        product = _product(first.source, image0.dtype)
        axes, layout = self._axes(image0.shape, MODULE_AXES, first.source)
        frames = pulses_of(image0.shape, axes)
        labels = _labels(first, frames, received_s)
        notes: list[str] = list(labels.notes)
        raw_quirk = product is Product.RAW and "g" not in axes
        if product is Product.CORRECTED and "g" in axes:
            raise FrameRejected("wrong_shape", f"{first.source}: corrected data {image0.shape} has a gain axis")
        shape = (frames, AGIPD_MODULES, *((2,) if product is Product.RAW else ()), *MODULE_SHAPE)
        data = np.zeros(shape, image0.dtype)
        gain = np.zeros((frames, AGIPD_MODULES, *MODULE_SHAPE), np.uint8) if product is Product.CORRECTED else None
        mask = np.zeros((frames, AGIPD_MODULES, *MODULE_SHAPE), np.uint32) if product is Product.CORRECTED else None
        for m, src in sorted(modules.items()):
            image = _image(src)
            if image.shape != image0.shape:
                raise FrameRejected("wrong_shape", f"{src.source} {image.shape} differs from {first.source}")
            if _product(src.source, image.dtype) is not product:
                raise FrameRejected("wrong_dtype", f"{src.source} {image.dtype} differs from {first.source}")
            if (tid := _train_id(src)) != labels.train_id:
                detail = f"{src.source}: train {tid}, {first.source}: {labels.train_id}"
                raise FrameRejected("train_id_mismatch", detail)
            copy_to_file_order(image, axes, data[:, m, 0] if raw_quirk else data[:, m])
            if gain is not None and mask is not None:
                _companion_into(src, "image.gain", image, axes, gain[:, m], notes, "gain_shape_quirk")
                _companion_into(src, "image.mask", image, axes, mask[:, m], notes, "mask_shape_quirk")
        if raw_quirk:
            notes.append("raw_without_gain_axis")
        present = tuple(m in modules for m in range(AGIPD_MODULES))
        train = Train(series_id, index, labels.train_id, product, data, labels.cell_ids, labels.pulse_ids,
                      present, labels.timestamp_s, received_s, gain, mask)
        return AssembledTrain(train, first.source, layout, tuple(dict.fromkeys(notes)))

    def _axes(self, shape: tuple[int, ...], candidates: Any, source: str) -> tuple[str, Layout]:
        matches = matching_axes(shape, candidates, self.layout)
        if not matches:
            wanted = "any layout" if self.layout is Layout.AUTO else f"the {self.layout.value} layout"
            raise FrameRejected("wrong_shape", f"{source}: image.data {shape} fits {wanted}")
        if len(matches) > 1:
            matches = [m for m in matches if m[1] is self._last_layout] or matches
        self._last_layout = matches[0][1]
        return matches[0]


def _image(src: SourceData) -> np.ndarray:
    image = src.data.get("image.data")
    if not isinstance(image, np.ndarray):
        raise FrameRejected("missing_key", f"{src.source} has no image.data array")
    return image


def _product(source: str, dtype: np.dtype) -> Product:
    product = PRODUCT_OF_DTYPE.get(np.dtype(dtype))
    named = COMBINED_NAME.search(source)
    expected = {"RAW": Product.RAW, "CORRECTED": Product.CORRECTED}.get(named.group(1)) if named else None
    if product is None or (expected is not None and product is not expected):
        want = "uint16 (raw) or float32 (corrected)" if expected is None else f"{expected.value} dtype"
        raise FrameRejected("wrong_dtype", f"{source}: image.data is {np.dtype(dtype)}, expected {want}")
    return product


def _modules_present(src: SourceData) -> tuple[bool, ...]:
    flags = src.data.get("modulesPresent")
    if flags is None:
        return (True,) * AGIPD_MODULES
    try:
        flags = np.asarray(flags).reshape(-1)
    except (ValueError, TypeError) as err:  # ragged lists
        raise FrameRejected("wrong_shape", f"{src.source}: modulesPresent is not a flat list: {err}") from None
    if flags.size != AGIPD_MODULES:
        raise FrameRejected("wrong_shape", f"{src.source}: modulesPresent has {flags.size} entries, not 16")
    return tuple(bool(f) for f in flags)


def _companion(
    src: SourceData, key: str, image: np.ndarray, axes: str, dtype: type, notes: list[str], note: str
) -> np.ndarray:
    """gain/mask in file order: converted like the data when its shape matches, else zeros (noted)."""
    value = src.data.get(key)
    if isinstance(value, np.ndarray) and value.shape == image.shape:
        return to_file_order(value, axes, dtype)
    if value is not None:
        notes.append(note)
    return np.zeros((pulses_of(image.shape, axes), AGIPD_MODULES, *MODULE_SHAPE), dtype)


def _companion_into(
    src: SourceData, key: str, image: np.ndarray, axes: str, dst: np.ndarray, notes: list[str], note: str
) -> None:
    value = src.data.get(key)
    if isinstance(value, np.ndarray) and value.shape == image.shape:
        copy_to_file_order(value, axes, dst)
    elif value is not None:
        notes.append(note)


def _train_id(src: SourceData) -> int:
    tid = src.metadata.get("timestamp.tid")
    if tid is None:
        ids = src.data.get("image.trainId")
        if isinstance(ids, np.ndarray) and ids.size:
            tid = ids.reshape(-1)[0]
    if not isinstance(tid, (int, np.integer)) or isinstance(tid, bool):
        raise FrameRejected("missing_key", f"{src.source} has no timestamp.tid (nor image.trainId)")
    if not 0 <= tid <= MAX_ID:
        raise FrameRejected("bad_train_id", f"{src.source}: train id {tid} is outside 0 … 2**63 - 1")
    return int(tid)


def _id_vector(src: SourceData, key: str, dtype: type, frames: int) -> np.ndarray:
    value = src.data.get(key)
    if value is None:
        raise FrameRejected("missing_key", f"{src.source} has no {key}")
    try:
        ids = np.asarray(value).reshape(-1)  # raw files store (frames, 1)
    except (ValueError, TypeError) as err:  # ragged lists
        raise FrameRejected("wrong_shape", f"{src.source}: {key} is not a flat list: {err}") from None
    if ids.size != frames:
        raise FrameRejected("wrong_shape", f"{src.source}: {key} has {ids.size} entries for {frames} frames")
    if ids.dtype.kind not in "iu":  # text, floats, msgpack extension types
        raise FrameRejected("bad_ids", f"{src.source}: {key} holds {ids.dtype}, not integers")
    if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(dtype).max):
        raise FrameRejected("bad_ids", f"{src.source}: {key} runs {ids.min()} … {ids.max()}, beyond {np.dtype(dtype).name}")
    return ids.astype(dtype, copy=False)


@dataclass(frozen=True, slots=True)
class _Labels:
    train_id: int
    cell_ids: np.ndarray
    pulse_ids: np.ndarray
    timestamp_s: float
    notes: tuple[str, ...]


def _labels(src: SourceData, frames: int, received_s: float) -> _Labels:
    """What identifies the frames (European XFEL AGIPD documentation). The host time stands in for a missing
    timestamp, and for one that is no Unix time (NaN, inf, negative, beyond 2**33 s), noted ``timestamp_replaced``."""
    timestamp = src.metadata.get("timestamp")
    usable = isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool) and 0 <= timestamp < 2**33
    replaced = timestamp is not None and not usable
    return _Labels(
        train_id=_train_id(src),
        cell_ids=_id_vector(src, "image.cellId", np.uint16, frames),
        pulse_ids=_id_vector(src, "image.pulseId", np.uint64, frames),
        timestamp_s=float(timestamp) if usable else received_s,  # type: ignore[arg-type]
        notes=("timestamp_replaced",) if replaced else (),
    )
