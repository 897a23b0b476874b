"""Karabo bridge messages built by hand from the bridge protocol, independent of karabo_bridge and of detpipe's decoder.

A test states the canonical truth (file order, pipeline/core/train.py) and this module lays it out on the
wire: protocol 2.2 (header/payload pairs, raw array buffers) or 1.0 (one msgpack map, arrays encoded as
msgpack-numpy maps ``{b'nd', b'type', b'kind', b'shape', b'data'}``), as a combined source or as 16
per-module sources, in file or online axis order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

DETECTOR = "SPB_DET_AGIPD1M-1"
COMBINED_CORRECTED = f"{DETECTOR}/CAL/APPEND_CORRECTED"
COMBINED_RAW = f"{DETECTOR}/CAL/APPEND_RAW"
MODULES = 16
MODULE_SHAPE = (512, 128)
FIRST_TRAIN_ID = 10_000_000_000

Sources = dict[str, tuple[dict[str, Any], dict[str, Any]]]  # source -> (metadata, flat keys)


@dataclass(frozen=True)
class TrainTruth:
    """One train in canonical file order; ``missing`` modules are zero in every array."""

    train_id: int
    data: np.ndarray  # raw u2 (frames, 16, 2, 512, 128) or corrected f4 (frames, 16, 512, 128)
    cell_ids: np.ndarray
    pulse_ids: np.ndarray
    gain: np.ndarray | None = None
    mask: np.ndarray | None = None
    missing: frozenset[int] = frozenset()

    @property
    def raw(self) -> bool:
        return self.data.dtype == np.uint16

    @property
    def frames(self) -> int:
        return self.data.shape[0]


def make_truth(*, raw: bool, frames: int = 2, train_id: int = FIRST_TRAIN_ID, missing: Collection[int] = (),
               seed: int = 0) -> TrainTruth:
    rng = np.random.default_rng(seed)
    present = [m for m in range(MODULES) if m not in missing]  # only these get (costly) random pixels
    if raw:
        data = np.zeros((frames, MODULES, 2, *MODULE_SHAPE), np.uint16)
        data[:, present] = rng.integers(0, 1 << 14, (frames, len(present), 2, *MODULE_SHAPE), dtype=np.uint16)
        gain = mask = None
    else:
        data = np.zeros((frames, MODULES, *MODULE_SHAPE), np.float32)
        gain = np.zeros(data.shape, np.uint8)
        mask = np.zeros(data.shape, np.uint32)
        shape = (frames, len(present), *MODULE_SHAPE)
        data[:, present] = rng.normal(100.0, 30.0, shape).astype(np.float32)
        gain[:, present] = rng.integers(0, 3, shape, dtype=np.uint8)
        mask[:, present] = rng.integers(0, 4, shape, dtype=np.uint32)
    cells = (np.arange(frames) * 2 + 1).astype(np.uint16)  # never equal to the position, as in real runs
    pulses = (np.arange(frames) * 4 + 8).astype(np.uint64)
    return TrainTruth(train_id, data, cells, pulses, gain, mask, frozenset(missing))


def online(array: np.ndarray) -> np.ndarray:
    """File order (pulse, …lead, ss, fs) → online order (…lead, fs, ss, pulse), C-contiguous."""
    n = array.ndim
    return np.ascontiguousarray(array.transpose(*range(1, n - 2), n - 1, n - 2, 0))


def metadata(source: str, train_id: int) -> dict[str, Any]:
    return {"source": source, "timestamp": 1.7e9 + (train_id % 1000) * 0.1, "timestamp.sec": "1700000000",
            "timestamp.frac": "100000000000000000", "timestamp.tid": train_id}


def _labels(truth: TrainTruth) -> dict[str, Any]:
    return {"image.cellId": truth.cell_ids, "image.pulseId": truth.pulse_ids,
            "image.trainId": np.full(truth.frames, truth.train_id, np.uint64)}


def combined_sources(truth: TrainTruth, layout: str = "file", *, raw_without_gain_axis: bool = False) -> Sources:
    """The APPEND_CORRECTED / APPEND_RAW source; ``raw_without_gain_axis`` sends only the analog plane, as
    karabo-bridge's simulator does."""
    source = COMBINED_RAW if truth.raw else COMBINED_CORRECTED
    lay = online if layout == "online" else (lambda a: a)
    data = truth.data[:, :, 0] if raw_without_gain_axis else truth.data
    keys: dict[str, Any] = {"image.data": lay(data), **_labels(truth),
                            "sources": [f"{DETECTOR}/DET/{m}CH0:xtdf" for m in range(MODULES)],
                            "modulesPresent": [m not in truth.missing for m in range(MODULES)]}
    if not truth.raw:
        keys["image.gain"], keys["image.mask"] = lay(truth.gain), lay(truth.mask)
    return {source: (metadata(source, truth.train_id), keys)}


def module_sources(truth: TrainTruth, layout: str = "file") -> Sources:
    """``…/DET/{m}CH0:xtdf`` (raw) or ``…/CORR/{m}CH0:output`` (corrected) per present module."""
    lay = online if layout == "online" else (lambda a: a)
    sources: Sources = {}
    for m in range(MODULES):
        if m in truth.missing:
            continue
        source = f"{DETECTOR}/DET/{m}CH0:xtdf" if truth.raw else f"{DETECTOR}/CORR/{m}CH0:output"
        keys: dict[str, Any] = {"image.data": lay(np.ascontiguousarray(truth.data[:, m])), **_labels(truth)}
        if not truth.raw:
            keys["image.gain"] = lay(np.ascontiguousarray(truth.gain[:, m]))
            keys["image.mask"] = lay(np.ascontiguousarray(truth.mask[:, m]))
        sources[source] = (metadata(source, truth.train_id), keys)
    return sources


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def v2_2(sources: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[bytes]:
    """Protocol 2.2: per source, in sorted order, a msgpack header/payload pair, then one
    header/buffer pair per array."""
    parts: list[bytes] = []
    for source in sorted(sources):
        meta, keys = sources[source]
        plain = {k: v for k, v in keys.items() if not isinstance(v, np.ndarray)}
        parts += [pack({"source": source, "content": "msgpack", "metadata": dict(meta)}), pack(plain)]
        for key, array in keys.items():
            if isinstance(array, np.ndarray):
                parts += [array_header(source, key, str(array.dtype), list(array.shape)),
                          np.ascontiguousarray(array).tobytes()]
    return parts


def array_header(source: str, path: str, dtype: str, shape: list[int]) -> bytes:
    return pack({"source": source, "content": "array", "path": path, "dtype": dtype, "shape": shape})


def msgpack_numpy_array(array: np.ndarray) -> dict[bytes, Any]:
    """msgpack-numpy's map for an array (the 1.0 inline encoding)."""
    return {b"nd": True, b"type": array.dtype.str, b"kind": b"", b"shape": list(array.shape),
            b"data": np.ascontiguousarray(array).tobytes()}


def v1_0(sources: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[bytes]:
    """Protocol 1.0: one part, ``{source: {key: value, …, 'metadata': {…}}}``."""
    message = {}
    for source, (meta, keys) in sources.items():
        encoded = {k: msgpack_numpy_array(v) if isinstance(v, np.ndarray) else v for k, v in keys.items()}
        message[source] = {**encoded, "metadata": dict(meta)}
    return [pack(message)]


def small_sources(train_id: int = 7, *, dtype: str = "uint8", shape: tuple[int, ...] = (2, 3)) -> Sources:
    """A tiny non-AGIPD source, for decoder tests that need no detector."""
    array = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    return {"XMPL/DET/CAM": (metadata("XMPL/DET/CAM", train_id), {"image.data": array, "answer": 42})}
