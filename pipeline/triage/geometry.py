"""What peakfinder8 needs to know about a detector, built once per geometry (its inputs and fast mode: docs/triage.md).

A ``TriageGeometry`` holds the per-pixel radius from the beam centre (pixels), the static mask (1 = use,
already cut to ``min_res <= r <= max_res``), the panels peaks may not cross, and the two ring tables the
ring statistics run over: every masked-in pixel grouped by ring ("full"), and a fixed, seeded random
sample of at most ``pixels_per_ring`` of them per ring ("fast", OM's
``number_of_pixel_per_bin_in_radial_statistics``). Building the tables sorts the detector once
(0.6–1.4 s for a 4M detector, 0.13 s for AGIPD-1M); a ``HitFinder`` then reuses them for every frame.

The detector-specific builders (``detector_geometry``) derive radius, panels and mask from each detector's
layout and call ``TriageGeometry.build``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from numpy.typing import NDArray

from ..core.errors import ConfigError
from ..core.triage_params import TriageParams

log = logging.getLogger(__name__)

_HDF5_MASK = re.compile(r"^(?P<file>.+\.(?:h5|hdf5|hdf|cxi|nxs))(?::(?P<dataset>/.*))?$", re.IGNORECASE)


@dataclass(frozen=True, slots=True, eq=False)
class RingTable:
    """Flat pixel indices grouped by 1-px ring: ring b is ``pixels[start[b]:start[b + 1]]``, ascending
    within a ring. ``raster_pixels``/``ring_position`` are the same table in raster order:
    ``pixels[ring_position[k]] == raster_pixels[k]``, for filling the ring-major buffer while reading the
    frame sequentially (``peakfinder8.scatter_ring_values``), which is faster for dense tables."""

    pixels: NDArray[np.int32]
    start: NDArray[np.int64]  # (n_rings + 1,)
    raster_pixels: NDArray[np.int32]
    ring_position: NDArray[np.int32]
    image_pixels: int

    @property
    def read_in_raster_order(self) -> bool:
        """True when the table covers more than an eighth of the frame: reading it in ring order would
        touch nearly every cache line of the frame out of order (peakfinder8.scatter_ring_values)."""
        return 8 * self.pixels.size > self.image_pixels

    @property
    def n_pixels(self) -> int:
        return int(self.pixels.size)


@dataclass(frozen=True, slots=True, eq=False)
class TriageGeometry:
    """Radius map, mask, panels and ring tables of one detector layout; arrays are read-only.

    ``radius`` float32 (H, W) is the distance in pixels from the beam centre; ``ring_index`` int32 (H, W)
    is ``rint(radius)``, the 1-px ring of each pixel. ``mask`` uint8 (H, W), 1 = use, is the bad-pixel
    mask AND ``min_res <= radius <= max_res`` (OM keeps the bounds; ``max_res = 0``: no upper cut) AND "inside
    a panel". ``panel_id`` int32 (H, W) is −1 outside every panel. ``panels`` int32 (n, 4) rows are
    ``[ss0, ss1, fs0, fs1]``, half-open. ``static_mask`` is the mask before the radius cut, kept so the
    geometry can be rebuilt for other parameters (``for_params``).
    """

    radius: NDArray[np.float32]
    static_mask: NDArray[np.uint8]
    mask: NDArray[np.uint8]
    panel_id: NDArray[np.int32]
    panels: NDArray[np.int32]
    ring_index: NDArray[np.int32]
    full_rings: RingTable
    sampled_rings: RingTable
    min_res: float
    max_res: float
    pixels_per_ring: int
    seed: int

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.radius.shape[0]), int(self.radius.shape[1]))

    @property
    def n_rings(self) -> int:
        return int(self.full_rings.start.size - 1)

    def rings(self, *, fast_mode: bool) -> RingTable:
        return self.sampled_rings if fast_mode else self.full_rings

    def matches(self, params: TriageParams) -> bool:
        """True when the mask and ring tables were built for these parameters' radius cut and sample size."""
        return (self.min_res, self.max_res, self.pixels_per_ring) == (
            params.min_res,
            params.max_res,
            params.pixels_per_ring,
        )

    def for_params(self, params: TriageParams) -> TriageGeometry:
        """This geometry, or one rebuilt (same radius, static mask, panels, seed) for ``params``."""
        if self.matches(params):
            return self
        return TriageGeometry.build(
            self.radius,
            self.static_mask,
            self.panels,
            min_res=params.min_res,
            max_res=params.max_res,
            pixels_per_ring=params.pixels_per_ring,
            seed=self.seed,
        )

    @classmethod
    def build(
        cls,
        radius: NDArray[np.floating],
        static_mask: NDArray[np.integer] | NDArray[np.bool_],
        panels: NDArray[np.integer] | list[tuple[int, int, int, int]],
        *,
        min_res: float,
        max_res: float,
        pixels_per_ring: int,
        seed: int = 0,
    ) -> TriageGeometry:
        """Validate the inputs (every problem in one ``ConfigError``) and build both ring tables.

        ``static_mask`` is nonzero = good. Pixels with a non-finite radius are masked. Panels must lie
        inside the image and must not overlap.
        """
        radius = np.array(radius, dtype=np.float32, order="C")  # a private copy: it is frozen below
        static = np.asarray(static_mask)
        panel_rows = np.asarray(panels, dtype=np.int64).reshape(-1, 4)
        problems: list[str] = []
        if radius.ndim != 2:
            problems.append(f"radius map must be 2-D (H, W), got shape {radius.shape}")
        if static.shape != radius.shape:
            problems.append(f"mask shape {static.shape} differs from the radius map's {radius.shape}")
        if pixels_per_ring < 1:
            problems.append(f"pixels_per_ring must be >= 1, got {pixels_per_ring}")
        if problems:
            raise ConfigError(problems)
        panel_id = _panel_map(radius.shape, panel_rows, problems)
        if problems:
            raise ConfigError(problems)
        finite = np.isfinite(radius)
        use = (static != 0) & finite & (panel_id >= 0) & (radius >= min_res)
        if max_res > 0:
            use &= radius <= max_res
        safe_radius = np.where(finite, radius, np.float32(0.0))
        ring_index = np.rint(safe_radius).astype(np.int32)
        n_rings = int(ring_index.max(initial=0)) + 1
        full, sampled = _ring_tables(ring_index.reshape(-1), use.reshape(-1), n_rings, pixels_per_ring, seed)
        geometry = cls(
            radius=_frozen(radius),
            static_mask=_frozen((static != 0).astype(np.uint8)),
            mask=_frozen(use.astype(np.uint8)),
            panel_id=_frozen(panel_id),
            panels=_frozen(panel_rows.astype(np.int32)),
            ring_index=_frozen(ring_index),
            full_rings=full,
            sampled_rings=sampled,
            min_res=float(min_res),
            max_res=float(max_res),
            pixels_per_ring=int(pixels_per_ring),
            seed=int(seed),
        )
        log.debug(
            "triage geometry %s: %d panels, %d rings, %d pixels in use, %d sampled",
            geometry.shape, panel_rows.shape[0], n_rings, full.n_pixels, sampled.n_pixels,
        )
        return geometry


def load_user_mask(path: str | Path) -> NDArray[np.uint8]:
    """An optional user mask, 1 = good (OM/CrystFEL ``bad_pixel_map`` convention: any nonzero is good).

    ``path`` is a ``.npy`` file or ``file.h5:/dataset/path`` (also ``.hdf5``, ``.cxi``, ``.nxs``). A missing
    file, dataset or unknown format raises ``ConfigError``; the shape is checked by the geometry builders.
    """
    text = str(path)
    if text.lower().endswith(".npy"):
        file = Path(text)
        if not file.is_file():
            raise ConfigError([f"user mask file {file} does not exist; give an existing .npy or file.h5:/dataset"])
        try:
            values = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ConfigError([f"user mask {file} is not a readable .npy array: {err}"]) from err
        return _good_pixels(values, str(file))
    match = _HDF5_MASK.match(text)
    if match is None:
        raise ConfigError([f"user mask {text!r} is neither a .npy file nor an HDF5 'file.h5:/dataset/path'"])
    file = Path(match["file"])
    dataset = match["dataset"]
    if not file.is_file():
        raise ConfigError([f"user mask file {file} does not exist; give an existing .npy or file.h5:/dataset"])
    if not dataset:
        raise ConfigError([f"user mask {text!r} names no dataset; write it as {file}:/path/to/mask"])
    try:
        with h5py.File(file, "r") as f:
            node = f.get(dataset)
            if not isinstance(node, h5py.Dataset):
                raise ConfigError([f"user mask file {file} has no dataset {dataset}"])
            values = node[()]
    except OSError as err:
        raise ConfigError([f"user mask {file} is not a readable HDF5 file: {err}"]) from err
    return _good_pixels(values, text)


def _good_pixels(values: object, source: str) -> NDArray[np.uint8]:
    """1 where the mask is nonzero; a mask is a 2-D image or AGIPD's (16, 512, 128) stack of numbers."""
    array = np.asarray(values)
    if array.dtype.kind not in "biuf" or array.ndim not in (2, 3):
        raise ConfigError([f"user mask {source} holds a {array.ndim}-D {array.dtype} array, not a 2-D (or AGIPD "
                           "16 × 512 × 128) array of numbers"])
    return (array != 0).astype(np.uint8)


def _panel_map(shape: tuple[int, ...], panels: NDArray[np.int64], problems: list[str]) -> NDArray[np.int32]:
    height, width = shape
    panel_id = np.full(shape, -1, dtype=np.int32)
    for i, (ss0, ss1, fs0, fs1) in enumerate(panels.tolist()):
        if not (0 <= ss0 < ss1 <= height and 0 <= fs0 < fs1 <= width):
            problems.append(f"panel {i} [ss {ss0}:{ss1}, fs {fs0}:{fs1}] is empty or outside the {shape} image")
            continue
        region = panel_id[ss0:ss1, fs0:fs1]
        if (region >= 0).any():
            problems.append(f"panel {i} [ss {ss0}:{ss1}, fs {fs0}:{fs1}] overlaps panel {int(region.max())}")
            continue
        region[...] = i
    return panel_id


def _ring_tables(
    ring_index: NDArray[np.int32], use: NDArray[np.bool_], n_rings: int, pixels_per_ring: int, seed: int
) -> tuple[RingTable, RingTable]:
    """Full table: every used pixel, grouped by ring. Sampled table: per ring, the first
    ``pixels_per_ring`` used pixels of a seeded random permutation (a uniform sample without
    replacement). Deterministic for (mask, radius, pixels_per_ring, seed). Sorting by a 16-bit ring key
    lets numpy use its radix sort: ≈ 0.5 s for a 4M detector."""
    pixels = np.flatnonzero(use)
    ring_key = ring_index[pixels].astype(np.int16 if n_rings < 2**15 else np.int32)
    counts = np.bincount(ring_key, minlength=n_rings)
    full = _table(pixels, ring_key, counts, ring_index.size)
    rng = np.random.default_rng([seed, 0x7269])  # "ri": keeps this stream apart from any other use of seed
    shuffled = rng.permutation(pixels.size)
    by_ring = shuffled[np.argsort(ring_key[shuffled], kind="stable")]
    rank = np.arange(pixels.size) - _starts(counts)[ring_key[by_ring]]
    chosen = np.sort(by_ring[rank < pixels_per_ring])
    sampled = _table(pixels[chosen], ring_key[chosen], np.minimum(counts, pixels_per_ring), ring_index.size)
    return full, sampled


def _table(
    pixels: NDArray[np.intp], ring_key: NDArray[np.integer], counts: NDArray[np.intp], image_pixels: int
) -> RingTable:
    """The ring table of ``pixels`` (ascending flat indices) whose rings are ``ring_key``."""
    order = np.argsort(ring_key, kind="stable")
    position = np.empty(order.size, dtype=np.int32)
    position[order] = np.arange(order.size, dtype=np.int32)
    return RingTable(
        pixels=_frozen(pixels[order].astype(np.int32)),
        start=_frozen(_starts(counts)),
        raster_pixels=_frozen(pixels.astype(np.int32)),
        ring_position=_frozen(position),
        image_pixels=image_pixels,
    )


def _starts(counts: NDArray[np.int64]) -> NDArray[np.int64]:
    starts = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return starts


def _frozen(array: NDArray) -> NDArray:
    array.flags.writeable = False
    return array
