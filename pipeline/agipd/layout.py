"""AGIPD wire layouts: which axis is which, recognised from an array's shape, and the copy into file order.

Axes are named by letters: ``p`` pulse (memory cell frame), ``m`` module (16), ``g`` the raw data's
analog/digital axis (2), ``y`` slow scan (512), ``x`` fast scan (128). File order puts the pulse first
and the pixels in (ss, fs) order; the online pipeline (and karabo-bridge's simulator by default) puts
the pulse last and swaps ss/fs (karabo-bridge-py's simulator). Every layout the receiver accepts is one of these
strings, so detection is a table lookup and conversion is one generic transpose.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np

from ..core.train import AGIPD_MODULES, MODULE_SHAPE
from .transpose import online_to_file

AXIS_SIZES = {"m": AGIPD_MODULES, "g": 2, "y": MODULE_SHAPE[0], "x": MODULE_SHAPE[1]}  # "p": any


class Layout(enum.Enum):
    """Axis order of an AGIPD array on the wire; AUTO recognises it from the shape."""

    AUTO = "auto"
    FILE = "file"  # (pulse, [module,] [2,] ss, fs), as in EXDF files
    ONLINE = "online"  # ([module,] [2,] fs, ss, pulse), as the online calibration pipeline sends


# (axes, layout) pairs; raw arrays have "g", corrected ones (and karabo-bridge's raw quirk) do not.
COMBINED_AXES = (("pmyx", Layout.FILE), ("mxyp", Layout.ONLINE), ("pmgyx", Layout.FILE), ("mgxyp", Layout.ONLINE))
MODULE_AXES = (("pyx", Layout.FILE), ("xyp", Layout.ONLINE), ("pgyx", Layout.FILE), ("gxyp", Layout.ONLINE))


def matching_axes(
    shape: Sequence[int], candidates: Sequence[tuple[str, Layout]], layout: Layout
) -> list[tuple[str, Layout]]:
    """Every candidate whose fixed-size axes fit ``shape`` (restricted to ``layout`` unless AUTO).

    Only a single-module (pulse, ss, fs) array with exactly 128 pulses fits two candidates ("pyx" and
    "xyp"); every other shape fits at most one, because module (16), gain (2) and fast-scan (128)
    axes sit at different positions in the two orders.
    """
    return [
        (axes, lay)
        for axes, lay in candidates
        if (layout is Layout.AUTO or lay is layout)
        and len(axes) == len(shape)
        and all(a == "p" or AXIS_SIZES[a] == n for a, n in zip(axes, shape, strict=True))
    ]


def pulses_of(shape: Sequence[int], axes: str) -> int:
    return int(shape[axes.index("p")])


def copy_to_file_order(src: np.ndarray, axes: str, dst: np.ndarray) -> None:
    """Write ``src`` (laid out as ``axes``) into ``dst``, a view in file order (pulse, lead…, ss, fs).

    ``dst`` may be strided (one module of a train, or the analog plane); in file layout this is a plain
    copy, in online layout the tiled transpose of ``transpose``.
    """
    if axes[0] == "p":
        dst[...] = src
        return
    lead = axes[:-3]  # online: lead… x y p
    npulse = src.shape[-1]
    block = int(np.prod(src.shape[:-3], dtype=np.int64))
    src4 = src.reshape(block, src.shape[-3], src.shape[-2], npulse)
    if len(lead) == 0:
        dst4 = dst[:, None]
    elif len(lead) == 1:
        dst4 = dst
    else:
        dst4 = dst.reshape(npulse, block, dst.shape[-2], dst.shape[-1])
        if not np.shares_memory(dst4, dst):  # reshape of a strided view would copy and lose the result
            raise ValueError(f"cannot merge the leading axes of a strided {dst.shape} destination")
    online_to_file(src4, dst4)


def to_file_order(src: np.ndarray, axes: str, dtype: np.dtype | type | None = None) -> np.ndarray:
    """``src`` in file order: itself when it already is (zero-copy), else one new C-contiguous copy."""
    dtype = np.dtype(dtype or src.dtype)
    if axes[0] == "p" and src.dtype == dtype and src.flags.c_contiguous:
        return src
    shape = tuple(src.shape[axes.index(a)] for a in file_axes(axes))
    out = np.empty(shape, dtype)
    copy_to_file_order(src, axes, out)
    return out


def file_axes(axes: str) -> str:
    """The file-order axes of a layout: pulse first, then modules/gain, then (ss, fs)."""
    return "p" + "".join(a for a in axes if a in "mg") + "yx"
