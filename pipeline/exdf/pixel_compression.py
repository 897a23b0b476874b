"""How AGIPD module files store their pixels: one frame per chunk, encoded here and written with
``write_direct_chunk`` so the HDF5 filter pipeline never runs in the writer thread.

The default is ``none``, as the European XFEL DAQ writes raw AGIPD data: every HDF5 reader (h5py, extra-data,
``h5dump``, ``karabo-bridge-serve-files``, C and Fortran programs) reads it with nothing extra installed or
imported, and it costs no CPU. ``deflate`` (HDF5's built-in gzip, after its byte shuffle) is also readable by
every HDF5 library; ``bslz4`` (bitshuffle-LZ4, HDF5 filter 32008) is the Eiger's own compression, much faster
than deflate but readable only where the filter plugin is loaded (``import hdf5plugin`` in Python, or
``HDF5_PLUGIN_PATH`` for other programs). ``make bench`` measures all three, and LZF, against a plain disk
write of the same bytes (``exdf_compression.*``); docs/agipd.md gives the numbers and the reader recipes.
"""

from __future__ import annotations

import zlib
from enum import Enum
from typing import Any

import hdf5plugin
import numpy as np

from ..core.chunk_framing import bslz4_chunk

DEFLATE_LEVEL = 1  # gzip level 1: most of deflate's size gain on detector noise at a fraction of its CPU time


class PixelCompression(str, Enum):
    NONE = "none"
    DEFLATE = "deflate"
    BSLZ4 = "bslz4"

    @property
    def dataset_options(self) -> dict[str, Any]:
        """The ``create_dataset`` filter options that tell readers how the chunks are encoded."""
        if self is PixelCompression.DEFLATE:
            return {"shuffle": True, "compression": "gzip", "compression_opts": DEFLATE_LEVEL}
        if self is PixelCompression.BSLZ4:
            return dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
        return {}

    @property
    def stock_readable(self) -> bool:
        """Whether a reader with no HDF5 filter plugin (plain h5py, ``h5dump``) decodes the chunks."""
        return self is not PixelCompression.BSLZ4

    def chunk(self, frame: np.ndarray) -> bytes | np.ndarray:
        """One frame as the bytes of its chunk. A pure function of the pixels, so it runs in the writer's
        compression threads (zlib and bitshuffle release the GIL) and a rewrite stores identical chunks."""
        frame = np.ascontiguousarray(frame)
        if self is PixelCompression.DEFLATE:
            # HDF5's shuffle filter groups byte k of every element, then deflate compresses in zlib format.
            shuffled = frame.reshape(-1).view(np.uint8).reshape(-1, frame.dtype.itemsize).T
            return zlib.compress(np.ascontiguousarray(shuffled), DEFLATE_LEVEL)
        if self is PixelCompression.BSLZ4:
            return bslz4_chunk(frame)
        return frame


def parse_compression(value: str) -> PixelCompression:
    """``value`` as a ``PixelCompression``; ``ValueError`` names the choices (a property or a CLI option)."""
    try:
        return PixelCompression(value.strip().lower())
    except ValueError:
        choices = ", ".join(c.value for c in PixelCompression)
        raise ValueError(f"compression must be one of {choices}, got {value!r}") from None
