"""The report page as a browser shows it: headless Chromium (Debian's ``chromium`` package) loads the page,
which marks how many of its figures decoded, and takes a screenshot that is not blank."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from detpipe.pipeline.report.quick_look import write_quick_look
from tests.pipeline.report.conftest import master_in

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install "
                                                          "chromium); .ci/run installs it")
# Root in a container has no user namespace for Chromium's sandbox; the page is our own file.
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *HEADLESS, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_the_report_page_loads_every_figure_and_renders(eiger_run: Path, tmp_path: Path) -> None:
    report = write_quick_look(master_in(eiger_run / "raw"), tmp_path / "report")
    dom = chromium("--dump-dom", report.page.as_uri(), cwd=tmp_path)
    loaded = re.search(r'data-figures-loaded="(\d+)"', dom.stdout)
    assert loaded, dom.stderr[-2000:]
    assert int(loaded.group(1)) == len(report.figures) == 5
    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2400", report.page.as_uri(), cwd=tmp_path)
    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1200)
    assert np.std(pixels[..., :3]) > 0.05  # figures, not an empty white page
