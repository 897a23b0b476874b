"""What a triage worker needs to build its hit finder for one series, sent to each worker once per series.

Geometry is rebuilt in the worker (radius map, ring tables: ~0.1–0.5 s) instead of being pickled across,
so only the small inputs travel: detector kind, parameters, shape, beam centre, masks.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from ..agipd.geometry import DEFAULT_QUAD_POSITIONS
from ..core.train import AGIPD_MODULES, MODULE_SHAPE
from ..core.triage_params import TriageParams
from .detector_geometry import agipd_triage_geometry, eiger_triage_geometry, geometry_file_triage_geometry
from .geometry import load_user_mask
from .hit_finder import HitFinder

AGIPD_IMAGE_BYTES = AGIPD_MODULES * MODULE_SHAPE[0] * MODULE_SHAPE[1] * 4  # one float32 cell image


class DetectorKind(enum.Enum):
    EIGER = "eiger"  # a Frame: a bslz4/lz4/raw chunk decoded in the worker
    AGIPD = "agipd"  # one memory cell of a corrected Train: float32 photons + uint32 bad-pixel mask


@dataclass(frozen=True, slots=True, eq=False)
class TriageSetup:
    """Per-series triage inputs. ``shape``/``beam_center_px``/``pixel_mask`` describe an Eiger series (from
    its header); ``quad_positions`` the AGIPD-1M layout. ``user_mask_path`` is the optional mask file
    (1 = good), ``.npy`` or ``file.h5:/path``, checked for shape when the geometry is built.
    ``geometry_file``, a CrystFEL ``.geom``, replaces the built-in layout and beam centre (its masks add to
    the detector's pixel mask and the user mask)."""

    kind: DetectorKind
    params: TriageParams
    shape: tuple[int, int] = (AGIPD_MODULES * MODULE_SHAPE[0], MODULE_SHAPE[1])
    itemsize: int = 4
    beam_center_px: tuple[float, float] | None = None
    pixel_mask: np.ndarray | None = None
    quad_positions: tuple[tuple[float, float], ...] = DEFAULT_QUAD_POSITIONS
    user_mask_path: str = ""
    geometry_file: str = ""

    @property
    def slot_bytes(self) -> int:
        """Shared-memory bytes one image needs: an Eiger chunk is at most its raw size plus framing
        (bslz4 of incompressible data grows by < 1 %); an AGIPD cell is its image plus its mask."""
        if self.kind is DetectorKind.AGIPD:
            return 2 * AGIPD_IMAGE_BYTES
        raw = self.shape[0] * self.shape[1] * self.itemsize
        return raw + raw // 64 + 4096

    def key(self) -> Hashable:
        """Equal keys build the same hit finder, so a worker keeps the one it has (a 4M geometry takes ~1 s).
        The pixel mask counts by which pixels it marks bad, not by its dtype: the mask read over REST at
        Prepare and the one the series header brings are the same mask."""
        mask = None
        if self.pixel_mask is not None:
            bad = np.packbits(np.asarray(self.pixel_mask) != 0)
            mask = (np.shape(self.pixel_mask), hashlib.blake2b(bad.tobytes(), digest_size=16).digest())
        return (self.kind, self.params, self.shape, self.itemsize, self.beam_center_px, self.quad_positions,
                self.user_mask_path, self.geometry_file, mask)

    def hit_finder(self) -> HitFinder:
        user_mask = load_user_mask(self.user_mask_path) if self.user_mask_path else None
        if self.geometry_file:
            geometry = geometry_file_triage_geometry(self.geometry_file, self.shape, pixel_mask=self.pixel_mask,
                                                     user_mask=user_mask, params=self.params)
        elif self.kind is DetectorKind.AGIPD:
            geometry = agipd_triage_geometry(quad_positions=self.quad_positions, user_mask=user_mask,
                                             params=self.params)
        else:
            centre = self.beam_center_px or (None, None)
            geometry = eiger_triage_geometry(self.shape, beam_center_x_px=centre[0], beam_center_y_px=centre[1],
                                             pixel_mask=self.pixel_mask, user_mask=user_mask, params=self.params)
        return HitFinder(geometry, self.params)
