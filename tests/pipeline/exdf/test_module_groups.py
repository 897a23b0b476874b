"""An AGIPD run written by two module groups into one run directory (pipeline/exdf/module_groups.py): each group's
writer claims and writes only its modules' files, the master over both reads every frame back, extra-data opens the
whole run as one, and a group that stopped early leaves its modules missing for the trains it lacks."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest
from extra_data.components import AGIPD1M

from detpipe.pipeline.core.errors import ConfigError, TargetFileExists
from detpipe.pipeline.core.saving_target import OverwritePolicy
from detpipe.pipeline.core.series import EndOfSeries, SeriesStart
from detpipe.pipeline.core.train import AGIPD_MODULES, Train
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.exdf.module_groups import claim_run_master, write_group_master
from tests.pipeline.agipd_trains import make_train, run_stack
from tests.pipeline.writers.test_exdf_writer import VALIDATE, make_writer, open_run

GROUPS = (tuple(range(8)), tuple(range(8, 16)))
TRAINS = 4


def write_groups(root: Path, trains: Sequence[Train], *, last_of_second_group: int = TRAINS) -> Path:
    """Both groups' writers write run 1 into ``root/raw/r0001``; the second group writes only its first
    ``last_of_second_group`` trains (a group that died in between)."""
    directory = None
    for modules, count in zip(GROUPS, (TRAINS, last_of_second_group)):
        writer = make_writer(root, trains_per_sequence=3)
        directory = writer.prepare(1, modules=modules)
        writer.start_series(SeriesStart(1))
        for train in trains[:count]:  # as the group's receiver assembles it: the other modules absent
            writer.process(make_train(train.index, missing=set(range(AGIPD_MODULES)) - set(modules)))
        writer.finish(EndOfSeries(1))
        assert not writer.master_path.exists()  # left to the controlling device
    assert directory is not None
    return directory


def test_two_groups_write_one_run_that_extra_data_and_the_master_read_back_whole(tmp_path: Path) -> None:
    trains = [make_train(i) for i in range(TRAINS)]
    directory = write_groups(tmp_path, trains)
    assert len(list(directory.glob("RAW-R0001-AGIPD*-S*.h5"))) == 2 * AGIPD_MODULES  # 2 sequences of 3 trains
    claim_run_master(directory, 1, overwrite=False)
    master = write_group_master(directory, instrument_name="SPB", source_name="XFEL")
    assert (master.frames, master.frames_written, master.module_frames_missing) == (TRAINS * 8, TRAINS * 8, 0)
    with h5py.File(master.master) as handle:
        np.testing.assert_array_equal(handle["/entry/data/data"][9], run_stack(trains)[9])
        assert handle["/entry/instrument/name"][()].decode() == "SPB"
    agipd = AGIPD1M(open_run(directory), raw=True, min_modules=AGIPD_MODULES)
    data = agipd.get_array("image.data").values  # (module, train, cell, 2, ss, fs)
    for k, train in enumerate(trains):
        np.testing.assert_array_equal(np.moveaxis(data[:, k], 0, 1), train.data)
    result = subprocess.run([str(VALIDATE), str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "No problems found" in result.stdout, result.stdout[-2000:]


def test_a_group_that_stopped_early_leaves_its_modules_missing_in_the_trains_it_lacks(tmp_path: Path) -> None:
    trains = [make_train(i) for i in range(TRAINS)]
    directory = write_groups(tmp_path, trains, last_of_second_group=2)
    master = write_group_master(directory, instrument_name="SPB", source_name="XFEL")
    assert master.frames == TRAINS * 8 and master.module_frames_missing == 2 * 8 * len(GROUPS[1])
    with h5py.File(master.master) as handle:
        present = handle["/entry/data/modules_present"][()]
        assert present[:16].all() and not present[16:, 8:].any() and present[16:, :8].all()
        np.testing.assert_array_equal(handle["/entry/data/data"][20, :8], trains[2].data[4, :8])
        assert not handle["/entry/data/data"][20, 8:].any()  # the fill value
        assert handle["/entry/data/written"][()].all()  # every frame has modules on disk
    counts = open_run(directory)["SPB_DET_AGIPD1M-1/DET/9CH0:xtdf", "image.data"].data_counts(labelled=False)
    assert list(counts) == [8, 8, 0, 0]


def test_a_group_claims_only_its_modules_files_and_the_master_its_own_name(tmp_path: Path) -> None:
    write_groups(tmp_path, [make_train(i) for i in range(TRAINS)])
    again = make_writer(tmp_path)
    with pytest.raises(TargetFileExists, match="AGIPD08-S00000"):
        again.prepare(1, modules=GROUPS[1])
    directory = again.prepare(2, modules=GROUPS[1])  # another run's files are not this one's
    replace = make_writer(tmp_path, overwrite_policy=OverwritePolicy.OVERWRITE)
    replace.prepare(1, modules=GROUPS[1])
    assert not list((directory.parent / "r0001").glob("RAW-R0001-AGIPD1[0-5]-*.h5"))  # the group's old files
    assert len(list((directory.parent / "r0001").glob("RAW-R0001-AGIPD0[0-7]-*.h5"))) == 16  # the others' kept
    run_1 = directory.parent / "r0001"
    write_group_master(run_1, instrument_name="SPB", source_name="XFEL")
    with pytest.raises(TargetFileExists, match="AGIPD-R0001-master.h5"):
        claim_run_master(run_1, 1, overwrite=False)
    (run_1 / "karabo_data_map.json").write_text("{}")  # extra-data's cache of the old files
    claim_run_master(run_1, 1, overwrite=True)
    assert not (run_1 / "AGIPD-R0001-master.h5").exists() and not (run_1 / "karabo_data_map.json").exists()


def test_a_group_refuses_a_triaged_run_whose_frames_it_only_partly_has(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.prepare(1, modules=GROUPS[0])
    with pytest.raises(ConfigError, match="triage needs all 16 modules"):
        writer.start_series(SeriesStart(1, triage=TriageParams()))
