"""detpipe's own version, as files record it (NXroot creator_version, NXprocess version, EXDF daqLibrary)."""

from __future__ import annotations

import functools
import importlib.metadata


@functools.cache
def detpipe_version() -> str:
    """Read once (parsing package metadata costs ~1 ms, and every sequence file asks); "unknown" when
    detpipe runs from a source tree that was never installed."""
    try:
        return importlib.metadata.version("detpipe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
