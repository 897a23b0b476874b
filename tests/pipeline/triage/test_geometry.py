"""Triage geometries: Eiger module panels and gaps, the AGIPD-1M layout, ring tables, user masks, hit rule."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest

from detpipe.pipeline.agipd.geometry import (
    DEFAULT_QUAD_POSITIONS,
    agipd_panels,
    agipd_radius_map,
)
from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.eiger.panels import eiger_panels
from detpipe.pipeline.triage.detector_geometry import agipd_triage_geometry, eiger_triage_geometry
from detpipe.pipeline.triage.geometry import TriageGeometry, load_user_mask
from detpipe.pipeline.triage.hit_finder import HitFinder
from detpipe.simulators import DetectorModel, SfxFrames

PARAMS = TriageParams()


def test_eiger2_4m_panels_are_its_eight_modules_and_the_gaps_are_masked() -> None:
    sfx = SfxFrames(DetectorModel.EIGER2_4M)
    geometry = eiger_triage_geometry(
        sfx.shape, beam_center_x_px=1034.0, beam_center_y_px=1081.0, pixel_mask=sfx.pixel_mask, params=PARAMS
    )
    assert geometry.shape == (2162, 2068)
    expected = [(r * 550, r * 550 + 512, c * 1040, c * 1040 + 1028) for r in range(4) for c in range(2)]
    assert geometry.panels.tolist() == [list(p) for p in expected]
    assert not geometry.mask[512:550, :].any() and not geometry.mask[:, 1028:1040].any()
    assert (geometry.panel_id[512:550, :] == -1).all()
    dead_row, dead_col = sfx.geometry.dead_pixels()[0]
    assert geometry.mask[dead_row, dead_col] == 0
    assert geometry.mask[dead_row, dead_col + 1] == 1
    assert int(geometry.mask.sum()) == 8 * 512 * 1028 - len(sfx.geometry.dead_pixels())
    assert geometry.radius[1081, 1034] == 0.0  # the beam falls in the central gap, as on a real 4M


def test_eiger1_4m_panels_use_514_by_1030_modules_with_37_and_10_pixel_gaps() -> None:
    panels = eiger_panels((2167, 2070))
    assert panels.shape == (8, 4)
    assert panels[:3].tolist() == [[0, 514, 0, 1030], [0, 514, 1040, 2070], [551, 1065, 0, 1030]]
    assert panels[-1].tolist() == [1653, 2167, 1040, 2070]


def test_a_shape_that_is_no_module_tiling_is_one_panel_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="detpipe.pipeline.eiger.panels"):
        geometry = eiger_triage_geometry((300, 400), beam_center_x_px=None, beam_center_y_px=None, params=PARAMS)
    assert geometry.panels.tolist() == [[0, 300, 0, 400]]
    assert "one panel" in caplog.text
    assert geometry.radius[150, 200] == 0.0, "no beam centre given: the image centre"


def test_the_eiger_mask_combines_gaps_pixel_mask_bits_and_the_user_mask() -> None:
    pixel_mask = np.zeros((300, 400), np.uint32)
    pixel_mask[10, 10] = 1 << 4  # any bit, not only gap/dead, marks a bad pixel
    user_mask = np.ones((300, 400), np.uint8)
    user_mask[20, 30] = 0
    geometry = eiger_triage_geometry(
        (300, 400), beam_center_x_px=0.0, beam_center_y_px=0.0, pixel_mask=pixel_mask, user_mask=user_mask,
        params=PARAMS,
    )
    assert geometry.mask[10, 10] == 0 and geometry.mask[20, 30] == 0 and geometry.mask[100, 100] == 1
    with pytest.raises(ConfigError, match="user_mask shape"):
        eiger_triage_geometry(
            (300, 400), beam_center_x_px=0.0, beam_center_y_px=0.0, user_mask=np.ones((3, 4)), params=PARAMS
        )


def test_agipd_has_128_panels_of_64_by_128_on_the_stacked_image() -> None:
    panels = agipd_panels()
    assert panels.shape == (128, 4)
    assert (panels[:, 1] - panels[:, 0] == 64).all() and (panels[:, 3] - panels[:, 2] == 128).all()
    assert panels[:, 0].tolist() == list(range(0, 8192, 64))
    geometry = agipd_triage_geometry(params=PARAMS)
    assert geometry.shape == (8192, 128)
    assert (geometry.panel_id.reshape(128, 64, 128) == np.arange(128)[:, None, None]).all()
    assert geometry.mask.all()


def test_the_agipd_radius_map_follows_the_quadrant_layout() -> None:
    radius = agipd_radius_map()
    assert 10.0 < radius.min() < 60.0 and 700.0 < radius.max() < 900.0
    quad_x, quad_y = DEFAULT_QUAD_POSITIONS[0]
    # The first pixel of module 0 sits half a pixel inside its quadrant corner (ss along +x, fs along −y).
    assert radius[0, 0] == pytest.approx(np.hypot(quad_x + 0.5, quad_y - 0.5), abs=1e-3)
    # Its last ASIC starts 7 × (64 + 2) px further along x; quadrants 3-4 run the other way.
    assert radius[7 * 64, 0] == pytest.approx(np.hypot(quad_x + 7 * 66 + 0.5, quad_y - 0.5), abs=1e-3)
    quad_x, quad_y = DEFAULT_QUAD_POSITIONS[2]
    assert radius[8 * 512, 127] == pytest.approx(np.hypot(quad_x - 0.5, quad_y + 127.5), abs=1e-3)
    shifted = agipd_radius_map(beam_offset_px=(10.0, -5.0))
    quad_x, quad_y = DEFAULT_QUAD_POSITIONS[0]
    assert shifted[0, 0] == pytest.approx(np.hypot(quad_x + 0.5 - 10.0, quad_y - 0.5 + 5.0), abs=1e-3)


def test_the_agipd_static_mask_accepts_module_or_stacked_shapes() -> None:
    static = np.ones((16, 512, 128), np.uint8)
    static[3, 100, 7] = 0
    geometry = agipd_triage_geometry(static_mask=static, params=PARAMS)
    assert geometry.mask[3 * 512 + 100, 7] == 0 and geometry.mask.sum() == 8192 * 128 - 1
    with pytest.raises(ConfigError, match="static_mask shape"):
        agipd_triage_geometry(static_mask=np.ones((512, 128)), params=PARAMS)


def test_the_radius_cut_keeps_min_res_up_to_max_res_inclusive_and_max_res_zero_disables_it() -> None:
    """OM's bounds, whose names detpipe uses: a pixel exactly on either radius is kept (docs/triage.md)."""
    radius = np.arange(100, dtype=np.float32).reshape(1, 100).repeat(3, axis=0)
    cut = TriageGeometry.build(radius, np.ones((3, 100)), [(0, 3, 0, 100)], min_res=10, max_res=20, pixels_per_ring=5)
    assert np.flatnonzero(cut.mask[0]).tolist() == list(range(10, 21))
    open_ended = TriageGeometry.build(radius, np.ones((3, 100)), [(0, 3, 0, 100)], min_res=10, max_res=0,
                                      pixels_per_ring=5)
    assert np.flatnonzero(open_ended.mask[0]).tolist() == list(range(10, 100))


def test_the_sampled_ring_table_is_seeded_and_holds_at_most_pixels_per_ring_masked_in_pixels() -> None:
    rows, cols = np.mgrid[0:200, 0:200]
    radius = np.hypot(rows - 100.0, cols - 100.0)
    mask = np.ones((200, 200), np.uint8)
    mask[:, :20] = 0
    build = dict(min_res=0.0, max_res=0.0, pixels_per_ring=30)
    one = TriageGeometry.build(radius, mask, [(0, 200, 0, 200)], seed=1, **build)
    again = TriageGeometry.build(radius, mask, [(0, 200, 0, 200)], seed=1, **build)
    other = TriageGeometry.build(radius, mask, [(0, 200, 0, 200)], seed=2, **build)
    sampled, full = one.sampled_rings, one.full_rings
    assert np.diff(sampled.start).max() == 30
    assert (np.diff(sampled.start) == np.minimum(np.diff(full.start), 30)).all()
    assert one.mask.reshape(-1)[sampled.pixels].all() and one.mask.reshape(-1)[full.pixels].all()
    assert full.n_pixels == int(one.mask.sum())
    rings = one.ring_index.reshape(-1)
    for table in (sampled, full):
        ring_of_entry = np.repeat(np.arange(one.n_rings), np.diff(table.start))
        assert (rings[table.pixels] == ring_of_entry).all()
        assert (table.pixels[table.ring_position] == table.raster_pixels).all()
        assert (np.diff(table.raster_pixels) > 0).all()
    np.testing.assert_array_equal(sampled.pixels, again.sampled_rings.pixels)
    assert not np.array_equal(sampled.pixels, other.sampled_rings.pixels)


def test_overlapping_or_outside_panels_are_config_errors() -> None:
    radius = np.zeros((10, 10))
    with pytest.raises(ConfigError) as err:
        TriageGeometry.build(radius, np.ones((10, 10)), [(0, 6, 0, 10), (5, 10, 0, 10), (0, 11, 0, 10)],
                             min_res=0, max_res=0, pixels_per_ring=5)
    assert "overlaps panel 0" in str(err.value) and "outside" in str(err.value)


def test_a_user_mask_loads_from_npy_and_hdf5_with_nonzero_meaning_good(tmp_path) -> None:
    values = np.array([[0, 1], [5, 0]], dtype=np.int32)
    np.save(tmp_path / "mask.npy", values)
    with h5py.File(tmp_path / "mask.h5", "w") as f:
        f.create_dataset("data/bad_pixel_map", data=values)
    expected = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    for path in (tmp_path / "mask.npy", f"{tmp_path / 'mask.h5'}:/data/bad_pixel_map"):
        loaded = load_user_mask(path)
        assert loaded.dtype == np.uint8
        np.testing.assert_array_equal(loaded, expected)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.npy", "does not exist"),
        ("missing.h5:/mask", "does not exist"),
        ("mask.h5", "names no dataset"),
        ("mask.h5:/nothing/here", "has no dataset /nothing/here"),
        ("mask.tiff", "neither a .npy file nor"),
    ],
)
def test_a_bad_user_mask_path_is_a_config_error_that_says_why(tmp_path, name: str, message: str) -> None:
    with h5py.File(tmp_path / "mask.h5", "w") as f:
        f.create_dataset("mask", data=np.ones((2, 2)))
    with pytest.raises(ConfigError, match=message):
        load_user_mask(tmp_path / name if ":" not in name else f"{tmp_path}/{name}")


@pytest.mark.parametrize(
    ("min_peaks", "max_peaks", "is_hit"),
    [(4, 2048, True), (5, 2048, False), (0, 4, True), (0, 3, False), (4, 4, True)],
)
def test_the_hit_rule_is_inclusive_at_both_bounds(min_peaks: int, max_peaks: int, is_hit: bool) -> None:
    size = 256
    rows, cols = np.mgrid[0:size, 0:size]
    radius = np.hypot(rows - 128.0, cols - 128.0)
    geometry = TriageGeometry.build(radius, np.ones((size, size)), [(0, size, 0, size)], min_res=0, max_res=0,
                                    pixels_per_ring=100)
    image = np.random.default_rng(3).poisson(0.5, (size, size)).astype(np.float32)
    for fs, ss in ((60.3, 60.2), (190.4, 70.1), (80.2, 200.6), (200.5, 190.3)):
        image += (3000 / (2 * np.pi)) * np.exp(-((cols - fs) ** 2 + (rows - ss) ** 2) / 2)
    params = dataclasses.replace(PARAMS, min_peaks=min_peaks, max_peaks=max_peaks)
    result = HitFinder(geometry, params).triage(image)
    assert result.n_peaks == 4
    assert result.is_hit is is_hit


def test_a_hit_finder_rebuilds_a_geometry_made_for_another_radius_cut() -> None:
    geometry = eiger_triage_geometry((300, 400), beam_center_x_px=None, beam_center_y_px=None, params=PARAMS)
    params = dataclasses.replace(PARAMS, min_res=50.0)
    hit_finder = HitFinder(geometry, params)
    assert hit_finder.geometry is not geometry and hit_finder.geometry.min_res == 50.0
    assert geometry.mask[150, 201] and not hit_finder.geometry.mask[150, 201]  # r = 1 < min_res
    assert HitFinder(geometry, PARAMS).geometry is geometry


@pytest.mark.parametrize("content", [np.array(["a", "b"]), np.arange(5), np.zeros((2, 2, 2, 2))])
def test_a_file_that_holds_no_mask_is_refused_when_read(tmp_path: Path, content: np.ndarray) -> None:
    path = tmp_path / "mask.npy"
    np.save(path, content)
    with pytest.raises(ConfigError, match="array of numbers"):
        load_user_mask(path)
