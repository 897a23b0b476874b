"""The AGIPD side of a RED run: which memory cells of a train are kept, from which modules, at what precision.

Cells are decided one by one (``event_selection.keep_reason``, keyed by train and cell id so offline
reduction picks the same sampled misses), unlit cells first when ``drop_unlit_cells`` is set: a cell that saw
no pulse carries no information whatever the hit rule says. Spatial selection is by module only: modules are
what EXDF stores, one file each, so an unselected module's file is simply not written and every EuXFEL tool
shows it as absent. ROIs, 2×2 binning and sparse frames cut across AGIPD's module files and are Eiger-only
(refused at Prepare by ``check``). Precision rounding applies to corrected trains, whose pixels are photons;
raw ADU mix gain stages, so a rounding policy on a raw train is refused for that train, with its reason.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..core.errors import ConfigError, FrameRejected
from ..core.train import AGIPD_MODULES, MODULE_SHAPE, Product, Train
from .event_selection import KeepReason, frame_key, keep_reason
from .precision_rounding import round_precision
from .reduction_params import ReductionParams
from .reduction_stats import ReductionStats


class AgipdTrainReducer:
    """Decides and reduces the trains of one AGIPD RED run (pure: the same train gives the same cells)."""

    def __init__(self, params: ReductionParams, stats: ReductionStats) -> None:
        self.check(params)
        self.params = params
        self.stats = stats
        self.modules: tuple[int, ...] = tuple(sorted(set(params.modules))) or tuple(range(AGIPD_MODULES))

    @staticmethod
    def check(params: ReductionParams) -> None:
        """Raises ``ConfigError`` at Prepare for reductions that do not apply to AGIPD runs."""
        problems = [f"module {m} does not exist: AGIPD-1M has modules 0..{AGIPD_MODULES - 1}"
                    for m in params.modules if not 0 <= m < AGIPD_MODULES]
        if params.rois:
            problems.append("ROIs apply to Eiger images; an AGIPD RED run selects whole modules (modules)")
        if params.binning != 1:
            problems.append("2x2 binning applies to Eiger images; set binning 1 for an AGIPD run")
        if params.sparse:
            problems.append("sparse frames apply to Eiger images; switch sparse off for an AGIPD run")
        if problems:
            raise ConfigError(problems)

    def decide(self, train: Train, first_frame: int) -> list[KeepReason]:
        """The decision for each cell of ``train``, whose first frame is frame ``first_frame`` of the run."""
        triage = train.triage or (None,) * train.frames
        return [keep_reason(triage[k], frame_key(index=first_frame + k, train_id=train.train_id,
                                                 cell_id=int(train.cell_ids[k])), self.params)
                for k in range(train.frames)]

    def reduce(self, train: Train, reasons: list[KeepReason]) -> Train | None:
        """The kept cells of ``train`` with only the selected modules present, rounded; None if no cell is kept."""
        cells = np.flatnonzero([reason.kept for reason in reasons])
        if cells.size == 0:
            return None
        if self.params.rounds and train.product is not Product.CORRECTED:
            raise FrameRejected("rounding_needs_photons",
                                f"train {train.train_id} is raw ADU: precision rounding needs corrected trains "
                                "(set the AGIPD ConstantsFile, or mantissa_bits 23 and rounding_step 0)")
        present = tuple(bool(train.modules_present[m]) and m in self.modules for m in range(AGIPD_MODULES))
        data = train.data[cells]
        self.stats.bytes_kept_uncompressed += int(data[0, 0].nbytes) * int(cells.size) * len(self.modules)
        pixels = int(cells.size) * int(np.prod(MODULE_SHAPE))
        self.stats.pixels_considered += pixels * AGIPD_MODULES
        self.stats.pixels_dropped += pixels * (AGIPD_MODULES - len(self.modules))
        if self.params.rounds:
            data = self._rounded(data, None if train.mask is None else train.mask[cells], present)
        return replace(
            train, data=data, cell_ids=train.cell_ids[cells], pulse_ids=train.pulse_ids[cells],
            modules_present=present,
            gain=None if train.gain is None else train.gain[cells],
            mask=None if train.mask is None else train.mask[cells],
            triage=None if train.triage is None else tuple(train.triage[k] for k in cells))

    def _rounded(self, photons: np.ndarray, mask: np.ndarray | None, present: tuple[bool, ...]) -> np.ndarray:
        rounded = round_precision(photons, mantissa_bits=self.params.mantissa_bits,
                                  step_exponent=self.params.rounding_exponent)
        counted = np.zeros(photons.shape, dtype=bool)
        counted[:, list(np.flatnonzero(present))] = True
        if mask is not None:
            counted &= mask == 0
        self.stats.rounding.add(photons, rounded, counted)
        return rounded
