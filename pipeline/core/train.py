"""One AGIPD train in detpipe's canonical layout: the unit the AGIPD receiver, correction and EXDF
writer pass along (normalise every wire layout to one in-memory layout)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .peak_list import FrameTriage

AGIPD_MODULES = 16
MODULE_SHAPE = (512, 128)  # (slow scan, fast scan) as stored in files (EuXFEL data format documentation)


class Product(enum.Enum):
    """What a facility streams (European XFEL AGIPD documentation)."""

    RAW = "raw"  # uint16 (frames, 16, 2, 512, 128): [:, :, 0] analog ADU, [:, :, 1] digital gain ADU
    CORRECTED = "corrected"  # float32 (frames, 16, 512, 128) photons, with gain (u1) and mask (u4)


@dataclass(frozen=True, slots=True)
class Train:
    """A train of ``frames`` memory cells from all 16 modules, in file order (pulse, module, [2,] ss, fs).

    ``series_id`` is the run number; ``index`` the 0-based position of the train in the run (the stage
    runner logs by it). Frames are identified by ``train_id`` and per-frame ``cell_ids``/``pulse_ids``,
    never by position (European XFEL AGIPD documentation). ``modules_present[m]`` is False for a module
    that did not arrive for this train; its slice of ``data`` is then zero and must not be trusted (the
    writer flags it).
    """

    series_id: int
    index: int
    train_id: int
    product: Product
    data: np.ndarray
    cell_ids: np.ndarray  # uint16 (frames,)
    pulse_ids: np.ndarray  # uint64 (frames,)
    modules_present: tuple[bool, ...]
    timestamp_s: float
    received_s: float
    gain: np.ndarray | None = None  # CORRECTED: uint8 (frames, 16, 512, 128) gain stage 0/1/2
    mask: np.ndarray | None = None  # CORRECTED: uint32 (frames, 16, 512, 128) bad-pixel bits
    triage: tuple[FrameTriage | None, ...] | None = None  # per frame, set by the hit finder; None = not triaged

    @property
    def frames(self) -> int:
        return int(self.data.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)
