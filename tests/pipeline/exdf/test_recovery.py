"""An AGIPD writer killed with SIGKILL mid-run: its module files are complete EXDF up to the last flush, and
``detpipe recover`` writes the run master a finished run would have, over every train on disk (issue 14)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import extra_data
import h5py
import hdf5plugin  # noqa: F401 - registers filter 32008 for reading back
import numpy as np

from detpipe.devices.cli.main import main as detpipe_main
from detpipe.pipeline.core.train import AGIPD_MODULES
from tests.pipeline.agipd_trains import FIRST_TRAIN_ID, make_train, run_stack

ROOT = Path(__file__).parents[3]
MISSING = {2: (3,), 5: (11,)}  # module 3 misses train 2, module 11 train 5


def killed_mid_run(root: Path, trains_before_flush: int) -> Path:
    """Writes ``trains_before_flush`` trains (4 per sequence), waits for a flush to be due, writes one more
    (flushed with it), then one more that is never flushed, and is killed; returns the run directory."""
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from detpipe.pipeline.core.saving_target import FLUSH_PERIOD_S, SavingParams
        from detpipe.pipeline.core.series import SeriesStart
        from detpipe.pipeline.writers.exdf_writer import ExdfWriter
        from tests.pipeline.agipd_trains import make_train
        root = Path({str(root)!r})
        writer = ExdfWriter(SavingParams(directory=root / "raw", data_roots=(root,)), proposal=900123,
                            trains_per_sequence=4)
        writer.prepare(3)
        writer.start_series(SeriesStart(3))
        missing = {MISSING!r}
        n = {trains_before_flush}
        for i in range(n):
            writer.process(make_train(i, run=3, missing=missing.get(i, ())))
        time.sleep(FLUSH_PERIOD_S + 0.1)
        writer.process(make_train(n, run=3, missing=missing.get(n, ())))  # flushed with this one
        writer.process(make_train(n + 1, run=3))  # never flushed
        print(writer.run_directory, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    return Path(killed.stdout.split()[-1])


def test_recover_writes_the_run_master_over_every_train_flushed(tmp_path: Path, capsys) -> None:
    directory = killed_mid_run(tmp_path, trains_before_flush=5)  # trains 0-3 in S00000, 4-5 flushed in S00001
    assert not (directory / "AGIPD-R0003-master.h5").exists()  # the dead writer never wrote it

    run = extra_data.RunDirectory(str(directory), parallelize=False)  # the open sequence files read already
    assert list(run.train_ids)[:6] == [FIRST_TRAIN_ID + i for i in range(6)]

    assert detpipe_main(["recover", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "AGIPD-R0003-master.h5" in out and "32 module files" in out

    trains = [make_train(i, run=3, missing=MISSING.get(i, ())) for i in range(6)]
    with h5py.File(directory / "AGIPD-R0003-master.h5", "r") as master:
        data = master["/entry/data/data"]
        assert data.shape[0] >= 6 * 8
        stack = np.stack([data[k] for k in range(6 * 8)])
        np.testing.assert_array_equal(stack, run_stack(trains))
        present = master["/entry/data/modules_present"][: 6 * 8]
        assert present[2 * 8, 3] == 0 and present[5 * 8, 11] == 0 and present[0].sum() == AGIPD_MODULES
        assert master["/entry/data/written"][: 6 * 8].all()
        np.testing.assert_array_equal(master["/entry/data/trainId"][: 6 * 8],
                                      np.repeat([FIRST_TRAIN_ID + i for i in range(6)], 8))
    validate = subprocess.run([Path(sys.executable).parent / "extra-data-validate", str(directory)],
                              capture_output=True, text=True, timeout=300)
    assert validate.returncode == 0, validate.stdout[-2000:] + validate.stderr[-2000:]


def test_recover_refuses_a_complete_run_and_says_why(tmp_path: Path, capsys) -> None:
    directory = killed_mid_run(tmp_path, trains_before_flush=1)
    assert detpipe_main(["recover", str(directory)]) == 0
    capsys.readouterr()
    assert detpipe_main(["recover", str(directory)]) == 2
    assert "is complete already" in capsys.readouterr().err
