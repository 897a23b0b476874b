"""The one frame type that flows from decoder to writer (after odin-data's ``Frame``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .peak_list import FrameTriage


class Encoding(enum.Enum):
    """How ``Frame.blob`` is encoded; each value maps to exactly one HDF5 chunk filter.

    Decoders normalise every wire form into one of these, so the writer can hand the blob to
    ``write_direct_chunk`` unchanged (HDF5 direct chunk write, as the DECTRIS file writer stores chunks).
    """

    BSLZ4 = "bslz4"  # HDF5 filter 32008 chunk: 12-byte big-endian header + bitshuffled LZ4 blocks
    LZ4 = "lz4"  # HDF5 filter 32004 chunk: 12-byte header + length-prefixed LZ4 blocks
    RAW = "raw"  # uncompressed little-endian pixels, row-major

    @property
    def hdf5_filter_id(self) -> int | None:
        return {Encoding.BSLZ4: 32008, Encoding.LZ4: 32004, Encoding.RAW: None}[self]


@dataclass(slots=True)
class Frame:
    """One detector image as received, ready to be written as one HDF5 chunk.

    Stages never change a frame: they make a new one (``dataclasses.replace``). It is not declared frozen
    because a frozen dataclass sets each field through ``object.__setattr__``, which costs the receive
    thread 1.5 µs per frame (a sixth of a V1 image message's decoding).

    ``index`` is the 0-based position in the series (V1 ``frame``, V2 ``image_id``). ``blob`` holds the
    detector's bytes in HDF5-chunk form; it is never recompressed. ``shape`` is (height, width), i.e.
    (slow, fast). Times are seconds: ``received_s`` is host ``time.time()`` at receipt, the others are
    the detector's own clock and may be ``None`` when the stream did not send them
    (real DCUs send detector-clock nanoseconds, not Unix time).
    ``triage`` is added by the hit finder (``dataclasses.replace``); the blob is never touched by it.
    """

    series_id: int
    index: int
    shape: tuple[int, int]
    dtype: np.dtype
    encoding: Encoding
    blob: bytes | memoryview
    received_s: float
    start_time_s: float | None = None
    stop_time_s: float | None = None
    real_time_s: float | None = None
    channel: str = "threshold_1"
    triage: FrameTriage | None = None  # set by the hit finder; None = not triaged

    @property
    def nbytes_uncompressed(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    @property
    def nbytes_encoded(self) -> int:
        return len(self.blob)


def masked_pixel_value(dtype: np.dtype) -> int | None:
    """The value an EIGER writes into gap and masked pixels of an integer frame (2**bits - 1, with
    pixel_mask_applied); None for float data, which has no such marker."""
    dtype = np.dtype(dtype)
    return int(np.iinfo(dtype).max) if dtype.kind in "ui" else None
