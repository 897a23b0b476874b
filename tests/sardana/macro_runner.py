"""Runs macros on a Sardana Door as a client does, without Sardana's TangoMacroExecutor and its fixed 3 s
sleep after every macro."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass

import tango

TERMINAL_STATES = frozenset({"finish", "stop", "abort", "exception"})
LOGS = ("Output", "Warning", "Error")
_MACRO_ID = re.compile(r'\bid="([^"]+)"')


class MacroFailed(AssertionError):
    def __init__(self, argv: tuple[str, ...], state: str, errors: list[str]) -> None:
        super().__init__(f"{' '.join(argv)} ended in {state!r}:\n" + "\n".join(errors))


@dataclass(frozen=True, slots=True)
class MacroRun:
    """What one macro left behind: its last state (finish, stop, abort, exception), its log lines by level
    and its Result (strings, one per result_def entry)."""

    state: str
    logs: dict[str, list[str]]
    result: tuple[str, ...]

    @property
    def output(self) -> str:
        return "\n".join(self.logs["Output"])


class MacroRunner:
    """Subscribes once to the Door's MacroStatus, Result, log and State change events; ``run`` sends RunMacro
    and returns when the macro reached a terminal state and then the Door left RUNNING.

    The Door pushes every event from one server, so they reach this client in order: the State event that
    follows the macro's terminal state comes after its last Output and its Result (a stopped macro sends
    ``finish`` before ``stop``, and Result only after ``finish``; waiting for the terminal state alone loses both).
    """

    def __init__(self, door: tango.DeviceProxy) -> None:
        self.door = door
        self._events: list[tuple[str, object]] = []
        self._changed = threading.Condition()
        self._subscriptions = [
            door.subscribe_event(name, tango.EventType.CHANGE_EVENT, self._callback(name))
            for name in ("MacroStatus", "Result", "State", *LOGS)
        ]

    def close(self) -> None:
        for subscription in self._subscriptions:
            self.door.unsubscribe_event(subscription)

    def _callback(self, name: str):
        def push_event(event: tango.EventData) -> None:
            if event.err or event.attr_value is None:
                return
            value = event.attr_value.value
            if name == "MacroStatus":
                value = json.loads(value[1]) if value and len(value[1]) else []
            with self._changed:
                self._events.append((name, value))
                self._changed.notify_all()

        return push_event

    def start(self, *argv: str) -> str:
        """RunMacro; returns the macro id. Earlier events are forgotten."""
        with self._changed:
            self._events.clear()
        reply = self.door.RunMacro([str(a) for a in argv])
        match = _MACRO_ID.search(reply[0])
        assert match is not None, reply
        return match.group(1)

    def wait(self, macro_id: str, argv: tuple[str, ...] = (), timeout_s: float = 60.0) -> MacroRun:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not self._finished(macro_id):
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"macro {' '.join(argv) or macro_id} not done after {timeout_s}s; "
                                       f"states {self._states(macro_id)}, Door {self.door.State()}")
            return self._run_of(macro_id)

    def run(self, *argv: str, timeout_s: float = 60.0, expect: str = "finish") -> MacroRun:
        run = self.wait(self.start(*argv), tuple(argv), timeout_s)
        if run.state != expect:
            raise MacroFailed(tuple(argv), run.state, run.logs["Error"] + run.logs["Warning"])
        return run

    def stop(self) -> None:
        self.door.StopMacro()

    def _states(self, macro_id: str) -> list[str]:
        return [status["state"] for name, value in self._events if name == "MacroStatus"
                for status in value if status.get("id") == macro_id]

    def _finished(self, macro_id: str) -> bool:
        terminal_seen = False
        for name, value in self._events:
            if name == "MacroStatus":
                terminal_seen |= any(s.get("id") == macro_id and s["state"] in TERMINAL_STATES for s in value)
            elif name == "State" and terminal_seen and value != tango.DevState.RUNNING:
                return True
        return False

    def _run_of(self, macro_id: str) -> MacroRun:
        logs: dict[str, list[str]] = {name: [] for name in LOGS}
        result: tuple[str, ...] = ()
        for name, value in self._events:
            if name in logs and value:
                logs[name].extend(value)
            elif name == "Result" and value:
                result = tuple(value)
        return MacroRun(self._states(macro_id)[-1], logs, result)
