"""Option types shared by the simulators' command lines, so a bad value is argparse's one-line usage error
(exit 2) before anything binds, not a traceback from the socket."""

from __future__ import annotations

import argparse


def tcp_port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not within 0 … 65535 (0 = any free port)")
    return port
