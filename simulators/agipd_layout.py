"""AGIPD-1M geometry, source names and the array layouts the simulated Karabo bridge sends.

Geometry (European XFEL AGIPD documentation): 16 modules of 512 × 128 pixels (slow scan ss × fast scan
fs), each module 8 ASICs of 64 × 128; up to 352 memory cells per train. Where the pixels sit
(``pixel_positions``) follows extra-geom's ``AGIPD_1MGeometry.from_quad_positions(quad_pos, asic_gap=2,
panel_gap=29)`` with its documented example quadrant positions: the scene needs it for what is round or straight
in the lab (water and ice rings, the jet streak, the beamstop-holder shadow), and a triage that takes the same
published layout sees those rings as rings.

Canonical order (what ``AgipdSimulator.train(i)`` returns, detpipe's in-memory layout):
raw ``(pulse, module, 2, ss, fs)`` uint16 with ``[:, :, 0]`` analog and ``[:, :, 1]`` digital gain;
corrected ``(pulse, module, ss, fs)`` float32, ``gain`` uint8 and ``mask`` uint32 alike.

Wire layouts of ``image.data`` (``image.gain``/``image.mask`` follow ``image.data`` without the 2 axis):

=====================  ==============================  ==============================
source                 ``file``                         ``online``
=====================  ==============================  ==============================
combined, corrected    (pulse, module, ss, fs)          (module, fs, ss, pulse)
combined, raw          (pulse, module, 2, ss, fs)       (module, 2, fs, ss, pulse)
per module, corrected  (pulse, ss, fs)                  (fs, ss, pulse)
per module, raw        (pulse, 2, ss, fs)               (2, fs, ss, pulse)
=====================  ==============================  ==============================

The corrected combined layouts are those of karabo-bridge-py's simulator (online → file is
``np.transpose(a, (3, 0, 2, 1))``). The position of the raw analog/digital axis in online order is this
simulator's convention (no public source gives one; karabo-bridge-py's simulator has no such axis):
it stays right after the module, so every online array is "pulse moved last, ss and fs swapped".
"""

from __future__ import annotations

import enum
import functools

import numpy as np
from numpy.typing import NDArray

MODULES = 16
MODULE_SS = 512
MODULE_FS = 128
ASIC_SS = 64  # an ASIC spans 64 rows × all 128 columns of its module
ASICS_PER_MODULE = MODULE_SS // ASIC_SS
MEMORY_CELLS = 352
DETECTOR = "SPB_DET_AGIPD1M-1"
QUAD_POSITIONS_PX = ((-525.0, 625.0), (-550.0, -10.0), (520.0, -160.0), (542.5, 475.0))  # extra-geom's example
ASIC_GAP_PX = 2.0  # between the ASICs of a module, along slow scan
MODULE_GAP_PX = 29.0  # between the modules of a quadrant, along fast scan


class AgipdProduct(enum.Enum):
    """What the bridge streams (European XFEL AGIPD documentation)."""

    RAW = "raw"
    CORRECTED = "corrected"


class AgipdLayout(enum.Enum):
    """Array order on the wire: as in EuXFEL files, or as the online calibration pipeline sends it."""

    FILE = "file"
    ONLINE = "online"


class AgipdSources(enum.Enum):
    """One source with all modules stacked (as SPB's APPEND devices send), or one source per module."""

    COMBINED = "combined"
    MODULES = "modules"


def combined_source(product: AgipdProduct) -> str:
    suffix = "APPEND_RAW" if product is AgipdProduct.RAW else "APPEND_CORRECTED"
    return f"{DETECTOR}/CAL/{suffix}"


def module_source(module: int) -> str:
    """The per-module source name; the combined source's ``sources`` list names these too."""
    return f"{DETECTOR}/DET/{module}CH0:xtdf"


def online_axes(ndim: int) -> tuple[int, ...]:
    """Axes that turn a file-order array (pulse first, ss and fs last) into online order."""
    return (*range(1, ndim - 2), ndim - 1, ndim - 2, 0)


def file_axes(ndim: int) -> tuple[int, ...]:
    """The inverse of ``online_axes``: online order back to file order."""
    return tuple(int(a) for a in np.argsort(online_axes(ndim)))


def canonical_view(buffer: np.ndarray, layout: AgipdLayout, *, module_major: bool = False) -> np.ndarray:
    """File-order view (pulse, module, …) of a train buffer allocated in its wire order.

    Trains are generated straight into the order they are sent in, so sending never transposes:
    ``file`` buffers are (pulse, module, …), or (module, pulse, …) when ``module_major`` so that each
    per-module source is one contiguous slice; ``online`` buffers are (module, …, fs, ss, pulse), where
    each module is contiguous anyway.
    """
    if layout is AgipdLayout.ONLINE:
        return buffer.transpose(file_axes(buffer.ndim))
    return buffer.swapaxes(0, 1) if module_major else buffer


def train_buffer(
    cells: int,
    module_shape: tuple[int, ...],
    dtype: np.dtype,
    layout: AgipdLayout,
    *,
    module_major: bool = False,
    zeros: bool = False,
) -> np.ndarray:
    """A buffer in wire order for ``cells`` frames of modules of ``module_shape`` ([2,] ss, fs);
    uninitialised unless ``zeros`` (calloc'd, so untouched pages cost nothing to send)."""
    allocate = np.zeros if zeros else np.empty
    if layout is AgipdLayout.ONLINE:
        canonical = (cells, MODULES, *module_shape)
        return allocate([canonical[a] for a in online_axes(len(canonical))], dtype=dtype)
    if module_major:
        return allocate((MODULES, cells, *module_shape), dtype=dtype)
    return allocate((cells, MODULES, *module_shape), dtype=dtype)


def wire_array(array: np.ndarray, layout: AgipdLayout) -> np.ndarray:
    """A file-order array (pulse first) in ``layout``, C-contiguous; no copy when it already is, which
    holds for the views ``canonical_view`` gives of a buffer allocated in wire order."""
    if layout is AgipdLayout.ONLINE:
        array = array.transpose(online_axes(array.ndim))
    return np.ascontiguousarray(array)


@functools.cache
def pixel_positions() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(x, y) of every pixel's centre, each (16, 512, 128) read-only, in pixels from the detector centre (x to
    the left and y up, looking along the beam). A quadrant position is the outer corner of the first pixel of
    its first module; modules 0–7 run slow scan along +x and fast scan along −y, modules 8–15 the mirror image;
    module ``p`` of a quadrant starts ``p·(128 + MODULE_GAP_PX)`` below the corner, and each ASIC of a module
    ``ASIC_GAP_PX`` further along slow scan than the one before."""
    quadrant, in_quadrant = np.divmod(np.arange(MODULES), 4)
    corner = np.asarray(QUAD_POSITIONS_PX)[quadrant]
    along_ss = np.where(quadrant < 2, 1.0, -1.0)[:, None]  # the direction slow scan runs in x; fast scan, −that in y
    ss = np.arange(MODULE_SS)
    x = corner[:, :1] + along_ss * (ss + 0.5 + ASIC_GAP_PX * (ss // ASIC_SS))
    y = corner[:, 1:] - in_quadrant[:, None] * (MODULE_FS + MODULE_GAP_PX) - along_ss * (np.arange(MODULE_FS) + 0.5)
    shape = (MODULES, MODULE_SS, MODULE_FS)
    positions = np.broadcast_to(x[:, :, None], shape).copy(), np.broadcast_to(y[:, None, :], shape).copy()
    for array in positions:
        array.flags.writeable = False
    return positions
