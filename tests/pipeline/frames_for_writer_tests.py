"""Frames as the decoders hand them to the writer, built from the 32008/32004 HDF5 filter chunk formats.

The blobs are made here from the spec, not by the code under test: bslz4 is ``bitshuffle.compress_lz4``
with the 12-byte header prepended, lz4 is HDF5-32004 framing with 8192-byte blocks, raw is the pixels.
"""

from __future__ import annotations

import struct
from pathlib import Path

import bitshuffle
import h5py
import hdf5plugin  # noqa: F401 - registers filters 32008/32004 for reading back
import lz4.block
import numpy as np

from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.series import DetectorConfig, SeriesStart

SMALL = (64, 96)
BLOCK_BYTES = 8192


def pixels(index: int, shape: tuple[int, int] = SMALL, dtype: str = "uint16", seed: int = 0) -> np.ndarray:
    """A reproducible photon-counting image for frame ``index``; never the masked value."""
    rng = np.random.default_rng((seed, index))
    image = rng.poisson(3.0, shape) + (index % 7)
    return image.astype(dtype)


def bslz4_blob(image: np.ndarray) -> bytes:
    return struct.pack(">QI", image.nbytes, BLOCK_BYTES) + bitshuffle.compress_lz4(image).tobytes()


def lz4_blob(image: np.ndarray) -> bytes:
    raw = image.tobytes()
    parts = [struct.pack(">QI", len(raw), BLOCK_BYTES)]
    for start in range(0, len(raw), BLOCK_BYTES):
        block = raw[start : start + BLOCK_BYTES]
        packed = lz4.block.compress(block, store_size=False)
        if len(packed) >= len(block):  # a block whose length equals the block size is stored as-is (HDF5 LZ4 filter)
            packed = block
        parts.append(struct.pack(">I", len(packed)) + packed)
    return b"".join(parts)


BLOB_OF = {Encoding.BSLZ4: bslz4_blob, Encoding.LZ4: lz4_blob, Encoding.RAW: lambda image: image.tobytes()}


def frame(index: int, image: np.ndarray, encoding: Encoding = Encoding.BSLZ4, series_id: int = 1) -> Frame:
    return Frame(series_id=series_id, index=index, shape=image.shape, dtype=image.dtype, encoding=encoding,
                 blob=BLOB_OF[encoding](image), received_s=0.0)


def config(shape: tuple[int, int] = SMALL, dtype: str = "uint16", nimages: int = 25, **extra: object) -> DetectorConfig:
    values: dict[str, object] = dict(
        count_time_s=0.01, frame_time_s=0.0101, photon_energy_ev=12398.42, beam_center_x_px=48.0,
        beam_center_y_px=32.0, detector_distance_m=0.12, description="Dectris EIGER2 Si 4M",
        detector_number="E-08-0123",
        bit_depth_readout=16, saturation_value=65000,
        header={"omega_start": 10.0, "omega_increment": 0.1, "eiger_fw_version": "release-2022.1.2",
                "software_version": "1.8.0", "countrate_correction_applied": True},
    )
    values.update(extra)
    return DetectorConfig(shape=shape, dtype=np.dtype(dtype), nimages=nimages, **values)  # type: ignore[arg-type]


def start(series_id: int = 1, cfg: DetectorConfig | None = None, **extra: object) -> SeriesStart:
    return SeriesStart(series_id=series_id, config=cfg, received_s=1.7e9, **extra)  # type: ignore[arg-type]


def read_stack(path: Path, dataset: str = "/entry/data/data") -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle[dataset][()]
