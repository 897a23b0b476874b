"""One NXmx data file (DECTRIS layout): a fixed-size ``/entry/data/data`` stack filled by direct chunk write.

The detector's compressed bytes go to disk unchanged, one frame per chunk (HDF5 direct chunk write, as
DECTRIS stores them): compressing again through h5py ran at about 1 GB/s where direct writes reach 9.7 GB/s
uncompressed-equivalent.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from ..core.chunk_framing import check_chunk
from ..core.errors import FrameRejected
from ..core.frame import Encoding, Frame, masked_pixel_value
from ..core.saving_target import FLUSH_PERIOD_S, create_h5

DATASET_PATH = "/entry/data/data"
# H5Dwrite_chunk filter mask: bit n set = filter n of the pipeline skipped; the dataset has one filter.
_FILTER_SKIPPED = 1
_CHUNK_HEADER = struct.Struct(">QI")  # uncompressed bytes, block bytes (bitshuffle filter 32008, LZ4 filter 32004)


@dataclass(frozen=True, slots=True)
class FrameLayout:
    """Shape, dtype, chunk encoding and channel shared by every frame of one series.

    Taken from the series' first frame, never from an earlier configuration: the Eiger's bit depth
    follows ``count_time`` (as EIGER DCUs do), so a writer primed from the last series would be wrong.
    """

    shape: tuple[int, int]
    dtype: np.dtype
    encoding: Encoding
    channel: str

    @classmethod
    def of(cls, frame: Frame) -> FrameLayout:
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        layout = cls(shape, np.dtype(frame.dtype), frame.encoding, frame.channel)
        layout.filter_mask(frame)
        return layout

    @property
    def bit_depth(self) -> int:
        return self.dtype.itemsize * 8

    @property
    def fill_value(self) -> int | float:
        """The Eiger masked-pixel value 2**bits - 1 (DECTRIS convention), so a lost frame reads as fully masked."""
        marker = masked_pixel_value(self.dtype)
        return float("nan") if marker is None else marker

    @property
    def frame_nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def dataset_filter(self) -> dict[str, object]:
        """h5py keyword arguments of the chunk filter matching the detector's encoding."""
        if self.encoding is Encoding.BSLZ4:
            return dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
        if self.encoding is Encoding.LZ4:
            return dict(hdf5plugin.LZ4())
        return {}

    def filter_mask(self, frame: Frame) -> int:
        """The ``write_direct_chunk`` filter mask for ``frame``, or ``FrameRejected`` if it cannot be stored
        in this series' datasets without recompressing it.

        A RAW frame in a compressed series is stored with the filter marked as skipped, which HDF5 honours
        on read. A compressed chunk must start with the 12-byte header whose first field is the frame
        size: a header-less chunk is accepted by HDF5 on write and fails only on read.
        """
        if tuple(frame.shape) != self.shape or np.dtype(frame.dtype) != self.dtype:
            raise FrameRejected("shape_mismatch", f"frame {frame.index} is {frame.shape} {np.dtype(frame.dtype)}, "
                                f"the series is {self.shape} {self.dtype}")
        if frame.channel != self.channel:
            raise FrameRejected("unsupported_channel", f"only {self.channel!r} is written, got {frame.channel!r}")
        blob = memoryview(frame.blob)
        if frame.encoding is Encoding.RAW:
            if blob.nbytes != self.frame_nbytes:
                raise FrameRejected("size_mismatch", f"raw frame {frame.index} has {blob.nbytes} bytes, "
                                    f"expected {self.frame_nbytes}")
            return 0 if self.encoding is Encoding.RAW else _FILTER_SKIPPED
        if frame.encoding is not self.encoding:
            raise FrameRejected("encoding_mismatch", f"frame {frame.index} is {frame.encoding.value}, "
                                f"the series is {self.encoding.value}")
        if blob.nbytes < _CHUNK_HEADER.size or _CHUNK_HEADER.unpack_from(blob)[0] != self.frame_nbytes:
            raise FrameRejected("chunk_header_mismatch", f"frame {frame.index} lacks the 12-byte chunk header "
                                f"giving its size {self.frame_nbytes}")
        # The block chain and the LZ4 sequences were verified before the frame got here: by the writer's
        # frame-check thread (writers/checked_writer.py) or by the triage worker that decoded it. Chunks
        # detpipe compresses itself (RED, reduce) are whole. So only the header is checked on this thread,
        # which is the slowest of the chain: the walk would cost it ~60 µs per 4M frame.
        check_chunk(frame.encoding, blob, self.frame_nbytes, self.dtype.itemsize, walk_chain=False)
        return 0


class NxmxDataFile:
    """A data file holding frames ``first_index … first_index + n_rows - 1`` of a series.

    The dataset is created at its final size (``maxshape`` = shape: fixed, never unlimited, so VDS and
    SWMR readers see a stable extent) and only shrinks when the series ends early (``close(trim=True)``).
    Rows that never arrive stay unallocated and read as the fill value; nothing pads them on disk.
    The file is flushed when created and then at most every ``FLUSH_PERIOD_S``, so a writer killed
    mid-file (kill -9, power loss) leaves it readable up to the last flush.
    """

    def __init__(
        self, path: Path, number: int, first_index: int, n_rows: int, layout: FrameLayout, *, overwrite: bool
    ) -> None:
        self.path = path
        self.number = number
        self.first_index = first_index
        self.n_rows = n_rows
        self.rows_written = 0
        self.highest_row = -1
        self._written = bytearray(n_rows)
        self._file = create_h5(path, overwrite=overwrite)
        try:
            self._dataset = self._create_layout(layout)
            self._file.flush()
        except BaseException:
            self._file.close()
            raise
        self._flushed_monotonic = time.monotonic()

    def _create_layout(self, layout: FrameLayout) -> h5py.Dataset:
        root = self._file
        root.attrs["default"] = "entry"
        entry = root.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "default": "data"})
        group = entry.create_group("data")
        group.attrs.update({"NX_class": "NXdata", "signal": "data"})
        shape = (self.n_rows, *layout.shape)
        dataset = group.create_dataset(
            "data", shape=shape, maxshape=shape, chunks=(1, *layout.shape), dtype=layout.dtype,
            fillvalue=layout.fill_value, **layout.dataset_filter(),
        )
        self._set_image_numbers(dataset, self.n_rows)
        return dataset

    def _set_image_numbers(self, dataset: h5py.Dataset, n_rows: int) -> None:
        # 1-based image numbers of the rows present, as DECTRIS writes them (uint64 on EIGER2).
        dataset.attrs["image_nr_low"] = np.uint64(self.first_index + 1)
        dataset.attrs["image_nr_high"] = np.uint64(self.first_index + n_rows)  # low - 1 when empty

    @property
    def complete(self) -> bool:
        return self.rows_written == self.n_rows

    def write(self, row: int, frame: Frame, filter_mask: int) -> None:
        """Stores the frame's blob unchanged as chunk ``row``; a row already written is rejected."""
        if self._written[row]:
            raise FrameRejected("duplicate_frame", f"frame {frame.index} was already written")
        self._dataset.id.write_direct_chunk((row, 0, 0), frame.blob, filter_mask=filter_mask)
        self._written[row] = 1
        self.rows_written += 1
        self.highest_row = max(self.highest_row, row)
        if (now := time.monotonic()) - self._flushed_monotonic >= FLUSH_PERIOD_S:
            self._file.flush()  # ~0.1 ms: the chunk index and the superblock, the chunks are written already
            self._flushed_monotonic = now

    def close(self, *, trim: bool) -> int:
        """Closes the file and returns the rows it holds. With ``trim`` the stack is cut after the highest
        row written (the series ended inside this file); lost rows before it stay as fill."""
        try:
            n_rows = self.n_rows
            if trim and self.highest_row + 1 < n_rows:
                n_rows = self.highest_row + 1
                self._dataset.resize(n_rows, axis=0)
                self._set_image_numbers(self._dataset, n_rows)
            return n_rows
        finally:
            self._file.close()
