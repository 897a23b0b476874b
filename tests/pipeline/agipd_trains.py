"""AGIPD trains in detpipe's canonical layout (pipeline/core/train.py), built here as ground truth for writer tests.

Pixels are reproducible noise around realistic ADU levels, so chunks compress as real data does and any
module, frame or train mix-up shows as a pixel mismatch. A missing module's slice is zero, as the receiver
leaves it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from detpipe.pipeline.core.train import AGIPD_MODULES, MODULE_SHAPE, Product, Train

FIRST_TRAIN_ID = 1_500_000_000
FIRST_TIMESTAMP_S = 1.7e9


def cell_ids(frames: int) -> np.ndarray:
    """Memory cells 1, 2, 3… (cell 0 unused, as with a typical AGIPD bunch pattern), never equal to the pulse ids."""
    return (np.arange(frames) % 351 + 1).astype(np.uint16)


def pulse_ids(frames: int) -> np.ndarray:
    return (np.arange(frames) * 4).astype(np.uint64)


def make_train(index: int, *, product: Product = Product.RAW, frames: int = 8, run: int = 1,
               train_id: int | None = None, missing: Collection[int] = (), seed: int = 0) -> Train:
    """Train ``index`` of a run; ``missing`` lists modules that did not arrive (their pixels are zero)."""
    rng = np.random.default_rng((seed, index))
    present = tuple(m not in missing for m in range(AGIPD_MODULES))
    gain = mask = None
    if product is Product.RAW:
        data = rng.integers(4000, 4200, (frames, AGIPD_MODULES, 2, *MODULE_SHAPE), dtype=np.uint16)
        data[:, :, 1] += 1000  # digital gain ADU sit above the analog signal
    else:
        shape = (frames, AGIPD_MODULES, *MODULE_SHAPE)
        data = rng.integers(-40, 120, shape, dtype=np.int16).astype(np.float32) * np.float32(0.125)
        gain = rng.integers(0, 3, shape, dtype=np.uint8)
        mask = (rng.integers(0, 100, shape, dtype=np.uint8) == 0).astype(np.uint32) << 3  # 1 % bad pixels
    for array in (data, gain, mask):
        if array is not None:
            array[:, [m for m in missing]] = 0
    return Train(series_id=run, index=index, train_id=FIRST_TRAIN_ID + index if train_id is None else train_id,
                 product=product, data=data, cell_ids=cell_ids(frames), pulse_ids=pulse_ids(frames),
                 modules_present=present, timestamp_s=FIRST_TIMESTAMP_S + 0.1 * index, received_s=0.0,
                 gain=gain, mask=mask)


def module_frames(trains: Sequence[Train], module: int, key: str = "data") -> np.ndarray:
    """What module ``module``'s files must hold for ``key``: its frames of the trains where it is present."""
    return np.concatenate([getattr(t, key)[:, module] for t in trains if t.modules_present[module]])


def run_stack(trains: Sequence[Train], key: str = "data") -> np.ndarray:
    """All frames of the run, (frames, 16, …), missing modules zero: what the NeXus master's VDS must read."""
    return np.concatenate([getattr(t, key) for t in trains])
