"""Child processes the demo and tests start themselves and stop by PID."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType

_WAIT_SLICE_S = 0.5  # how late a Ctrl-C that reached another thread is acted on while waiting for a child


class ProcessNotReady(RuntimeError):
    def __init__(self, command: Sequence[str], marker: str, output: str, timeout_s: float) -> None:
        super().__init__(
            f"{' '.join(command)} did not print {marker!r} within {timeout_s:.0f}s; its output:\n{output}"
        )


class ManagedProcess:
    """A child process that is ready once it prints ``ready_marker``; stopped by PID on exit. ``env`` adds to
    this process's environment (a value of None removes that variable).

    Output is collected by a reader thread so a chatty child never blocks on a full pipe, and so a
    failed start reports what the child said (ophyd-async's ManagedSubprocess does the same).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        ready_marker: str,
        env: Mapping[str, str | None] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.command = list(command)
        self.ready_marker = ready_marker
        merged = {**os.environ, **(env or {})}
        self.env = {name: value for name, value in merged.items() if value is not None}  # None: unset
        self.cwd = cwd
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout_s: float = 30.0) -> ManagedProcess:
        try:
            with _interrupt_deferred():
                self._process = subprocess.Popen(
                    self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
                    cwd=self.cwd, start_new_session=True,
                )
            threading.Thread(target=self._read_output, daemon=True, name=f"out-{self.pid}").start()
            ready = self._wait_ready(timeout_s)
        except BaseException:  # Ctrl-C while the child starts: it is not yet anyone's to stop but ours
            self.stop()
            raise
        if not ready:
            self.stop()
            raise ProcessNotReady(self.command, self.ready_marker, "".join(self.output[-50:]), timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                return False
            if self.ready_marker in line:
                return True
        return False

    def _read_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout_s)
        return self._process.returncode

    def wait(self, timeout_s: float | None = None) -> int:
        """Block until the child exits by itself (``subprocess.TimeoutExpired`` after ``timeout_s``); returns
        its exit code.

        Without a timeout it waits in slices: the kernel may hand a Ctrl-C to any thread of the process (a Tango
        client's ORB threads among them), and Python acts on it in the main thread only, between bytecodes, so a
        main thread blocked in one ``waitpid`` would never see it (Python's ``signal`` documentation)."""
        assert self._process is not None
        if timeout_s is not None:
            return self._process.wait(timeout_s)
        while True:
            try:
                return self._process.wait(_WAIT_SLICE_S)
            except subprocess.TimeoutExpired:
                continue

    def kill(self) -> None:
        """SIGKILL at once: what a crash or a pulled plug looks like to the others."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def __enter__(self) -> ManagedProcess:
        return self if self._process is not None else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Ctrl-C inside ``Popen`` (after the fork, before it returns) would leave a running child that nobody
    holds: hold the interrupt until the child is assigned, then raise it. Only the main thread gets SIGINT."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
