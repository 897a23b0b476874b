"""Every detpipe domain exception, in one hierarchy.

Each subclasses the built-in it resembles, keeps the offending value, and says what to do next.
Streaming code raises ``FrameRejected`` and the stage runner counts it; anything else ends the stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception as one line of Status: its type and message, whitespace folded, cut at ``limit``."""
    return f"{type(err).__name__}: {' '.join(str(err).split())[:limit]}"


class FrameRejected(ValueError):
    """A stream message or frame that cannot be used. ``reason`` is a short snake_case counter key."""

    def __init__(self, reason: str, detail: str = "", *, image_of_series: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        # Set when the message was recognisably an image of this series: it counts as one of the series'
        # frames (rejected), so the wait for the series' frames neither hangs nor ends early.
        self.image_of_series = image_of_series


class ConfigError(ValueError):
    """Every problem of one configuration at once, so the user fixes them in one go."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class PathOutsideDataRoots(ValueError):
    def __init__(self, path: Path, roots: Sequence[Path]) -> None:
        super().__init__(
            f"{path} is not below any DataRoots entry {[str(r) for r in roots]}; pick a directory under one"
        )
        self.path = path
        self.roots = list(roots)


class DiskFull(OSError):
    """Less free space than the writer's margin: it stops before the file system does, so that the files
    it closes are complete (HDF5 metadata written after a failed write corrupts them, or worse)."""

    def __init__(self, directory: Path, free_bytes: int, margin_bytes: int) -> None:
        super().__init__(f"disk full: {directory} has {free_bytes / 1e6:.0f} MB free, below the "
                         f"{margin_bytes / 1e6:.0f} MB margin; free space, then Reset")
        self.free_bytes, self.margin_bytes = free_bytes, margin_bytes


class UnsafeTarget(PermissionError):
    """A file would be created outside the directory claimed at Prepare (it was swapped for a symbolic link
    since) or through a symbolic link planted where the file goes."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path} refused: {why}; detpipe writes only inside the directory it claimed")
        self.path = path


class TargetFileExists(FileExistsError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} already exists and saving_overwrite_policy is Abort; change saving_prefix or move the file"
        )
        self.path = path


class DetectorUnreachable(ConnectionError):
    """The detector's REST interface did not answer: connection refused, timed out, name not resolved."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"detector at {url} unreachable: {reason}; check the DetectorUrl property and the DCU")
        self.url = url
        self.reason = reason


class DetectorFailed(RuntimeError):
    """The detector answered, with an HTTP 5xx: the DCU is there but failed the request itself (a module not
    initialised, hardware fault). Not ``DetectorUnreachable``, whose advice (check DetectorUrl) would mislead."""

    def __init__(self, url: str, request: str, http_status: int, message: str) -> None:
        super().__init__(f"detector at {url} answered HTTP {http_status}: {message} (to {request}); "
                         "the DCU failed the request, see its log, then Reset")
        self.url = url
        self.request = request
        self.http_status = http_status
        self.message = message


class DetectorRefused(ValueError):
    """The detector answered but refused a value or command (HTTP 4xx); ``http_status`` is None when detpipe
    itself refuses the answer (an unsupported API version, an arm without sequence id)."""

    def __init__(self, what: str, reason: str, *, http_status: int | None = None) -> None:
        super().__init__(f"detector refused {what}: {reason}")
        self.what = what
        self.reason = reason
        self.http_status = http_status


class AcquisitionAbandoned(RuntimeError):
    """A Prepare still running in a worker thread when its device was re-initialised: it stops before it
    claims files or listens, so a series nobody will run never reaches the writer."""

    def __init__(self, series_id: int | None) -> None:
        super().__init__(f"Prepare abandoned by an Init (the detector armed series {series_id}); nothing claimed")
        self.series_id = series_id


class AcquisitionStateError(RuntimeError):
    """A command that does not fit the current acquisition state (e.g. Start before Prepare)."""

    def __init__(self, command: str, state: str, hint: str) -> None:
        super().__init__(f"{command} is not allowed while {state}; {hint}")
        self.command = command
        self.state = state
