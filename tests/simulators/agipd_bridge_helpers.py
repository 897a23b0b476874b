"""Test-side helpers for the AGIPD simulator: layouts restated from karabo-bridge-py's docs, and a bridge client.

The transposes are written out by hand (online (module, fs, ss, pulse) → file (pulse,
module, ss, fs) is ``np.transpose(a, (3, 0, 2, 1))``), not taken from the simulator, so a test that
compares through them checks the simulator's layout code rather than repeating it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from karabo_bridge import Client

# online → file order, per array kind (the raw gain axis stays after the module in online order).
ONLINE_TO_FILE = {
    "combined_corrected": (3, 0, 2, 1),  # (module, fs, ss, pulse) → (pulse, module, ss, fs)
    "combined_raw": (4, 0, 1, 3, 2),  # (module, 2, fs, ss, pulse) → (pulse, module, 2, ss, fs)
    "module_corrected": (2, 1, 0),  # (fs, ss, pulse) → (pulse, ss, fs)
    "module_raw": (3, 0, 2, 1),  # (2, fs, ss, pulse) → (pulse, 2, ss, fs)
}
COMBINED_RAW = "SPB_DET_AGIPD1M-1/CAL/APPEND_RAW"
COMBINED_CORRECTED = "SPB_DET_AGIPD1M-1/CAL/APPEND_CORRECTED"


def module_source(module: int) -> str:
    return f"SPB_DET_AGIPD1M-1/DET/{module}CH0:xtdf"


def to_file_order(array: np.ndarray, kind: str, layout: str) -> np.ndarray:
    """A received array in file order; ``kind`` is a key of ``ONLINE_TO_FILE``."""
    return array if layout == "file" else np.transpose(array, ONLINE_TO_FILE[kind])


@contextmanager
def bridge_client(endpoint: str, socket_type: str = "REP", timeout_s: float = 20.0) -> Iterator[Client]:
    """karabo_bridge's own client, the independent reader: REQ for a REP server, PULL for PUSH."""
    with Client(endpoint, sock="REQ" if socket_type == "REP" else "PULL", timeout=timeout_s) as client:
        yield client

