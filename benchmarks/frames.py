"""Realistic pre-compressed EIGER2 4M frames for the benchmarks, from the simulator's frame source."""

from __future__ import annotations

import time

import numpy as np

from detpipe.pipeline.core.frame import Encoding, Frame

DISTINCT_FRAMES = 16


def bslz4_frames(n: int, *, model: str = "4M") -> list[Frame]:
    """``n`` frames cycling over a few distinct simulated SFX frames (bslz4, with the 12-byte header)."""
    from detpipe.simulators import EigerSimulator

    with EigerSimulator(model=model, seed=3, distinct_frames=DISTINCT_FRAMES, paced=False) as sim:
        blobs = [sim.encoded_blob(i) for i in range(DISTINCT_FRAMES)]
        shape, dtype = sim.frames.shape, np.dtype(sim.frames.dtype)
    now = time.time()
    return [Frame(series_id=1, index=i, shape=shape, dtype=dtype, encoding=Encoding.BSLZ4,
                  blob=blobs[i % DISTINCT_FRAMES], received_s=now) for i in range(n)]
