"""Progress of long commands (reduce, report, the demo) when nobody watches a terminal: a few plain lines."""

from __future__ import annotations

import io

from detpipe.devices.cli.progress import Progress


def test_progress_off_a_terminal_is_plain_lines_first_and_last_always() -> None:
    out = io.StringIO()
    progress = Progress("report x", "frame", out)
    for done in [*range(1, 101), 100, 100]:  # the demo reports the total again while the writer catches up
        progress(done, 100, "3 MB written")
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "report x: 100 frames to go"
    assert lines[-1].startswith("report x: 100/100 frames (100 %)") and lines[-1].endswith(", 3 MB written")
    assert len(lines) <= 3 and sum("100/100" in line for line in lines) == 1 and "\r" not in out.getvalue()
