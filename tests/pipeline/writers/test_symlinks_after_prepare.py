"""Files stay inside DataRoots for their whole life: a symlink planted after Prepare (the directory swapped
for one, or one named like the next data file) is refused when the file is created, and nothing outside
the roots is written or truncated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from detpipe.pipeline.core.errors import UnsafeTarget
from detpipe.pipeline.core.saving_target import OverwritePolicy, SavingParams
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from tests.pipeline.frames_for_writer_tests import config, frame, pixels, start


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    return directory


def writer_in(root: Path, policy: OverwritePolicy = OverwritePolicy.ABORT) -> NxmxWriter:
    root.mkdir()
    return NxmxWriter(SavingParams(directory=root / "run", data_roots=(root,), frames_per_file=2,
                                   overwrite_policy=policy))


def test_a_directory_swapped_for_a_symlink_after_prepare_gets_no_file(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "data"
    writer = writer_in(root)
    writer.prepare(1)
    shutil.rmtree(root / "run")
    (root / "run").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeTarget, match="now resolves to"):
        writer.start_series(start(1, config(nimages=4)))
    assert list(outside.iterdir()) == []


def test_a_symlink_named_like_the_next_data_file_is_never_written_through(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "data"
    victim = outside / "precious.h5"
    victim.write_bytes(b"not yours")
    writer = writer_in(root, OverwritePolicy.OVERWRITE)
    writer.prepare(1)
    writer.start_series(start(1, config(nimages=4)))
    writer.process(frame(0, pixels(0)))
    writer.process(frame(1, pixels(1)))
    (root / "run" / "series_1_data_000002.h5").symlink_to(victim)
    with pytest.raises(UnsafeTarget, match="symbolic link"):
        writer.process(frame(2, pixels(2)))
    assert victim.read_bytes() == b"not yours"
