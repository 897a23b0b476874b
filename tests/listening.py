"""Which TCP sockets the processes a test started are listening on (psutil reads the kernel's tables)."""

from __future__ import annotations

import psutil

WILDCARDS = ("0.0.0.0", "::", "")


def listening(root_pid: int, *, include_root: bool = True) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening socket of ``root_pid``'s process tree."""
    root = psutil.Process(root_pid)
    found = set()
    for process in ([root] if include_root else []) + root.children(recursive=True):
        try:
            connections = process.net_connections(kind="inet")
            name = " ".join(process.cmdline()[:4])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found |= {(name, c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def on_wildcards(sockets: set[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return sorted(s for s in sockets if s[1] in WILDCARDS)
