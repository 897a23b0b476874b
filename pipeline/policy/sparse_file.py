"""pyFAI's sparse-frame NeXus file (pyFAI sparsify-Bragg), written frame by frame, and read back one frame at a time.

The layout is what ``sparsify-Bragg`` writes and fabio's ``densify-Bragg`` reads: ``/entry/sparse_frames``
holds the CSR arrays (``frame_ptr``, ``index``, ``intensity``), the per-frame radial background
(``background_avg``/``background_std`` (nframes, nbins), ``errors`` a hard link to the std, as pyFAI does),
the bin centres ``radius``, the per-pixel radius ``mask`` (NaN = masked), ``dummy`` and a ``script``;
``/entry/peaks`` holds CXI-named peak columns (the CXI peak-list layout) padded to ``max_peaks``. pyFAI writes all
frames at once; here every dataset grows along axis 0 (``maxshape`` None) so a series streams in.

Bulk datasets are Bitshuffle-LZ4 (filter 32008, hdf5plugin). Chunks hold ~256 KiB (64 Ki kept pixels,
16–28 SFX frames of an Eiger 4M; or ~256 KiB of background/peak rows), and the chunk cache (4 MiB per
dataset) keeps the partly filled chunk, so appending a frame (≈ 1.5 ms) recompresses nothing until the
chunk is evicted. ``frame_ptr`` grows last in ``append``, so a frame counts only once all its arrays are
written. The float32 ``mask`` dominates the file: ≈ 10 MB for an Eiger 4M, against ≈ 9 kB of compressed
index + intensity per SFX frame. fabio 2026.6's ``SparseImage`` reads these files: integer frames come out
bit-identical to ``densify_from_file``, float32 ones within 2e-6 (its Cython densify works in float32).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import h5py
import hdf5plugin
import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..core.errors import ConfigError, TargetFileExists
from ..core.file_clock import file_time_local
from ..core.peak_list import PeakList
from ..core.saving_target import create_h5
from ..core.software_version import detpipe_version
from .sparse_frames import RadialBins, SparseFrame, densify_frame

SPARSE_PATH = "/entry/sparse_frames"
PEAKS_PATH = "/entry/peaks"
# CXI dataset name -> PeakList attribute (pyFAI's layout uses the CXI names; X = fast scan, Y = slow scan).
PEAK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("peakXPosRaw", "fs"), ("peakYPosRaw", "ss"), ("peakTotalIntensity", "intensity"), ("peakSNR", "snr"),
)
PIXEL_CHUNK = 1 << 16  # kept pixels per chunk of index/intensity
ROW_CHUNK_BYTES = 1 << 18  # target bytes per chunk of the (nframes, n) row datasets
FRAME_CHUNK = 4096  # entries per chunk of frame_ptr and nPeaks
_CHUNK_CACHE_BYTES = 4 << 20
_BSLZ4 = dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
_MAX_KEPT = 2**32 - 1  # frame_ptr is uint32, as in pyFAI


class SparseFramesFile:
    """One sparse-frame file being written; ``h5`` is open for callers that add their own groups
    (``/entry/process_01`` provenance, an ``image_number`` dataset).

    ``bins`` gives the bin centres and the per-pixel radius (``radius_unit`` names its unit; the bins'
    radius is stored as is). ``dtype`` is the frames' pixel type, ``dummy`` what densify writes into masked
    pixels (0 or the Eiger marker for integers, NaN for floats). The file is valid after ``close`` with any
    number of frames, 0 included; an existing file is refused unless ``overwrite``.
    """

    def __init__(
        self, path: Path, *, bins: RadialBins, shape: tuple[int, int], dtype: DTypeLike,
        radius_unit: str = "pixel", dummy: float, max_peaks: int, overwrite: bool = False,
    ) -> None:
        path, dtype = Path(path), np.dtype(dtype)
        problems = []
        if tuple(shape) != bins.shape:
            problems.append(f"shape {tuple(shape)} differs from the radial bins' {bins.shape}")
        if dtype.kind not in "ui" and dtype not in (np.float32, np.float64):
            problems.append(f"dtype {dtype} is neither an integer type nor float32/float64")
        elif dtype.kind in "ui" and not _fits(dummy, np.iinfo(dtype)):
            problems.append(f"dummy {dummy!r} is not a value of the integer dtype {dtype}")
        if max_peaks < 1:
            problems.append(f"max_peaks must be >= 1, got {max_peaks}")
        if problems:
            raise ConfigError(problems)
        if path.exists() and not overwrite:
            raise TargetFileExists(path)
        # "w-" also refuses a file created between the check and here
        self.h5 = create_h5(path, overwrite=overwrite, rdcc_nbytes=_CHUNK_CACHE_BYTES)
        self.path, self.dtype, self.max_peaks, self.n_bins = path, dtype, int(max_peaks), bins.n_bins
        self._pixels = bins.shape[0] * bins.shape[1]
        self._frames = 0
        self._kept = 0
        self._grown: dict[str, h5py.Dataset] = {}  # the datasets append grows, by name (a path lookup is 80 µs)
        try:
            self._create(bins, radius_unit, dummy)
        except BaseException:
            self.close()
            raise

    @property
    def frames(self) -> int:
        """Frames appended so far; ``frame_ptr`` has ``frames + 1`` entries."""
        return self._frames

    def append(self, sparse: SparseFrame, peaks: PeakList | None = None) -> int:
        """Adds one frame (and its peaks, the first ``max_peaks`` stored; None = no peak row content) and
        returns the bytes of index + intensity it added, before compression."""
        n, start = int(sparse.index.size), self._kept
        if sparse.background_avg.shape != (self.n_bins,) or sparse.background_std.shape != (self.n_bins,):
            raise ValueError(f"background arrays must have {self.n_bins} bins, got {sparse.background_avg.shape}")
        if sparse.intensity.shape != (n,) or sparse.intensity.dtype != self.dtype:
            raise ValueError(f"intensity must be {self.dtype} ({n},), got {sparse.intensity.dtype} "
                             f"{sparse.intensity.shape}; sparsify frames of the file's dtype")
        if n and int(sparse.index[-1]) >= self._pixels:
            raise ValueError(f"pixel index {int(sparse.index[-1])} lies outside the {self._pixels}-pixel frame")
        if start + n > _MAX_KEPT:
            raise OverflowError(f"{start + n} kept pixels exceed frame_ptr's uint32 range; start a new file")
        k, grown = self._frames, self._grown
        for name, values in (("index", sparse.index), ("intensity", sparse.intensity)):
            grown[name].resize((start + n,))
            grown[name][start:] = values
        for name, values in (("background_avg", sparse.background_avg), ("background_std", sparse.background_std)):
            grown[name].resize((k + 1, self.n_bins))
            grown[name][k] = values
        stored = 0 if peaks is None else min(len(peaks), self.max_peaks)
        grown["nPeaks"].resize((k + 1,))
        grown["nPeaks"][k] = stored
        for name, attribute in PEAK_COLUMNS:
            grown[name].resize((k + 1, self.max_peaks))  # new rows read as the fill value 0: the padding
            if stored:
                grown[name][k, :stored] = np.asarray(getattr(peaks, attribute)[:stored], dtype=np.float32)
        grown["frame_ptr"].resize((k + 2,))
        grown["frame_ptr"][k + 1] = start + n
        self._frames, self._kept = k + 1, start + n
        return sparse.nbytes

    def close(self) -> None:
        """Flushes and closes the file; calling it again does nothing."""
        if self.h5.id.valid:
            for dataset in self._grown.values():  # cached chunks placed in this order, not in h5py's closing one
                dataset.flush()
            self.h5.close()

    def __enter__(self) -> SparseFramesFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _create(self, bins: RadialBins, radius_unit: str, dummy: float) -> None:
        self.h5.attrs.update({
            "NX_class": "NXroot", "default": "entry", "file_name": str(self.path), "creator": "detpipe",
            "creator_version": detpipe_version(),
            "file_time": file_time_local().isoformat(timespec="seconds"),
        })
        entry = _group(self.h5, "entry", "NXentry")
        entry.attrs.update({"default": "sparse_frames", "pyFAI_sparse_frames": SPARSE_PATH})
        group = _group(entry, "sparse_frames", "NXdata")
        group.attrs["signal"] = "background_avg"
        group.attrs["axes"] = np.array([".", "radius"], dtype=h5py.string_dtype())
        # frame_ptr[0] = 0 is the fill value: nothing written, so no chunk waits in the cache for the dataset to close
        group.create_dataset("frame_ptr", shape=(1,), maxshape=(None,), dtype=np.uint32, chunks=(FRAME_CHUNK,))
        group.create_dataset("index", shape=(0,), maxshape=(None,), dtype=np.uint32, chunks=(PIXEL_CHUNK,), **_BSLZ4)
        group.create_dataset("intensity", shape=(0,), maxshape=(None,), dtype=self.dtype, chunks=(PIXEL_CHUNK,),
                             **_BSLZ4)
        long_name = f"Radius from the beam centre ({radius_unit})"
        radius = group.create_dataset("radius", data=np.asarray(bins.radius, np.float32))
        radius.attrs.update({"unit": radius_unit, "long_name": long_name, "interpretation": "spectrum"})
        for name, text in (("background_avg", "Average value of background"),
                           ("background_std", "Standard deviation of background")):
            rows = _row_dataset(group, name, self.n_bins)
            rows.attrs.update({"interpretation": "spectrum", "long_name": text})
        group["background_avg"].attrs["signal"] = 1
        group["errors"] = group["background_std"]
        height, width = bins.shape
        mask_rows = min(height, max(1, (1 << 20) // (4 * width)))  # 1 MiB chunks: 126 rows of an Eiger 4M
        mask = group.create_dataset("mask", data=bins.pixel_radius, chunks=(mask_rows, width), **_BSLZ4)
        mask.flush()  # its last chunks placed now, not when Python frees ``mask`` (a sampling profiler can hold it)
        mask.attrs.update({"unit": radius_unit, "long_name": long_name, "interpretation": "image"})
        group.create_dataset("dummy", data=np.asarray(dummy, dtype=self.dtype))
        group["script"] = _densify_script(integer=self.dtype.kind in "ui")
        peaks = _group(entry, "peaks", "NXdata")
        peaks.attrs["signal"] = "nPeaks"
        peaks.create_dataset("nPeaks", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(FRAME_CHUNK,))
        for name, _ in PEAK_COLUMNS:
            _row_dataset(peaks, name, self.max_peaks)
        self._grown = {name: node for g in (group, peaks) for name, node in g.items()
                       if isinstance(node, h5py.Dataset) and node.maxshape[:1] == (None,)}


def read_sparse_frame(h5: h5py.File, k: int) -> SparseFrame:
    """Frame ``k`` of an open sparse-frame file (this writer's or pyFAI's): the group is the one
    ``entry@pyFAI_sparse_frames`` names. ``k`` outside the file raises ``IndexError``."""
    group = h5[h5["entry"].attrs.get("pyFAI_sparse_frames", SPARSE_PATH)]
    frame_ptr = group["frame_ptr"]
    if not 0 <= k < frame_ptr.shape[0] - 1:
        raise IndexError(f"frame {k} is not in this file: it holds frames 0 … {frame_ptr.shape[0] - 2}")
    start, stop = (int(v) for v in frame_ptr[k : k + 2])
    return SparseFrame(
        index=group["index"][start:stop], intensity=group["intensity"][start:stop],
        background_avg=group["background_avg"][k], background_std=group["background_std"][k],
    )


def densify_from_file(path: Path, k: int) -> NDArray[np.generic]:
    """Frame ``k`` of the file at ``path`` rebuilt by the densify rule (``sparse_frames.densify_frame``)."""
    with h5py.File(path, "r") as h5:
        group = h5[h5["entry"].attrs.get("pyFAI_sparse_frames", SPARSE_PATH)]
        sparse = read_sparse_frame(h5, k)
        return densify_frame(sparse, group["mask"][()], group["radius"][()], group["intensity"].dtype,
                             dummy=group["dummy"][()])


def _fits(value: float, limits: np.iinfo) -> bool:
    return bool(np.isfinite(value)) and float(value).is_integer() and limits.min <= value <= limits.max


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.create_group(name)
    group.attrs["NX_class"] = nx_class
    return group


def _row_dataset(group: h5py.Group, name: str, width: int) -> h5py.Dataset:
    """An empty float32 (0, width) dataset that grows by one row per frame, zero-filled, Bitshuffle-LZ4."""
    rows = max(1, ROW_CHUNK_BYTES // (4 * width))
    return group.create_dataset(name, shape=(0, width), maxshape=(None, width), dtype=np.float32,
                                chunks=(rows, width), fillvalue=np.float32(0), **_BSLZ4)


def _densify_script(*, integer: bool) -> str:
    """The recipe stored as ``script`` (pyFAI's sparse layout): rebuild frame k from this group ``g`` with numpy."""
    lines = [
        "# python: rebuild frame k from this NXdata group g (h5py, with hdf5plugin imported for Bitshuffle-LZ4)",
        "import numpy as np",
        "start, stop = g['frame_ptr'][k:k + 2]",
        "radius_map = g['mask'][()]  # radius of every pixel; non-finite = masked",
        "dense = np.interp(radius_map, g['radius'][()], g['background_avg'][k])",
        "dense.reshape(-1)[g['index'][start:stop]] = g['intensity'][start:stop]",
    ]
    if integer:
        lines.append("dense = np.trunc(dense + np.copysign(0.5, dense))  # round half away from zero")
    lines += ["dense[~np.isfinite(radius_map)] = g['dummy'][()]", "frame = dense.astype(g['intensity'].dtype)"]
    return "\n".join(lines) + "\n"
