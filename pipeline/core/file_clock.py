"""The time a file records as "now" (when it was written, when a reduction ran), with the reproducible-builds
convention: where ``SOURCE_DATE_EPOCH`` (whole seconds since 1970, UTC) is set, that time is used instead,
so a reduction repeated with the same value writes the same bytes (docs/scale_out.md). Times that a
measurement records (a frame's arrival, a series' start from the stream) never come from here.
"""

from __future__ import annotations

import datetime as dt
import os

SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"


def file_time_utc() -> dt.datetime:
    """Now, or ``SOURCE_DATE_EPOCH``, as an aware UTC time; a value that is not whole seconds is refused."""
    epoch = os.environ.get(SOURCE_DATE_EPOCH, "").strip()
    if not epoch:
        return dt.datetime.now(dt.timezone.utc)
    if not epoch.isdigit():
        raise ValueError(f"{SOURCE_DATE_EPOCH} must be whole seconds since 1970, got {epoch!r}")
    return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc)


def file_time_local() -> dt.datetime:
    """``file_time_utc`` in this computer's time zone (NeXus ``file_time``, NXinstrument ``time_zone``)."""
    return file_time_utc().astimezone()


def file_time_s() -> float:
    """``file_time_utc`` as seconds since 1970."""
    return file_time_utc().timestamp()
