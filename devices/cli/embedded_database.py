"""An embedded Tango database: pytango's DataBaseds on sqlite, for the demo, tests and labs without one."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import tango

from .managed_process import ManagedProcess


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedTangoDatabase(ManagedProcess):
    """``python -m tango.databaseds.database`` on 127.0.0.1 with its own sqlite file (pytango documentation).

    Ready means a ``tango.Database`` client can connect, not merely that the process printed its port;
    that takes about 2 s. ``tango_host`` is what clients and servers must use as TANGO_HOST.
    """

    def __init__(self, sqlite_path: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_tcp_port(host)
        super().__init__(
            [sys.executable, "-u", "-m", "tango.databaseds.database", "--host", host, "--port", str(self.port),
             "--print-host-port", "2"],
            ready_marker=f"{self.port}",
            # omniORB would let an ORBendPoint of the environment win over the --host/--port given here.
            env={"PYTANGO_DATABASE_NAME": str(sqlite_path), "TANGO_HOST": f"{host}:{self.port}", "ORBendPoint": None},
        )

    @property
    def tango_host(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedTangoDatabase:
        super().start(timeout_s)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    self.client()
                    return self
                except tango.DevFailed:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        except BaseException:  # not ready in time, or Ctrl-C meanwhile: no database is left behind
            self.stop()
            raise

    def client(self) -> tango.Database:
        return tango.Database(self.host, self.port)
