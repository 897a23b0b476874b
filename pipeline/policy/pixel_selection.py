"""ROI and module selection (a lossy reduction): keep only the pixels that carry the experiment.

Dropping modules beyond useful resolution, or keeping only the signal-bearing ones (the SPI hit finder
scores AGIPD modules 3, 4, 8 and 15), is geometry-dependent and lossless inside the kept region. The
frame keeps its shape: dropped pixels are written as the detector's masked marker (Eiger 2**bits − 1,
NaN for float frames), which the lossless back end compresses to almost nothing and every reader
already treats as bad, so geometry files and NXmx masks stay valid.

A selection that names a module the detector lacks, or a rectangle outside the image, is a
configuration error: silently keeping less than asked would lose data, and keeping everything would
hide the mistake. Every problem is reported at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ..core.errors import ConfigError
from ..core.train import AGIPD_MODULES, MODULE_SHAPE
from .reduction_params import Roi


def agipd_module_rectangles() -> NDArray[np.int32]:
    """The 16 AGIPD modules in the stacked frame (16 × 512 rows, 128 columns) as ``[ss0, ss1, fs0, fs1]``.

    Module ``m`` holds rows ``m*512 .. (m+1)*512`` and every column, the order modules are stored in.
    """
    rows, cols = MODULE_SHAPE
    return np.asarray(
        [(m * rows, (m + 1) * rows, 0, cols) for m in range(AGIPD_MODULES)], dtype=np.int32
    )


def kept_pixel_mask(
    shape: tuple[int, int],
    *,
    module_rectangles: np.ndarray,
    modules: Sequence[int],
    rois: Sequence[Roi],
) -> NDArray[np.bool_]:
    """True for pixels to keep: the union of the listed modules and ROIs; both empty keeps everything.

    ``module_rectangles`` is (n, 4) ``[ss0, ss1, fs0, fs1]``, half-open, as ``eiger_panels(shape)`` and
    ``agipd_module_rectangles()`` return; module numbers index its rows. An ROI's ``x``/``width`` run
    along fast scan (columns), ``y``/``height`` along slow scan (rows).
    """
    height, width = int(shape[0]), int(shape[1])
    rectangles = np.asarray(module_rectangles)
    if rectangles.ndim != 2 or rectangles.shape[1] != 4:
        raise ValueError(f"module_rectangles must be (n, 4) rows [ss0, ss1, fs0, fs1], got {rectangles.shape}")
    n_modules = rectangles.shape[0]
    problems = [
        f"module {m} does not exist: this {height}×{width} image has modules 0..{n_modules - 1}"
        for m in modules
        if not 0 <= m < n_modules
    ]
    problems += [
        f"ROI {roi.to_list()} (x, y, width, height) is not inside the {height}×{width} image: it needs "
        f"0 <= x, x + width <= {width} (fast scan), 0 <= y, y + height <= {height} (slow scan), "
        "and width, height >= 1"
        for roi in rois
        if not _roi_inside(roi, height, width)
    ]
    if problems:
        raise ConfigError(problems)
    if not modules and not rois:
        return np.ones((height, width), dtype=np.bool_)
    kept = np.zeros((height, width), dtype=np.bool_)
    for m in modules:
        ss0, ss1, fs0, fs1 = (int(v) for v in rectangles[m])
        kept[ss0:ss1, fs0:fs1] = True
    for roi in rois:
        kept[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width] = True
    return kept


def _roi_inside(roi: Roi, height: int, width: int) -> bool:
    return (roi.x >= 0 and roi.y >= 0 and roi.width >= 1 and roi.height >= 1
            and roi.x + roi.width <= width and roi.y + roi.height <= height)


def select_pixels(image: np.ndarray, kept: NDArray[np.bool_], masked_value: int | float | None) -> np.ndarray:
    """A copy of ``image`` with every pixel outside ``kept`` set to ``masked_value`` (NaN for float
    frames when it is None); integer frames need a marker, since no integer reads as "no data"."""
    image = np.asarray(image)
    kept = np.asarray(kept, dtype=np.bool_)
    if kept.shape != image.shape:
        raise ValueError(f"kept mask shape {kept.shape} differs from the image shape {image.shape}")
    if masked_value is None:
        if image.dtype.kind != "f":
            raise ValueError(f"an {image.dtype} image needs a masked_value for dropped pixels "
                             "(Eiger: 2**bit_depth - 1)")
        masked_value = np.nan
    selected = image.copy()
    selected[~kept] = masked_value
    return selected


def dropped_fraction(kept: NDArray[np.bool_], valid: NDArray[np.bool_] | None = None) -> float:
    """The fraction of ``valid`` pixels (all when None) that the selection drops; 0.0 with no valid pixel.

    Counting only valid pixels keeps gaps and dead pixels, which hold no data either way, out of the
    reduction ratio reported for the selection.
    """
    kept = np.asarray(kept, dtype=np.bool_)
    if valid is None:
        return float(np.count_nonzero(~kept)) / kept.size if kept.size else 0.0
    valid = np.asarray(valid, dtype=np.bool_)
    if valid.shape != kept.shape:
        raise ValueError(f"valid mask shape {valid.shape} differs from the kept mask shape {kept.shape}")
    n_valid = int(np.count_nonzero(valid))
    return float(np.count_nonzero(valid & ~kept)) / n_valid if n_valid else 0.0
