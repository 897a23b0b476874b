"""`detpipe geom`: the CrystFEL geometry of a run says what its master says, and the community's own readers
(cfel_fmt, the CFEL parser OM uses; extra-geom, EuXFEL's) read it to the same pixel positions as nxmx (DIALS's NXmx reader)
and detpipe's triage."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import nxmx
import pytest
from cfel_fmt.geometry import load_crystfel_geometry
from extra_geom import AGIPD_1MGeometry

from detpipe.pipeline.agipd.geometry import STACKED_SHAPE, agipd_pixel_positions
from detpipe.pipeline.core.crystfel_geometry import read_crystfel_geometry
from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import EndOfSeries
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.crystfel.run_geometry import write_run_geometry
from detpipe.pipeline.exdf.nexus_master import PIXEL_SIZE_M as AGIPD_PIXEL_M
from detpipe.pipeline.policy.reduction_params import Policy, ReductionParams
from detpipe.pipeline.triage.detector_geometry import eiger_triage_geometry, geometry_file_triage_geometry
from detpipe.pipeline.writers.exdf_writer import ExdfWriter
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from detpipe.simulators import AgipdSimulator
from tests.pipeline.red_runs import (
    AGIPD_RUN,
    SERIES_ID,
    agipd_run_items,
    run_through_stage,
    series_frames,
    series_start,
)

PARAMS = TriageParams()


@pytest.fixture(scope="module")
def eiger_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A triaged EIGER 4M series (peak list, pixel mask, beam centre at the image centre) as the writer leaves it."""
    series = series_frames(3, seed=2, hit_fraction=0.5)
    root = tmp_path_factory.mktemp("eiger")
    writer = NxmxWriter(SavingParams(directory=root / "run", data_roots=(root,)))
    writer.start_series(series_start(series))
    for frame in series.frames:
        writer.process(frame)
    writer.finish(EndOfSeries(SERIES_ID))
    return next((root / "run").glob("*_master.h5"))


def agipd_master(root: Path, product: str) -> Path:
    simulator = AgipdSimulator(product=product, cells=2, seed=5, paced=False, hit_fraction=0.5)
    try:
        items = agipd_run_items(simulator, 1)
    finally:
        simulator.stop()
    writer = ExdfWriter(SavingParams(directory=root / "run", data_roots=(root,)))
    run_through_stage(writer, AGIPD_RUN, items, ReductionParams(policy=Policy.RAW))
    return next((root / "run").glob("**/AGIPD-R*-master.h5"))


def nxmx_pixel_corners(master: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lab x, y (pixels) of the corner of pixel (0, 0) and the fast and slow steps, as nxmx (DIALS) reads them."""
    with h5py.File(master, "r") as handle:
        detector = nxmx.NXmx(handle).entries[0].instruments[0].detectors[0]
        module = detector.modules[0]
        origin = nxmx.get_cumulative_transformation(nxmx.get_dependency_chain(module.module_offset))
        origin_mm = (origin.reshape(-1, 4, 4)[0] @ np.array([0.0, 0.0, 0.0, 1.0]))[:3]
        pixel_mm = module.fast_pixel_direction[()].to("mm").magnitude
        return origin_mm[:2] / pixel_mm, module.fast_pixel_direction.vector[:2], module.slow_pixel_direction.vector[:2]


def test_the_eiger_geometry_puts_every_pixel_where_nxmx_reads_the_master_to_put_it(eiger_master: Path) -> None:
    path = write_run_geometry(eiger_master)
    assert path == eiger_master.with_suffix(".geom")
    corner, fast, slow = nxmx_pixel_corners(eiger_master)
    stock = load_crystfel_geometry(str(path))  # OM's reader: every panel, as CrystFEL's rules place it
    panels = stock.detector["panels"]
    assert len(panels) == 8  # one per EIGER2 4M module
    for panel in panels.values():
        fs0, ss0 = panel["orig_min_fs"], panel["orig_min_ss"]
        expected = corner + fs0 * fast + ss0 * slow  # the corner of the panel's first pixel, by nxmx
        assert (panel["cnx"], panel["cny"]) == pytest.approx(tuple(expected), abs=1e-9)
        assert (panel["fsx"], panel["fsy"], panel["ssx"], panel["ssy"]) == (*fast, *slow)
        assert panel["dim_structure"] == ["%", "ss", "fs"] and panel["data"] == "/entry/data/data"
        assert panel["clen"] == pytest.approx(0.1) and panel["res"] == pytest.approx(1 / 75e-6)
    assert stock.beam["photon_energy"] == pytest.approx(12400.0)
    geometry = read_crystfel_geometry(path)
    assert geometry.settings["peak_list"] == "/entry_1/result_1" and geometry.settings["peak_list_type"] == "cxi"
    assert [(m.data, m.file, m.badbits) for m in geometry.masks] == [
        ("/entry/instrument/detector/pixel_mask", None, 0xFFFFFFFF)]


def test_the_eiger_geometry_gives_the_triage_the_masters_beam_half_a_pixel_from_the_corner(eiger_master: Path,
                                                                                         tmp_path: Path) -> None:
    path = write_run_geometry(eiger_master, tmp_path / "eiger.geom")
    with h5py.File(eiger_master, "r") as handle:
        detector = handle["/entry/instrument/detector"]
        shape = handle["/entry/data/data"].shape[1:]
        beam = (float(detector["beam_center_x"][()]), float(detector["beam_center_y"][()]))
        pixel_mask = detector["pixel_mask"][()]
    from_file = geometry_file_triage_geometry(str(path), shape, pixel_mask=pixel_mask, params=PARAMS)
    builtin = eiger_triage_geometry(shape, beam_center_x_px=beam[0] - 0.5, beam_center_y_px=beam[1] - 0.5,
                                    pixel_mask=pixel_mask, params=PARAMS)
    inside = builtin.panel_id >= 0  # the gaps between modules belong to no panel of the file: no radius there
    np.testing.assert_allclose(from_file.radius[inside], builtin.radius[inside], atol=1e-3)
    np.testing.assert_array_equal(from_file.panels, builtin.panels)
    np.testing.assert_array_equal(from_file.static_mask, builtin.static_mask)


def test_an_existing_geometry_file_is_never_overwritten(eiger_master: Path, tmp_path: Path) -> None:
    target = tmp_path / "taken.geom"
    target.write_text("mine\n")
    with pytest.raises(ConfigError, match="taken.geom exists; a geometry file is never overwritten"):
        write_run_geometry(eiger_master, target)
    assert target.read_text() == "mine\n"


def test_the_agipd_geometry_reads_in_extra_geom_to_the_layout_detpipe_triaged_with(tmp_path: Path) -> None:
    master = agipd_master(tmp_path, "corrected")
    path = write_run_geometry(master.parent, clen_m=0.12, photon_energy_ev=9300)  # the run directory works too
    assert path == master.with_suffix(".geom")
    stock = AGIPD_1MGeometry.from_crystfel_geom(str(path))
    positions = stock.get_pixel_positions()  # (16, 512, 128, 3) metres, pixel centres
    x, y = agipd_pixel_positions()
    np.testing.assert_allclose(positions[..., 0] / AGIPD_PIXEL_M, x, atol=1e-6)
    np.testing.assert_allclose(positions[..., 1] / AGIPD_PIXEL_M, y, atol=1e-6)
    geometry = read_crystfel_geometry(path)
    assert {p.data for p in geometry.panels} == {"/entry/data/data_slab"}
    assert geometry.panel("p3a5").min_ss == 3 * 512 + 5 * 64
    assert [m.data for m in geometry.masks] == ["/entry/data/mask_slab"]
    assert (geometry.settings["clen"], geometry.settings["photon_energy"]) == ("0.12", "9300")
    with h5py.File(master, "r") as handle:
        assert handle["/entry/data/data_slab"].shape[1:] == STACKED_SHAPE


def test_a_raw_agipd_run_is_refused_because_crystfel_needs_photons(tmp_path: Path) -> None:
    master = agipd_master(tmp_path, "raw")
    with pytest.raises(ConfigError, match="raw AGIPD run: CrystFEL needs photons"):
        write_run_geometry(master)
    assert not master.with_suffix(".geom").exists()
