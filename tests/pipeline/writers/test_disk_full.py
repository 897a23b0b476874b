"""A full disk: the writer refuses a series below its free-space margin and stops a running one there, so
every file it closes is complete; a write the file system refuses anyway never crashes the process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from detpipe.devices.cli.main import main as detpipe_main
from detpipe.pipeline.core import saving_target
from detpipe.pipeline.core.errors import DiskFull
from detpipe.pipeline.core.frame import Encoding
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import EndOfSeries
from detpipe.pipeline.core.stage_runner import StageRunner
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from tests.pipeline.frames_for_writer_tests import SMALL, config, frame, pixels, read_stack, start
from tests.waiting import wait_until

MARGIN = 100_000_000


def test_a_series_is_refused_below_the_margin_with_the_numbers(tmp_path: Path) -> None:
    writer = NxmxWriter(SavingParams(directory=tmp_path / "run", data_roots=(tmp_path,),
                                     free_space_margin_bytes=10**18))
    with pytest.raises(DiskFull, match=r"MB free, below the 1000000000000 MB margin"):
        writer.prepare(1)


@pytest.fixture
def shrinking_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """statvfs reports the margin plus ``room`` bytes; the test lowers ``room`` as it goes."""
    disk = SimpleNamespace(room=10**9)
    monkeypatch.setattr(saving_target.os, "statvfs",
                        lambda path: SimpleNamespace(f_bavail=(MARGIN + disk.room) // 4096, f_frsize=4096))
    yield disk


def test_a_running_series_stops_at_the_margin_with_every_file_complete(tmp_path: Path, shrinking_disk) -> None:
    writer = NxmxWriter(SavingParams(directory=tmp_path / "run", data_roots=(tmp_path,), frames_per_file=4,
                                     free_space_margin_bytes=MARGIN))
    failures: list[str] = []
    inbox: FrameQueue = FrameQueue(64, FullPolicy.DROP)
    runner = StageRunner("writer", writer, inbox, on_failure=failures.append)
    runner.start()
    writer.prepare(1)
    inbox.put(start(1, config(SMALL, "uint16", 10)))
    images = [pixels(i) for i in range(10)]
    for i in range(6):
        inbox.put(frame(i, images[i]))
    wait_until(lambda: writer.stats.frames_written, lambda n: n == 6, 10, "frames written")
    shrinking_disk.room = 0
    for i in range(6, 10):
        inbox.put(frame(i, images[i], Encoding.BSLZ4))
    inbox.put(EndOfSeries(1))
    assert runner.series_done.wait(10)
    runner.close()
    assert len(failures) == 1 and "disk full" in failures[0] and "MB margin" in failures[0]
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack(images[:6]))
    assert writer.stats.frames_written == 6 and runner.stage.stats.rejected["stage_failed"] == 4


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs")
def test_a_write_the_file_system_refuses_never_crashes_the_process(tmp_path: Path) -> None:
    """A full tmpfs and no margin: HDF5 used to segfault on the next series (metadata written after ENOSPC)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine cannot mount a tmpfs (needs root); the margin tests above still run")
    try:
        script = textwrap.dedent(f"""
            import numpy as np
            from pathlib import Path
            import detpipe.pipeline.writers.nxmx_writer as nw
            from detpipe.pipeline.core.frame import Encoding
            from detpipe.pipeline.core.saving_target import SavingParams
            from detpipe.pipeline.core.series import EndOfSeries
            from tests.pipeline.frames_for_writer_tests import config, frame, start
            nw.check_free_space = lambda *args: None  # as if another process filled the disk
            root = Path({str(mount)!r})
            writer = nw.NxmxWriter(SavingParams(directory=root / "run", data_roots=(root,), frames_per_file=4,
                                                free_space_margin_bytes=0))
            rng = np.random.default_rng(0)
            for series in (1, 2, 3):
                writer.prepare(series)
                writer.start_series(start(series, config((512, 1024), "uint16", 40)))
                try:
                    for i in range(40):
                        writer.process(frame(i, rng.integers(0, 65535, (512, 1024), dtype=np.uint16), Encoding.RAW, series))
                    writer.finish(EndOfSeries(series))
                except OSError as err:
                    writer.abort(str(err))
                for path in (root / "run").glob("*"):
                    path.unlink()
            print("survived")
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).parents[3], env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])})
        assert done.returncode == 0 and "survived" in done.stdout, done.stderr[-2000:]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _noise(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 65535, (512, 1024), dtype=np.uint16)  # 1 MB, incompressible


def test_after_a_disk_full_recover_gives_a_master_over_every_frame_that_reached_the_disk(tmp_path: Path, capsys) -> None:
    """ENOSPC mid-series without a margin: the writer stops changing metadata, so the master lacks the last
    links and its VDS. Once space is freed, ``detpipe recover`` rebuilds it over every frame on disk."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine cannot mount a tmpfs (needs root); the margin tests above still run")
    try:
        script = textwrap.dedent(f"""
            from pathlib import Path
            import detpipe.pipeline.writers.nxmx_writer as nw
            from detpipe.pipeline.core.frame import Encoding
            from detpipe.pipeline.core.saving_target import SavingParams
            from tests.pipeline.frames_for_writer_tests import config, frame, start
            from tests.pipeline.writers.test_disk_full import _noise
            nw.check_free_space = lambda *args: None  # as if another process filled the disk
            root = Path({str(mount)!r})
            writer = nw.NxmxWriter(SavingParams(directory=root / "run", data_roots=(root,), frames_per_file=3,
                                                free_space_margin_bytes=0))
            writer.prepare(1)
            writer.start_series(start(1, config((512, 1024), "uint16", 20)))
            try:
                for i in range(20):
                    writer.process(frame(i, _noise(i), Encoding.RAW, 1))
            except OSError as err:
                writer.abort(str(err))
                print("disk full at frame", i)
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).parents[3], env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])})
        assert done.returncode == 0 and "disk full at frame" in done.stdout, done.stderr[-2000:]
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)  # the operator frees space
        assert detpipe_main(["recover", str(mount / "run")]) == 0
        assert "frames on disk" in capsys.readouterr().out
        master = mount / "run" / "series_1_master.h5"
        stack = read_stack(master)
        with h5py.File(master) as handle:
            written = handle["/entry/data/written"][()]
        assert 3 <= written.sum() < 20 and stack.shape[0] == len(written)
        for i in np.flatnonzero(written):
            np.testing.assert_array_equal(stack[i], _noise(int(i)), err_msg=f"frame {i}")
    finally:
        subprocess.run(["umount", str(mount)], check=False)
