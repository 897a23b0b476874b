"""Memory that the machine has already backed, for an arm about to fill the page cache.

A virtual machine whose balloon device reports free pages (virtio-balloon ``VIRTIO_BALLOON_F_REPORTING``, as
on the Firecracker VMs this project is benchmarked on) hands memory left free back to its host, gigabytes over
~16 s, and the next touch of each page waits for the host to back it again: 268 MB trains written into the
page cache ran at 0.4–1.0 GB/s into such memory and at 3.2–4.3 GB/s into memory freed a moment before
(docs/performance.md, "AGIPD"). A server that has been writing takes its page cache from memory it recycles;
an arm started after seconds of idling would pay the host instead, and so would only one arm, the one that
writes. Touching and freeing that much memory right before the timed part puts every arm in the first state;
on a machine without free page reporting it costs the zeroing and changes nothing.
"""

from __future__ import annotations

import numpy as np

_MEMINFO = "/proc/meminfo"


def recycle_memory(nbytes: int) -> int:
    """Touches and frees up to ``nbytes`` (at most half the memory available); returns the bytes touched."""
    touched = min(nbytes, _available_bytes() // 2)
    block = np.ones(touched, np.uint8)  # written, so the host backs every page; freed at once (munmap)
    del block
    return touched


def _available_bytes() -> int:
    """MemAvailable, or 0 where the kernel does not tell (nothing is touched then)."""
    try:
        with open(_MEMINFO, encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
