"""Pipeline threads tell the kernel their names, so top -H, ps -L and the benchmark's CPU table name the stage."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from detpipe.pipeline.core.thread_names import pipeline_thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names for the kernel are Linux's prctl")
def test_a_pipeline_thread_is_known_to_python_and_to_the_kernel_by_its_stage_name() -> None:
    seen: dict[str, str] = {}

    def stage() -> None:
        seen["kernel"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    thread = pipeline_thread(stage, "frame-check-and-more")
    assert thread.name == "detpipe-frame-check-and-more" and thread.daemon
    thread.start()
    thread.join(5)
    assert seen["kernel"] == "dp-frame-check-"  # the kernel keeps 15 bytes
    assert Path("/proc/self/comm").read_text().strip() != "dp-frame-check-"  # the process keeps its own
