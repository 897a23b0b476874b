"""The triage geometry from a CrystFEL geometry file: the community's files (extra-geom) give the built-in radius
maps exactly, and bad regions, no_index, edge pixels and mask files mask exactly the pixels they name."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from extra_geom import AGIPD_1MGeometry

from detpipe.pipeline.agipd.geometry import DEFAULT_QUAD_POSITIONS, STACKED_SHAPE, agipd_panels
from detpipe.pipeline.core.crystfel_geometry import parse_crystfel_geometry
from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.triage.crystfel_layout import crystfel_triage_geometry
from detpipe.pipeline.triage.detector_geometry import (
    agipd_triage_geometry,
    eiger_triage_geometry,
    geometry_file_triage_geometry,
)

PARAMS = TriageParams()
EIGER_4M = (2162, 2068)
BEAM = (1034.0, 1081.0)  # beam_center_x, beam_center_y as an NXmx master gives them


def eiger_geom(extra: str = "") -> str:
    """A one-panel EIGER 4M geometry as `detpipe geom` writes it: fast along −x, slow along −y, the beam at
    (beam_center_x, beam_center_y) from the detector's corner."""
    return f"""
dim0 = %
dim1 = ss
dim2 = fs
p0/min_fs = 0
p0/max_fs = {EIGER_4M[1] - 1}
p0/min_ss = 0
p0/max_ss = {EIGER_4M[0] - 1}
p0/fs = -1.0x
p0/ss = -1.0y
p0/corner_x = {BEAM[0]}
p0/corner_y = {BEAM[1]}
{extra}"""


def build(text: str, shape: tuple[int, int], base_dir: Path = Path("."), good: np.ndarray | None = None):
    good = np.ones(shape, bool) if good is None else good
    return crystfel_triage_geometry(parse_crystfel_geometry(text), shape, good=good, base_dir=base_dir, params=PARAMS)


@pytest.mark.parametrize("dims", [("frame", "ss", "fs"), ("frame", "modno", "ss", "fs")], ids=["slab", "modules"])
def test_extra_geoms_agipd_file_gives_the_builtin_radius_map_and_panels(tmp_path: Path, dims: tuple[str, ...]) -> None:
    path = tmp_path / "agipd.geom"
    AGIPD_1MGeometry.from_quad_positions(DEFAULT_QUAD_POSITIONS, asic_gap=2, panel_gap=29).write_crystfel_geom(
        path, dims=dims, data_path="/entry/data/data_slab", clen=0.12, photon_energy=9300, adu_per_ev=1 / 9300)
    from_file = geometry_file_triage_geometry(str(path), STACKED_SHAPE, params=PARAMS)
    builtin = agipd_triage_geometry(params=PARAMS)
    np.testing.assert_array_equal(from_file.radius, builtin.radius)
    np.testing.assert_array_equal(from_file.panels, agipd_panels())
    np.testing.assert_array_equal(from_file.mask, builtin.mask)


def test_an_eiger_file_gives_the_radius_about_the_beam_half_a_pixel_from_the_corner_and_module_panels() -> None:
    from_file = build(eiger_geom(), EIGER_4M)
    # CrystFEL (and DIALS) measure the beam centre from the corner of the first pixel: pixel index 1033.5.
    builtin = eiger_triage_geometry(EIGER_4M, beam_center_x_px=BEAM[0] - 0.5, beam_center_y_px=BEAM[1] - 0.5,
                                    params=PARAMS)
    np.testing.assert_allclose(from_file.radius, builtin.radius, atol=1e-3)
    assert from_file.panels.tolist() == [[0, EIGER_4M[0], 0, EIGER_4M[1]]]


def test_bad_regions_no_index_panels_and_edge_pixels_mask_exactly_their_pixels() -> None:
    text = """
a/min_fs = 0
a/max_fs = 39
a/min_ss = 0
a/max_ss = 19
a/fs = +1x
a/ss = +1y
a/corner_x = -20
a/corner_y = -10
a/mask_edge_pixels = 1
b/min_fs = 0
b/max_fs = 39
b/min_ss = 20
b/max_ss = 29
b/fs = +1x
b/ss = +1y
b/corner_x = -20
b/corner_y = 30
b/no_index = 1
badbox/min_x = -5
badbox/max_x = 5
badbox/min_y = -2
badbox/max_y = 2
badcols/min_fs = 30
badcols/max_fs = 32
badcols/min_ss = 0
badcols/max_ss = 100
badcols/panel = a
"""
    geometry = build(text, (30, 40))
    expected = np.zeros((30, 40), bool)
    expected[1:19, 1:39] = True  # panel a less its one-pixel edge; panel b (rows 20-29) not indexed
    centre_x = np.arange(40) + 0.5 - 20  # pixel centres of panel a in lab x, y
    centre_y = np.arange(20) + 0.5 - 10
    box = (np.abs(centre_y)[:, None] <= 2) & (np.abs(centre_x)[None, :] <= 5)
    expected[:20][box] = False
    expected[:20, 30:33] = False
    np.testing.assert_array_equal(geometry.static_mask.astype(bool), expected)
    assert geometry.panels.tolist() == [[0, 20, 0, 40], [20, 30, 0, 40]]


def test_a_mask_file_beside_the_geometry_masks_by_crystfels_bit_rule_and_an_in_image_mask_is_skipped(
        tmp_path: Path) -> None:
    values = np.zeros(EIGER_4M, np.uint16)
    values[100, 200] = 0b10  # a bad bit
    values[300, 400] = 0b11  # good and bad bits: still bad
    values[500, 600] = 0b01  # the good bit alone: good
    with h5py.File(tmp_path / "mask.h5", "w") as handle:
        handle["/bad_pixels"] = values
    extra = ("mask0_data = /bad_pixels\nmask0_file = mask.h5\nmask0_goodbits = 0x0\nmask0_badbits = 0x2\n"
             "mask1_data = /entry/instrument/detector/pixel_mask\nmask1_badbits = 0xffffffff\n")
    path = tmp_path / "eiger.geom"
    path.write_text(eiger_geom(extra))
    pixel_mask = np.zeros(EIGER_4M, np.uint32)
    pixel_mask[700, 800] = 1  # the detector's own mask still applies
    geometry = geometry_file_triage_geometry(str(path), EIGER_4M, pixel_mask=pixel_mask, params=PARAMS)
    bad = np.argwhere(geometry.static_mask == 0).tolist()
    assert bad == [[100, 200], [300, 400], [700, 800]]


@pytest.mark.parametrize(("extra", "message"), [
    ("mask0_data = /bad_pixels\nmask0_file = absent.h5\n", "absent.h5:/bad_pixels): the file does not exist"),
    ("mask0_data = /nothing\nmask0_file = mask.h5\n", "mask.h5:/nothing): the file has no such dataset"),
    ("mask0_data = /small\nmask0_file = mask.h5\n", "not 2162 × 2068 integers"),
    ("p1/min_fs = 0\np1/max_fs = 99\np1/min_ss = 2162\np1/max_ss = 2200\np1/fs = x\np1/ss = y\np1/corner_x = 0\n"
     "p1/corner_y = 0\n", "is not this detector's: panel p1 reaches image row 2200"),
], ids=["missing file", "missing dataset", "wrong shape", "panel outside"])
def test_a_geometry_that_does_not_fit_the_detector_is_one_clear_error(tmp_path: Path, extra: str, message: str) -> None:
    with h5py.File(tmp_path / "mask.h5", "w") as handle:
        handle["/small"] = np.zeros((10, 10), np.uint8)
    path = tmp_path / "eiger.geom"
    path.write_text(eiger_geom(extra))
    with pytest.raises(ConfigError, match=re.escape(message)):
        geometry_file_triage_geometry(str(path), EIGER_4M, params=PARAMS)
