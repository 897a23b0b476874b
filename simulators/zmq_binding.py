"""Binding a simulator's ZMQ server socket, as both the EIGER stream and the Karabo bridge do."""

from __future__ import annotations

import zmq


def bind_socket(kind: int, host: str, port: int, *, what: str, send_hwm: int) -> tuple[zmq.Context, zmq.Socket, str]:
    """A fresh context and a socket bound on ``host:port`` (0 = a free port); returns the endpoint too.

    A bind failure becomes an ``OSError`` like the REST server's, so callers handle a busy port one way.
    """
    context = zmq.Context()
    socket = context.socket(kind)
    socket.setsockopt(zmq.SNDHWM, send_hwm)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        if port == 0:
            port = socket.bind_to_random_port(f"tcp://{host}")
        else:
            socket.bind(f"tcp://{host}:{port}")
    except zmq.ZMQError as err:
        socket.close()
        context.term()
        raise OSError(err.errno, f"cannot bind the {what} to tcp://{host}:{port}: {err}") from err
    return context, socket, f"tcp://{host}:{port}"
