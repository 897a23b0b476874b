"""Refusing a busy TCP port before a command claims it, naming the process that holds it when this user may
see it (Linux /proc; no extra dependency)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from .user_error import UserError

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def refuse_busy_port(host: str, port: int, option: str = "--port") -> None:
    """Raise UserError if ``host:port`` cannot be bound now. SO_REUSEADDR, as servers set it, so a port whose
    last connection is only in TIME_WAIT counts as free; a listener on the wildcard address still counts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise UserError(f"{option} {port}: cannot bind {host}:{port} ({err.strerror})") from err
            raise UserError(f"{option} {port}: port {port} on {host} is already in use{_holder(port)}; stop that "
                            f"process or choose another {option}") from None


def _holder(port: int) -> str:
    """`` by PID 123 (command line)``, or nothing when the listener belongs to a process this user cannot see."""
    inodes = _listening_inodes(port)
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd) in inodes:
                    pid = fd_dir.parent.name
                    words = (fd_dir.parent / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
                    return f" by PID {pid} ({' '.join(words)[:80]})"  # one line, even for `python -c` scripts
        except OSError:  # another user's process, or one that just ended
            continue
    return ""


def _listening_inodes(port: int) -> set[str]:
    """``socket:[inode]`` link targets of the sockets listening on ``port`` (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == _LISTEN:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes
