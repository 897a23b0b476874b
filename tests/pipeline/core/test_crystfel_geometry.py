"""Reading and writing CrystFEL geometry files (crystfel_geometry(5)): defaults, vectors, bad regions, masks, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detpipe.pipeline.core.crystfel_geometry import (
    BadRegion,
    GeomMask,
    format_crystfel_geometry,
    parse_crystfel_geometry,
    read_crystfel_geometry,
)
from detpipe.pipeline.core.errors import ConfigError

TWO_PANELS = """
; two panels of one 20 x 10 data block, as a beamline writes them
clen = 0.1 m          ; kept as text
photon_energy = 9300
res = 5000
dim0 = %
dim1 = ss
dim2 = fs
data = /entry/data/data
mask = /entry/data/mask
mask_file = mask.h5
mask_good = 0x1
mask_bad = 0x6
rigid_group_q0 = a,b

a/min_fs = 0
a/max_fs = 9
a/min_ss = 0
a/max_ss = 9
a/fs = -0.0010058292x +0.9999995232y
a/ss = -0.9999995232x -0.0010058292y
a/corner_x = 575.475
a/corner_y = -221.866

res = 2500          ; a new default: only for panels first mentioned below
b/min_fs = 0
b/max_fs = 9
b/min_ss = 10
b/max_ss = 19
b/fs = -x
b/ss = +1.0y +0.1z
b/corner_x = -5
b/corner_y = 3
b/no_index = true
b/mask_edge_pixels = 2

badcorner/min_x = -20.0
badcorner/max_x = +20.0
badcorner/min_y = -100
badcorner/max_y = 100
badstrip/min_fs = 2
badstrip/max_fs = 4
badstrip/min_ss = 10
badstrip/max_ss = 19
badstrip/panel = b
"""


def test_panels_take_the_defaults_in_force_where_they_are_first_mentioned() -> None:
    geometry = parse_crystfel_geometry(TWO_PANELS)
    a, b = geometry.panels
    assert (a.res, b.res) == (5000.0, 2500.0)
    assert a.dims == b.dims == ("%", "ss", "fs")
    assert a.data == b.data == "/entry/data/data"
    assert (a.min_ss, a.max_ss, b.min_ss, b.max_ss) == (0, 9, 10, 19)
    assert a.fs == pytest.approx((-0.0010058292, 0.9999995232, 0.0))
    assert b.fs == (-1.0, 0.0, 0.0) and b.ss == (0.0, 1.0, 0.1)
    assert (b.no_index, b.mask_edge_pixels, a.no_index) == (True, 2, False)
    assert geometry.settings["clen"] == "0.1 m" and geometry.settings["photon_energy"] == "9300"


def test_bad_regions_and_the_old_mask_keys_are_read() -> None:
    geometry = parse_crystfel_geometry(TWO_PANELS)
    assert geometry.bad_regions == (
        BadRegion("badcorner", x=(-20.0, 20.0), y=(-100.0, 100.0)),
        BadRegion("badstrip", panel="b", fs=(2, 4), ss=(10, 19)),
    )
    assert geometry.masks == (GeomMask(0, "/entry/data/mask", "mask.h5", goodbits=0x1, badbits=0x6),)


def test_a_pixel_is_bad_unless_every_good_bit_is_set_or_when_any_bad_bit_is() -> None:
    mask = GeomMask(0, "/m", goodbits=0b001, badbits=0b110)
    values = np.array([0b001, 0b000, 0b011, 0b101, 0b111, 0b1001], dtype=np.uint32)
    assert mask.bad(values).tolist() == [False, True, True, True, True, False]


def test_pixel_centres_sit_half_a_pixel_from_the_corner_along_both_vectors() -> None:
    panel = parse_crystfel_geometry(TWO_PANELS).panels[1]  # fs = -x, ss = +y (+z ignored), corner (-5, 3)
    x, y = panel.pixel_centres()
    assert x.shape == (10, 10)
    assert (x[0, 0], y[0, 0]) == (-5.5, 3.5)
    assert (x[4, 7], y[4, 7]) == (-5.0 - 7.5, 3.0 + 4.5)


def test_writing_and_reading_back_gives_the_same_geometry() -> None:
    geometry = parse_crystfel_geometry(TWO_PANELS)
    again = parse_crystfel_geometry(format_crystfel_geometry(geometry, ["a header line"]))
    assert again.panels == geometry.panels
    assert again.bad_regions == geometry.bad_regions
    assert again.masks == geometry.masks
    assert dict(again.settings) == dict(geometry.settings)


def test_keys_detpipe_does_not_know_are_listed_with_their_line_not_refused() -> None:
    geometry = parse_crystfel_geometry(TWO_PANELS + "a/rail_x = 1\nfancy_new_key = 3\n")
    assert geometry.ignored == (f"line {TWO_PANELS.count(chr(10)) + 1}: a/rail_x",
                                f"line {TWO_PANELS.count(chr(10)) + 2}: fancy_new_key")


def test_every_problem_of_a_file_is_named_with_its_line_at_once() -> None:
    text = """
p0/min_fs = 0
p0/max_fs = 9.5
p0/min_ss = 0
p0/max_ss = 9
p0/fs = -q
p0/ss = +y
p0/corner_x = 1
what is this
badA/min_x = 1
badA/max_x = 2
badA/min_fs = 3
badB/min_fs = 0
badB/max_fs = 1
badB/min_ss = 0
badB/max_ss = 1
badB/panel = nowhere
mask3_goodbits = 1
"""
    with pytest.raises(ConfigError) as caught:
        parse_crystfel_geometry(text, "test.geom")
    problems = caught.value.problems
    assert any("line 3" in p and "whole number" in p for p in problems)
    assert any("line 6" in p and "vector" in p for p in problems)
    assert any("line 9" in p and "not 'key = value'" in p for p in problems)
    assert any("panel p0" in p and "corner_y" in p for p in problems)
    assert any("badA" in p and "mixes" in p for p in problems)
    assert any("badB" in p and "'nowhere'" in p for p in problems)
    assert any("mask 3" in p and "no data location" in p for p in problems)
    assert all(p.startswith("CrystFEL geometry test.geom: ") for p in problems)


def test_a_file_without_panels_or_that_cannot_be_read_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="describes no panel"):
        parse_crystfel_geometry("clen = 0.1\n")
    with pytest.raises(ConfigError, match=r"cannot be read"):
        read_crystfel_geometry(tmp_path / "missing.geom")
