"""Which frames a RED run keeps: hits, a random control sample of misses, and every frame not triaged.

The miss sample is drawn from a hash of the frame's identity and ``miss_seed`` rather than from a running
random generator, so it does not depend on arrival order or on which frames came before: offline
reduction of the same raw files picks exactly the same misses (``detpipe reduce`` byte identity). Sampled
misses are flagged as such, so analyses can use them as an unbiased control (EXtra-redu's ``missFlag``).
"""

from __future__ import annotations

import enum

from ..core.peak_list import FrameTriage
from .reduction_params import ReductionParams

_MASK64 = (1 << 64) - 1


class KeepReason(enum.IntEnum):
    """Why a frame is in (or out of) the RED data; the integer codes are what files store per frame."""

    DROPPED_MISS = 0  # a miss outside the random sample
    HIT = 1
    SAMPLED_MISS = 2  # a miss kept as the random control sample
    UNTRIAGED = 3  # no triage result (triage fell behind or is off): kept, err towards inclusion
    ALL = 4  # no event selection configured: every frame kept
    DROPPED_UNLIT = 5  # AGIPD memory cell that saw no pulse

    @property
    def kept(self) -> bool:
        return self not in (KeepReason.DROPPED_MISS, KeepReason.DROPPED_UNLIT)


KEEP_REASON_LEGEND = ", ".join(f"{r.value} = {r.name.lower()}" for r in KeepReason)


def _splitmix64(value: int) -> int:
    """One splitmix64 step: a well-mixed 64-bit hash of a 64-bit key (Steele, Lea & Flood 2014)."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def in_miss_sample(frame_key: int, *, seed: int, fraction: float) -> bool:
    """True for the ``fraction`` of frame keys that form the miss control sample of ``seed``."""
    return _splitmix64((seed * 0x100000001B3 ^ frame_key) & _MASK64) < fraction * 2.0**64


def frame_key(*, index: int, train_id: int | None = None, cell_id: int | None = None) -> int:
    """The identity a frame keeps in every file: its series index (Eiger), or train and cell (AGIPD)."""
    if train_id is None:
        return index
    return (train_id << 16) | (cell_id or 0)


def keep_reason(triage: FrameTriage | None, key: int, params: ReductionParams) -> KeepReason:
    """The decision for one frame (or AGIPD cell) under ``params``; pure, so online and offline agree."""
    if params.drop_unlit_cells and triage is not None and triage.lit_pixels < params.lit_cell_min_pixels:
        return KeepReason.DROPPED_UNLIT
    if not params.hits_only:
        return KeepReason.ALL
    if triage is None:
        return KeepReason.UNTRIAGED
    if triage.is_hit:
        return KeepReason.HIT
    if in_miss_sample(key, seed=params.miss_seed, fraction=params.miss_fraction):
        return KeepReason.SAMPLED_MISS
    return KeepReason.DROPPED_MISS
