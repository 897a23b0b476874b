"""Where a series is saved: the saving parameters, the file names, and the checks made before writing.

Every check that can refuse a series runs here, from the control thread at Prepare, so an operator
sees "directory outside DataRoots" or "file exists" as a command error instead of a FAULT mid-series.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path

import h5py

from .errors import ConfigError, DiskFull, PathOutsideDataRoots, TargetFileExists, UnsafeTarget

log = logging.getLogger(__name__)

FLUSH_PERIOD_S = 1.0  # open files are flushed this often: what a writer killed with SIGKILL can lose

SERIES_ID_PLACEHOLDER = "$id"


class OverwritePolicy(enum.Enum):
    """LImA ``saving_overwrite_policy``, in LImA's spelling; ABORT (the default) never replaces a file."""

    ABORT = "Abort"
    OVERWRITE = "Overwrite"


@dataclass(frozen=True, slots=True)
class SavingParams:
    """How and where the writer saves a series (LImA ``saving_*`` / DECTRIS filewriter names).

    ``prefix`` follows DECTRIS ``name_pattern``: ``$id`` becomes the series id. ``data_roots`` lists the
    only directories below which files may be written; with none configured nothing may be written.
    ``source_name`` (NXsource/name, the facility) is written as given; empty means not configured.
    Constructing one validates it and raises ``ConfigError`` listing every problem.
    """

    directory: Path
    prefix: str = "series_$id"
    frames_per_file: int = 1000
    overwrite_policy: OverwritePolicy = OverwritePolicy.ABORT
    data_roots: tuple[Path, ...] = ()
    instrument_name: str = "detpipe"
    source_name: str = ""
    free_space_margin_bytes: int = 512 * 2**20  # the writer refuses and stops below this much free space

    def __post_init__(self) -> None:
        if problems := _value_problems(self):
            raise ConfigError(problems)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object]) -> SavingParams:
        """Builds params from a YAML mapping or device properties; strings are accepted for paths and the
        policy (case-insensitive, so LImA's ``"Abort"`` works). Every problem is reported at once."""
        known = {f.name for f in fields(cls)}
        problems = [f"unknown key {key!r} (known: {sorted(known)})" for key in raw if key not in known]
        if "directory" not in raw:
            problems.append("directory is required")
        values: dict[str, object] = {}
        for key, value in raw.items():
            if key in _CONVERTERS:
                try:
                    values[key] = _CONVERTERS[key](value)
                except (TypeError, ValueError) as err:
                    problems.append(f"{key}: {err}")
        if not problems:
            problems = _value_problems(_Candidate(**{**_defaults(), **values}))
        if problems:
            raise ConfigError(problems)
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Candidate:
    """The same fields as ``SavingParams`` without validation, so problems can be collected first."""

    directory: Path
    prefix: str
    frames_per_file: int
    overwrite_policy: OverwritePolicy
    data_roots: tuple[Path, ...]
    instrument_name: str
    source_name: str
    free_space_margin_bytes: int


def _defaults() -> dict[str, object]:
    return {f.name: f.default for f in fields(SavingParams) if f.name != "directory"}


def _to_path(value: object) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise TypeError(f"expected a path string, got {value!r}")
    return Path(value)


def _to_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _to_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _to_policy(value: object) -> OverwritePolicy:
    if isinstance(value, OverwritePolicy):
        return value
    by_folded = {p.value.casefold(): p for p in OverwritePolicy}
    if isinstance(value, str) and value.casefold() in by_folded:
        return by_folded[value.casefold()]
    raise ValueError(f"expected one of {[p.value for p in OverwritePolicy]}, got {value!r}")


def _to_roots(value: object) -> tuple[Path, ...]:
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Sequence):
        raise TypeError(f"expected a list of directories, got {value!r}")
    return tuple(_to_path(v) for v in value)


_CONVERTERS = {
    "directory": _to_path,
    "prefix": _to_str,
    "frames_per_file": _to_int,
    "overwrite_policy": _to_policy,
    "data_roots": _to_roots,
    "instrument_name": _to_str,
    "source_name": _to_str,
    "free_space_margin_bytes": _to_int,
}


MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems: a longer name fails only when the file is created
# The longest file name a prefix becomes: "<prefix>_master.h5" or "<prefix>_data_000001.h5", with $id up to 20 digits.
_FILE_NAME_EXTRA_BYTES = len("_data_000001.h5") + 20


def _value_problems(p: SavingParams | _Candidate) -> list[str]:
    problems = []
    directory = str(p.directory)
    if not p.directory.is_absolute():
        problems.append(f"directory {directory!r} must be an absolute path")
    if not directory.isprintable():
        problems.append(f"directory {directory!r} contains control characters (NUL, newline, tab…)")
    if too_long := [part for part in p.directory.parts if len(part.encode()) > MAX_NAME_BYTES]:
        problems.append(f"directory name {too_long[0][:40]!r}… is longer than {MAX_NAME_BYTES} bytes")
    if not p.prefix or p.prefix in {".", ".."} or "/" in p.prefix or not p.prefix.isprintable():
        problems.append(f"prefix {p.prefix!r} must be a non-empty file name without '/' or control characters")
    elif len(p.prefix.encode()) + _FILE_NAME_EXTRA_BYTES > MAX_NAME_BYTES:
        problems.append(f"prefix {p.prefix[:40]!r}… is too long: file names would exceed {MAX_NAME_BYTES} bytes "
                        f"(at most {MAX_NAME_BYTES - _FILE_NAME_EXTRA_BYTES} bytes)")
    if p.free_space_margin_bytes < 0:
        problems.append(f"free_space_margin_bytes must be >= 0, got {p.free_space_margin_bytes}")
    if p.frames_per_file < 1:
        problems.append(f"frames_per_file must be >= 1, got {p.frames_per_file}")
    problems += [f"data root {str(r)!r} must be an absolute path" for r in p.data_roots if not r.is_absolute()]
    return problems


@dataclass(frozen=True, slots=True)
class SeriesFiles:
    """The file set of one series (DECTRIS file writer naming): ``<stem>_master.h5`` and ``<stem>_data_<k:06d>.h5``,
    k counted from 1."""

    directory: Path
    stem: str

    @property
    def master(self) -> Path:
        return self.directory / f"{self.stem}_master.h5"

    def data_file(self, number: int) -> Path:
        return self.directory / f"{self.stem}_data_{number:06d}.h5"

    def existing(self) -> list[Path]:
        """Master and data files of this name already on disk (any data file number)."""
        pattern = re.compile(re.escape(self.stem) + r"_data_\d{6}\.h5")
        found = [self.master] if self.master.exists() else []
        if self.directory.is_dir():
            found += sorted(p for p in self.directory.iterdir() if pattern.fullmatch(p.name))
        return found


def series_file_names(params: SavingParams, series_id: int) -> SeriesFiles:
    return SeriesFiles(params.directory, params.prefix.replace(SERIES_ID_PLACEHOLDER, str(series_id)))


def check_directory(directory: Path, data_roots: Sequence[Path]) -> Path:
    """The absolute, symlink- and ``..``-resolved ``directory``, if it lies under one of ``data_roots``.

    Resolution happens before the comparison, so ``root/../etc`` or a symlink pointing out of a root is
    refused. The directory need not exist yet. Raises ``PathOutsideDataRoots`` otherwise.
    """
    if not directory.is_absolute():
        raise PathOutsideDataRoots(directory, data_roots)
    resolved = directory.resolve()
    if not any(resolved.is_relative_to(root.resolve()) for root in data_roots if root.is_absolute()):
        raise PathOutsideDataRoots(directory, data_roots)
    return resolved


_COPY_CHUNK_BYTES = 8 * 2**20
# HDF5 places a chunk in the file when it leaves the chunk cache, at the latest when its dataset closes, which
# h5py does when Python frees the dataset object. A sampling profiler (every Dask worker runs one) holds the
# frames it samples, and with them a dataset a line just dropped, so cached chunks would land wherever the
# file ended at that moment: the same writes would give different bytes. Without a cache, a chunk is placed by
# the write that fills it. Writes are whole chunks (frames, written directly) or batches; a writer that appends
# into compressed chunks frame by frame (sparse RED file, REDU flags file) passes its own ``rdcc_nbytes``,
# holds its datasets open and flushes them in a fixed order before closing.
_PLACED_AS_WRITTEN: dict[str, object] = {"rdcc_nbytes": 0}


def create_h5(path: Path, *, overwrite: bool, **options: object) -> h5py.File:
    """A new HDF5 file at ``path``, a name in a directory claimed (and resolved) at Prepare. Checked again
    at the moment of creation, because files are opened by name long after the claim: the directory must
    still resolve to itself (not swapped for a symlink pointing elsewhere) and ``path`` must not be a
    symlink (the overwrite policy would truncate its target). Raises ``UnsafeTarget`` or
    ``TargetFileExists`` (an existing file without the overwrite policy). Chunks are placed as they are
    written (no chunk cache) unless ``options`` set ``rdcc_nbytes``."""
    if Path(os.path.realpath(path.parent)) != path.parent:
        raise UnsafeTarget(path, f"its directory now resolves to {os.path.realpath(path.parent)}")
    if path.is_symlink():
        raise UnsafeTarget(path, "it is a symbolic link")
    try:
        return h5py.File(path, "w" if overwrite else "w-", **{**_PLACED_AS_WRITTEN, **options})
    except FileExistsError as err:
        raise TargetFileExists(path) from err


@contextmanager
def rewrite_h5(path: Path) -> Iterator[h5py.File]:
    """Change an HDF5 file so that ``path`` is valid at every moment: the changes go into a copy beside it,
    which is flushed to disk and renamed over ``path`` (atomic on POSIX) only when they all succeeded.

    A writer killed mid-change leaves the old file whole (and a hidden ``.tmp`` copy that the next
    change replaces); a reader holding the old file open keeps reading it. The copy is created with
    ``O_EXCL | O_NOFOLLOW`` in the directory claimed at Prepare, so a planted symlink is never written
    through, and the rename replaces a symlink planted at ``path`` rather than following it. Costs one copy
    of the file per change: for masters, metadata and links plus triage rows (see docs/file_layout.md).
    """
    if Path(os.path.realpath(path.parent)) != path.parent:
        raise UnsafeTarget(path, f"its directory now resolves to {os.path.realpath(path.parent)}")
    beside = path.with_name(f".{path.name}.tmp")
    beside.unlink(missing_ok=True)  # a copy left by a writer that died mid-change
    fd = os.open(beside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with open(fd, "wb") as copy, open(path, "rb", opener=_open_no_follow) as original:
            shutil.copyfileobj(original, copy, _COPY_CHUNK_BYTES)
        with h5py.File(beside, "r+", **_PLACED_AS_WRITTEN) as handle:
            yield handle
        _fsync_path(beside)
        os.replace(beside, path)
        _fsync_path(path.parent)
    except BaseException:
        beside.unlink(missing_ok=True)
        raise


def _open_no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_free_space(directory: Path, margin_bytes: int, needed_bytes: int = 0) -> None:
    """Raises ``DiskFull`` when writing ``needed_bytes`` would leave less than ``margin_bytes`` free
    (statvfs: a few µs, cheap enough before every frame)."""
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    if free - needed_bytes < margin_bytes:
        raise DiskFull(directory, free, margin_bytes)


def claim_series_files(params: SavingParams, series_id: int) -> SeriesFiles:
    """Checks and prepares the target of one series, before any of its files is written.

    Creates the directory (never above its data root), proves it writable with a probe file (``os.access``
    says yes to root even on a read-only mount), and, under ABORT, refuses when the master or any data
    file of this name exists. Under OVERWRITE it removes the old set, so no stale higher-numbered data
    file of an earlier, longer series survives next to the new master.
    """
    directory = check_directory(params.directory, params.data_roots)
    if not directory.is_dir():
        _make_directory(directory, params.data_roots)
        directory = check_directory(directory, params.data_roots)  # a symlink swapped in meanwhile
    _probe_writable(directory)
    check_free_space(directory, params.free_space_margin_bytes)
    files = series_file_names(replace(params, directory=directory), series_id)
    existing = files.existing()
    if existing and params.overwrite_policy is OverwritePolicy.ABORT:
        raise TargetFileExists(existing[0])
    for path in existing:
        log.info("overwrite policy: removing %s", path)
        path.unlink()
    return files


def _make_directory(directory: Path, data_roots: Sequence[Path]) -> None:
    root = next(r.resolve() for r in data_roots if r.is_absolute() and directory.is_relative_to(r.resolve()))
    if not root.is_dir():
        raise FileNotFoundError(f"DataRoots entry {root} does not exist; create it or fix DataRoots")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except PermissionError as err:
        raise PermissionError(
            f"cannot create saving directory {directory}: {err.strerror}; fix the permissions below {root}"
        ) from err


def _probe_writable(directory: Path) -> None:
    try:
        tempfile.TemporaryFile(dir=directory, prefix=".detpipe-probe-").close()
    except PermissionError as err:
        raise PermissionError(
            f"saving directory {directory} is not writable by uid {os.getuid()}: {err.strerror}; "
            "fix its permissions or choose another saving_directory"
        ) from err
