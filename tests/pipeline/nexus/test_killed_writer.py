"""A writer killed with SIGKILL mid-file leaves its open data file readable up to the last flush."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np

from tests.pipeline.frames_for_writer_tests import SMALL, pixels, read_stack

ROOT = Path(__file__).parents[3]


def test_the_open_data_file_is_readable_up_to_the_last_flush_after_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "series_1_data_000001.h5"
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from detpipe.pipeline.core.frame import Encoding
        from detpipe.pipeline.core.saving_target import FLUSH_PERIOD_S
        from detpipe.pipeline.nexus.nxmx_data_file import FrameLayout, NxmxDataFile
        from tests.pipeline.frames_for_writer_tests import frame, pixels
        images = [pixels(i) for i in range(9)]
        data_file = NxmxDataFile(Path({str(path)!r}), 1, 0, 20, FrameLayout.of(frame(0, images[0])), overwrite=False)
        for i in range(6):
            data_file.write(i, frame(i, images[i]), 0)
        time.sleep(FLUSH_PERIOD_S + 0.1)
        data_file.write(6, frame(6, images[6]), 0)  # flushed with this one
        for i in (7, 8):
            data_file.write(i, frame(i, images[i]), 0)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    stack = read_stack(path)
    np.testing.assert_array_equal(stack[:7], np.stack([pixels(i) for i in range(7)]))
    with h5py.File(path) as handle:
        assert handle["/entry/data/data"].shape == (20, *SMALL)
