"""The report's figures: matplotlib (Agg, no display needed), each a PNG plus the numbers it plots.

The numbers travel with the picture (``QuickLookFigure.data``, written to the report's JSON) so a script, or a
test, can check a figure against the file without reading pixels off a PNG.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from numpy.typing import NDArray

from .run_digest import RunDigest

HIT_RATE_POINTS = 100  # a series is cut into at most this many windows of consecutive rows
_DPI = 100


@dataclass(frozen=True)
class QuickLookFigure:
    name: str  # file stem of the PNG
    title: str
    caption: str
    png: bytes
    data: dict[str, Any]


def hit_rate_windows(digest: RunDigest) -> dict[str, Any]:
    """Hit rate per window of consecutive rows, over the triaged rows of the window (None where none was)."""
    assert digest.is_hit is not None
    window = max(1, math.ceil(digest.frames / HIT_RATE_POINTS))
    starts = list(range(0, digest.frames, window))
    rates: list[float | None] = []
    for start in starts:
        block = digest.is_hit[start:start + window]
        triaged = block[block >= 0]
        rates.append(float((triaged == 1).mean()) if triaged.size else None)
    return {"window_rows": window, "first_row": starts, "first_frame": [int(digest.frame_ids[s]) for s in starts],
            "hit_rate": rates}


def quick_look_figures(digest: RunDigest) -> list[QuickLookFigure]:
    figures = []
    if digest.triaged:
        figures += [_hit_rate(digest), _peak_histogram(digest)]
    figures.append(_projection(digest))
    if digest.powder is not None and digest.powder.any():
        figures.append(_powder(digest))
    if digest.strongest is not None:
        figures.append(_strongest_hit(digest))
    if digest.reduction is not None:
        figures.append(_reduction(digest.reduction))
    return figures


def _hit_rate(digest: RunDigest) -> QuickLookFigure:
    data = hit_rate_windows(digest)
    fig, ax = _figure(8, 3)
    rates = [np.nan if r is None else 100 * r for r in data["hit_rate"]]
    ax.plot(data["first_frame"], rates, drawstyle="steps-post", color="tab:blue")
    ax.set(xlabel="frame", ylabel="hit rate (%)", ylim=(0, max(5.0, np.nanmax(rates) * 1.15)))
    ax.grid(alpha=0.3)
    caption = (f"Fraction of triaged frames that are hits, per {data['window_rows']} consecutive frames "
               f"({int((digest.is_hit == 1).sum())} hits in {int((digest.is_hit >= 0).sum())} triaged frames).")
    return QuickLookFigure("hit_rate", "Hit rate along the series", caption, _png(fig), data)


def _peak_histogram(digest: RunDigest) -> QuickLookFigure:
    assert digest.n_peaks is not None
    peaks = digest.n_peaks[digest.n_peaks >= 0]
    edges = np.histogram_bin_edges(peaks, bins=min(50, max(1, int(peaks.max()) + 1)))
    counts, edges = np.histogram(peaks, bins=edges)
    fig, ax = _figure(8, 3)
    ax.stairs(counts, edges, fill=True, color="tab:orange")
    ax.set(xlabel="peaks found in a frame", ylabel="frames", yscale="log" if counts.max() > 50 else "linear")
    ax.grid(alpha=0.3)
    caption = f"Peaks per frame over the {peaks.size} triaged frames (median {np.median(peaks):g})."
    return QuickLookFigure("n_peaks", "Peaks per frame", caption, _png(fig),
                           {"edges": edges.tolist(), "counts": counts.astype(int).tolist()})


def _projection(digest: RunDigest) -> QuickLookFigure:
    fig, ax = _picture(digest.max_projection, digest.layout.mask)
    ax.set_title("maximum over frames")
    rows = digest.projected_rows.size
    spread = "" if rows == digest.frames else f", spread evenly over the {digest.frames}"
    caption = (f"Per-pixel maximum of {rows} frames{spread}; masked pixels and gaps "
               f"({int(digest.layout.mask.sum())} pixels) in grey.")
    return QuickLookFigure("max_projection", "Maximum projection", caption, _png(fig),
                           {"frames": rows, "max": float(digest.max_projection.max()),
                            "masked_pixels": int(digest.layout.mask.sum())})


def _powder(digest: RunDigest) -> QuickLookFigure:
    assert digest.powder is not None
    fig, ax = _picture(digest.powder, digest.layout.mask)
    ax.set_title("peaks of all hits")
    caption = (f"Virtual powder pattern: the positions of all {int(digest.powder.sum())} stored peaks of the "
               "hits, summed; rings show the lattice spacings the crystals share.")
    return QuickLookFigure("virtual_powder", "Virtual powder pattern", caption, _png(fig),
                           {"peaks": int(digest.powder.sum())})


def _strongest_hit(digest: RunDigest) -> QuickLookFigure:
    hit = digest.strongest
    assert hit is not None
    fig, ax = _picture(hit.picture, digest.layout.mask)
    ax.scatter(hit.peaks_x, hit.peaks_y, s=60, facecolors="none", edgecolors="red", linewidths=0.8)
    ax.set_title(f"frame {hit.frame_id}: {hit.n_peaks} peaks")
    caption = f"The hit with the most peaks, frame {hit.frame_id}, with its {hit.peaks_x.size} stored peaks circled."
    return QuickLookFigure("strongest_hit", "Strongest hit", caption, _png(fig),
                           {"row": hit.row, "frame": hit.frame_id, "n_peaks": hit.n_peaks,
                            "x": hit.peaks_x.tolist(), "y": hit.peaks_y.tolist()})


def _reduction(metrics: dict[str, float]) -> QuickLookFigure:
    names = [n for n in ("frames_in", "frames_kept", "hits_kept", "misses_kept", "untriaged_kept") if n in metrics]
    fig, ax = _figure(8, 3)
    ax.barh(names[::-1], [metrics[n] for n in names[::-1]], color="tab:green")
    ax.set(xlabel="frames")
    ratio = metrics.get("reduction_ratio", float("nan"))
    caption = (f"What the data policy kept: {metrics.get('frames_kept', 0):g} of {metrics.get('frames_in', 0):g} "
               f"frames; bytes received / bytes kept = {ratio:.2f}; rounding error "
               f"{metrics.get('rms_error_photons', 0.0):.3g} photons rms.")
    return QuickLookFigure("reduction", "Data reduction", caption, _png(fig), dict(metrics))


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    return fig, fig.add_subplot()


def _picture(values: NDArray, mask: NDArray[np.bool_]) -> tuple[Figure, Any]:
    """A detector picture on a log scale from its 1st to its 99.9th percentile (a few hot pixels must not
    set it; raw ADU sit on an offset of thousands), masked pixels grey."""
    height, width = values.shape
    fig, ax = _figure(7, 7 * height / width + 0.6)
    valid = values[~mask & (values > 0)]
    low, top = (float(v) for v in np.percentile(valid, [1, 99.9])) if valid.size else (0.5, 1.0)
    low = max(low, 0.5)
    shown = np.ma.masked_array(np.clip(values, low, None), mask=mask)
    cmap = colormaps["viridis"].with_extremes(bad="0.6")
    image = ax.imshow(shown, norm=LogNorm(vmin=low, vmax=max(top, low * 1.01)), cmap=cmap, interpolation="nearest")
    ax.set(xlabel="x (pixel)", ylabel="y (pixel)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig, ax


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
