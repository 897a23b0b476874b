"""A command waiting for its child (``detpipe db start``) acts on Ctrl-C even when the kernel hands SIGINT to
another thread of the process, as it may once a Tango client's ORB threads run."""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from detpipe.devices.cli.managed_process import ManagedProcess

SLEEPER = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"]


def test_a_ctrl_c_that_reached_another_thread_ends_the_wait_promptly() -> None:
    child = ManagedProcess(SLEEPER, ready_marker="ready").start()
    try:
        other = threading.Thread(target=_ctrl_c_to_this_thread_soon)
        other.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            child.wait()  # one blocking waitpid would only return when the child ends, after 60 s
        other.join()
        assert time.monotonic() - t0 < 3
    finally:
        child.stop()


def _ctrl_c_to_this_thread_soon() -> None:
    time.sleep(0.3)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # Python's handler runs here, flags the main thread


def test_the_wait_returns_the_exit_code_of_a_child_that_ends_by_itself() -> None:
    child = ManagedProcess([sys.executable, "-c", "print('ready', flush=True); raise SystemExit(3)"],
                           ready_marker="ready").start()
    assert child.wait() == 3
