"""Replay of recorded frames from an HDF5/NeXus file, as a ``FrameSource``.

``"FILE"`` reads ``/entry/data/data``; ``"FILE::/path"`` picks another dataset. A group (a DECTRIS
master's ``/entry/data`` with ``data_000001`` … links) is read as its datasets in name order. Frame i
is file frame ``i % n``; shape and dtype come from the file, and the truth is unknown (``is_hit`` None).
Compressed files (bslz4, lz4) are read through hdf5plugin's filters.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle and LZ4 HDF5 filters on import)
import numpy as np
from numpy.typing import NDArray

from .frame_source import FrameTruth, write_truth_sidecar

DEFAULT_DATASET_PATH = "/entry/data/data"
PIXEL_MASK_PATH = "/entry/instrument/detector/pixel_mask"


def split_dataset_spec(spec: str | Path) -> tuple[Path, str]:
    """``"run.h5::/entry/data/data"`` → (Path("run.h5"), "/entry/data/data"); the path part is optional."""
    text = str(spec)
    file_part, _, dataset_path = text.partition("::")
    return Path(file_part), dataset_path or DEFAULT_DATASET_PATH


class DatasetFrames:
    """Frames of one file, read on demand; the file stays open until ``close()``."""

    def __init__(self, spec: str | Path) -> None:
        self.path, self.dataset_path = split_dataset_spec(spec)
        self._file = h5py.File(self.path, "r")
        self._lock = threading.Lock()  # h5py serialises calls anyway; this keeps index → read atomic
        try:
            self._stacks = self._open_stacks()
            self._mask = self._read_pixel_mask()
        except Exception:
            self._file.close()
            raise
        self._starts = np.cumsum([0] + [s.shape[0] if s.ndim == 3 else 1 for s in self._stacks])

    @property
    def n_frames(self) -> int:
        return int(self._starts[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._stacks[0].shape[-2:])  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self._stacks[0].dtype

    @property
    def pixel_mask(self) -> NDArray[np.uint32]:
        return self._mask

    def frame_key(self, index: int) -> int:
        if index < 0:
            raise IndexError(f"frame index {index} is negative; series frames count from 0")
        return index % self.n_frames

    def pixels(self, index: int) -> NDArray[np.unsignedinteger]:
        key = self.frame_key(index)
        stack = int(np.searchsorted(self._starts, key, side="right")) - 1
        with self._lock:
            dataset = self._stacks[stack]
            frame = dataset[key - self._starts[stack]] if dataset.ndim == 3 else dataset[()]
        return np.ascontiguousarray(frame)

    def truth(self, index: int) -> FrameTruth:
        return FrameTruth(index=index, is_hit=None, peaks=())

    def describe(self) -> Mapping[str, Any]:
        return {"source": "dataset", "file": str(self.path), "dataset": self.dataset_path, "n_frames": self.n_frames}

    def write_truth(self, path: str | Path, n_frames: int) -> Path:
        return write_truth_sidecar(path, self, n_frames)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _open_stacks(self) -> list[h5py.Dataset]:
        target = self._file.get(self.dataset_path)
        if target is None:
            raise KeyError(f"{self.path} has no {self.dataset_path}; name the frames with FILE::/path/to/dataset")
        if isinstance(target, h5py.Group):
            stacks = [target[name] for name in sorted(target) if isinstance(target[name], h5py.Dataset)]
        else:
            stacks = [target]
        if not stacks:
            raise ValueError(f"{self.path}::{self.dataset_path} is a group without datasets")
        first = stacks[0]
        for stack in stacks:
            if stack.ndim not in (2, 3) or stack.shape[-2:] != first.shape[-2:] or stack.dtype != first.dtype:
                raise ValueError(
                    f"{self.path}::{stack.name} is {stack.shape} {stack.dtype}; replay needs 2-D frames or 3-D "
                    f"stacks of one shape and dtype, like {first.shape[-2:]} {first.dtype}"
                )
        if first.dtype.kind != "u" or first.dtype.itemsize not in (1, 2, 4):
            raise ValueError(
                f"{self.path}::{first.name} holds {first.dtype}; EIGER images are uint8, uint16 or uint32"
            )
        if any(stack.ndim == 3 and stack.shape[0] == 0 for stack in stacks):
            raise ValueError(f"{self.path}::{self.dataset_path} has an empty frame stack")
        return stacks

    def _read_pixel_mask(self) -> NDArray[np.uint32]:
        mask = self._file.get(PIXEL_MASK_PATH)
        if isinstance(mask, h5py.Dataset) and mask.shape == self.shape:
            values = np.asarray(mask[()], dtype=np.uint32)
        else:
            values = np.zeros(self.shape, dtype=np.uint32)
        values.flags.writeable = False
        return values
