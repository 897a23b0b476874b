"""A file changed through ``rewrite_h5`` is valid at every moment: old or new, never half-changed (issue 14)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from detpipe.pipeline.core.errors import UnsafeTarget
from detpipe.pipeline.core.saving_target import rewrite_h5


@pytest.fixture
def master(tmp_path: Path) -> Path:
    path = tmp_path / "series_master.h5"
    with h5py.File(path, "w") as handle:
        handle["/entry/data/x"] = np.arange(1000)
    return path


def test_changes_appear_at_once_and_a_reader_of_the_old_file_keeps_it(master: Path) -> None:
    with h5py.File(master, "r") as reader:
        with rewrite_h5(master) as handle:
            handle["/entry/end_time"] = "2026-12-03T10:00:00Z"
            assert "end_time" not in h5py.File(master, "r")["entry"]  # not yet visible by name
        assert "end_time" not in reader["entry"]  # the reader still has the old, whole file
        np.testing.assert_array_equal(reader["/entry/data/x"][()], np.arange(1000))
    with h5py.File(master, "r") as handle:
        assert handle["/entry/end_time"][()] == b"2026-12-03T10:00:00Z"
    assert [p.name for p in master.parent.iterdir()] == [master.name]


def test_a_change_that_fails_leaves_the_file_as_it_was(master: Path) -> None:
    before = master.read_bytes()
    with pytest.raises(RuntimeError), rewrite_h5(master) as handle:
        del handle["/entry/data"]
        raise RuntimeError("disk full, say")
    assert master.read_bytes() == before
    assert [p.name for p in master.parent.iterdir()] == [master.name]


def _die_mid_change(path: Path) -> None:
    with rewrite_h5(path) as handle:
        del handle["/entry/data"]
        handle["/entry/partial"] = np.zeros(10**6)
        handle.flush()
        os._exit(9)  # kill -9 as far as the file system can tell


def test_a_writer_killed_mid_change_leaves_the_old_file_whole_and_the_next_change_works(master: Path) -> None:
    child = multiprocessing.get_context("fork").Process(target=_die_mid_change, args=(master,))
    child.start()
    child.join(30)
    assert child.exitcode == 9
    with h5py.File(master, "r") as handle:
        np.testing.assert_array_equal(handle["/entry/data/x"][()], np.arange(1000))
        assert "partial" not in handle["entry"]
    with rewrite_h5(master) as handle:  # the copy left beside is replaced
        handle["/entry/end_time"] = "now"
    assert [p.name for p in master.parent.iterdir()] == [master.name]


def test_a_symlink_planted_at_the_copy_name_is_never_written_through(master: Path, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.bin"
    outside.write_bytes(b"not yours")
    (master.parent / f".{master.name}.tmp").symlink_to(outside)
    with rewrite_h5(master) as handle:
        handle["/entry/end_time"] = "now"
    assert outside.read_bytes() == b"not yours"
    outside.unlink()


def test_a_directory_swapped_for_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    with h5py.File(real / "m.h5", "w") as handle:
        handle["x"] = 1
    elsewhere = tmp_path / "elsewhere"
    real.rename(elsewhere)
    real.symlink_to(elsewhere)
    with pytest.raises(UnsafeTarget), rewrite_h5(real / "m.h5"):
        pass
