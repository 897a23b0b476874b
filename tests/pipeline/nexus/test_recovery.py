"""A writer killed with SIGKILL mid-series: ``detpipe recover`` rebuilds a master whose VDS reads every frame
that reached the disk, with the lost ones flagged, and the original metadata kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import nxmx
import pytest

from detpipe.devices.cli.main import main as detpipe_main
from tests.pipeline.frames_for_writer_tests import pixels, read_stack

ROOT = Path(__file__).parents[3]


def killed_mid_series(directory: Path, frames: list[int]) -> None:
    """Writes ``frames`` (4 per data file) and is killed right after a flush, its last file still open."""
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from detpipe.pipeline.core.saving_target import FLUSH_PERIOD_S, SavingParams
        from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
        from tests.pipeline.frames_for_writer_tests import config, frame, pixels, start
        root = Path({str(directory)!r})
        writer = NxmxWriter(SavingParams(directory=root, data_roots=(root,), frames_per_file=4))
        writer.prepare(1)
        writer.start_series(start(1, config(nimages=20)))
        frames = {frames!r}
        for i in frames[:-1]:
            writer.process(frame(i, pixels(i)))
        time.sleep(FLUSH_PERIOD_S + 0.1)
        writer.process(frame(frames[-1], pixels(frames[-1])))  # flushed with this one
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]


@pytest.mark.parametrize(("frames", "files"), [
    ([0, 1, 2], 1),  # in the first data file, nothing linked yet
    ([0, 1, 2, 3, 4, 5, 6, 7], 2),  # right after the second file closed and was linked
    ([0, 1, 2, 3, 4, 5, 7, 8, 9], 3),  # mid-series, frame 6 never arrived
], ids=["first_file", "after_a_close", "mid_series"])
def test_recover_rebuilds_the_vds_over_every_frame_on_disk(tmp_path: Path, capsys, frames: list[int],
                                                          files: int) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    killed_mid_series(directory, frames)
    master = directory / "series_1_master.h5"
    with h5py.File(master) as handle:
        assert "data" not in handle["/entry/data"]  # the dead writer never wrote its VDS

    assert detpipe_main(["recover", str(directory)]) == 0
    n = frames[-1] + 1
    assert f"{len(frames)} of {n} frames on disk in {files} data files" in capsys.readouterr().out

    stack = read_stack(master)
    assert stack.shape[0] == n
    for i in frames:
        np.testing.assert_array_equal(stack[i], pixels(i), err_msg=f"frame {i}")
    with h5py.File(master) as handle:
        assert handle["/entry/data/written"][()].tolist() == [int(i in frames) for i in range(n)]
        assert "end_time" in handle["/entry"]
        np.testing.assert_allclose(handle["/entry/sample/transformations/omega"][()], 10.0 + 0.1 * np.arange(n))
        entry = nxmx.NXmx(handle).entries[0]
        assert entry.definition == "NXmx"


def test_recover_says_what_it_cannot_use(tmp_path: Path, capsys) -> None:
    assert detpipe_main(["recover", str(tmp_path)]) == 2
    assert "is neither a <stem>_master.h5, a directory holding one, nor an AGIPD run" in capsys.readouterr().err
