"""``detpipe report`` from runs made by the real writers and policy stage with the simulators' ground truth:
every figure's numbers (report.json) equal what the files hold, for raw and RED NXmx masters and AGIPD runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - reads the bslz4 chunks back
import numpy as np
import pytest

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.policy.reduction_params import Policy, ReductionParams
from detpipe.pipeline.report.display_layout import display_layout
from detpipe.pipeline.report.quick_look import default_report_folder, write_quick_look
from detpipe.pipeline.report.run_files import RunKind
from detpipe.pipeline.writers.exdf_writer import ExdfWriter
from detpipe.simulators import AgipdSimulator
from tests.pipeline.red_runs import AGIPD_RUN, SeriesFrames, agipd_run_items, run_through_stage
from tests.pipeline.report.conftest import FRAMES, master_in


def report_data(run: Path, folder: Path) -> dict:
    report = write_quick_look(run, folder)
    assert report.page.read_text().count("src='data:image/png;base64,") == len(report.figures)
    for png in report.figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads(report.data.read_text())


def windows(values: np.ndarray, window: int) -> list[float]:
    return [float(values[s:s + window].mean()) for s in range(0, values.size, window)]


def test_a_raw_series_report_shows_its_files_hit_rate_peaks_projection_and_strongest_hit(
        series: SeriesFrames, eiger_run: Path, tmp_path: Path) -> None:
    master = master_in(eiger_run / "raw")
    data = report_data(master, tmp_path / "report")
    with h5py.File(master) as handle:
        is_hit = handle["/entry/process_01/results/is_hit"][()]
        n_peaks = handle["/entry/process_01/results/n_peaks"][()]
        cxi_x = handle["/entry_1/result_1/peakXPosRaw"][()]
        mask = handle["/entry/instrument/detector/pixel_mask"][()] != 0
    assert list(is_hit) == [int(series.sfx.truth(i).is_hit) for i in range(FRAMES)]  # the truth the run was made of
    assert data["hit_rate"]["hit_rate"] == windows(is_hit, data["hit_rate"]["window_rows"])
    assert sum(data["n_peaks"]["counts"]) == FRAMES
    strongest = int(np.argmax(np.where(is_hit == 1, n_peaks, -1)))
    assert (data["strongest_hit"]["frame"], data["strongest_hit"]["n_peaks"]) == (strongest, n_peaks[strongest])
    np.testing.assert_allclose(data["strongest_hit"]["x"], cxi_x[strongest, :n_peaks[strongest]])
    stack = np.stack([series.sfx.pixels(i) for i in range(FRAMES)])
    saturated = np.iinfo(stack.dtype).max
    expected_max = np.where(mask | (stack == saturated), 0, stack).max()
    assert data["max_projection"] == {"frames": FRAMES, "max": float(expected_max), "masked_pixels": int(mask.sum())}
    assert data["virtual_powder"]["peaks"] == int(n_peaks[is_hit == 1].sum())
    assert "reduction" not in data


def test_a_red_report_follows_the_kept_frames_and_shows_what_the_policy_kept(eiger_run: Path, tmp_path: Path) -> None:
    master = master_in(eiger_run / "red")
    data = report_data(master, tmp_path / "report")
    with h5py.File(master) as handle:
        kept = handle["/entry/process_02/kept_frames"][()]
        metrics = {k: float(v[()]) for k, v in handle["/entry/process_02/metrics"].items()}
        is_hit = handle["/entry/process_01/results/is_hit"][()]
    assert data["frames"] == kept.size < FRAMES
    assert data["hit_rate"]["first_frame"] == [int(kept[s]) for s in data["hit_rate"]["first_row"]]
    assert data["hit_rate"]["hit_rate"] == windows(is_hit, data["hit_rate"]["window_rows"])
    assert data["reduction"] == {k: (None if math.isnan(v) else v) for k, v in metrics.items()}
    assert data["kind"] == "EIGER NXmx series (RED: reduced data)"


def test_an_agipd_run_report_places_every_module_pixel_where_the_detector_has_it(tmp_path: Path) -> None:
    simulator = AgipdSimulator(product="corrected", cells=6, seed=9, paced=False, hit_fraction=0.5)
    try:
        items = agipd_run_items(simulator, 2)
        truth = np.concatenate([simulator.train(k).data for k in range(2)])  # (frames, module, ss, fs)
    finally:
        simulator.stop()
    run_directory = tmp_path / "run"
    writer = ExdfWriter(SavingParams(directory=run_directory, data_roots=(tmp_path,)))
    run_through_stage(writer, AGIPD_RUN, items, ReductionParams(policy=Policy.RAW))
    (run,) = (run_directory / "raw").glob("r*")
    data = report_data(run, tmp_path / "report")
    with h5py.File(master_in_run(run)) as handle:
        layout = display_layout(handle, RunKind.AGIPD)
        n_peaks = handle["/entry/process_01/results/n_peaks"][()]
        is_hit = handle["/entry/process_01/results/is_hit"][()]
    picture = np.zeros(layout.shape, np.float32)
    picture[layout.rows, layout.columns] = np.nan_to_num(truth).max(axis=0)
    assert layout.mask.sum() + 16 * 512 * 128 == layout.mask.size  # every pixel placed once, none on another
    assert data["max_projection"]["max"] == pytest.approx(float(picture.max()))
    assert data["strongest_hit"]["frame"] == int(np.argmax(np.where(is_hit == 1, n_peaks, -1)))
    assert data["kind"] == "AGIPD-1M run"


def master_in_run(run: Path) -> Path:
    (master,) = run.glob("AGIPD-R*-master.h5")
    return master


def test_a_report_never_overwrites_and_names_what_it_cannot_read(eiger_run: Path, tmp_path: Path) -> None:
    master = master_in(eiger_run / "raw")
    assert default_report_folder(master) == master.parent / f"{master.name.removesuffix('_master.h5')}_report"
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="exists; a report is never overwritten"):
        write_quick_look(master, tmp_path / "taken")
    not_hdf5 = tmp_path / "notes.h5"
    not_hdf5.write_text("not HDF5")
    with pytest.raises(ConfigError, match="notes.h5 is not a readable HDF5 file"):
        write_quick_look(not_hdf5, tmp_path / "r1")
    with pytest.raises(ConfigError, match="without one AGIPD run master"):
        write_quick_look(tmp_path, tmp_path / "r2")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
