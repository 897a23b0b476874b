"""The detpipe device server: every detpipe class in one asyncio process (pytango documentation, high-level API)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence

from tango import GreenMode
from tango.server import run

from .agipd_detector import AgipdDetector
from .data_policy import DataPolicy
from .eiger_detector import EigerDetector
from .eiger_receiver import EigerReceiver
from .hit_finder import HitFinder
from .nexus_writer import NexusWriter
from .server_names import SERVER_NAME

# Writers and hit finders first: detectors look them up when they prepare.
DEVICE_CLASSES = (NexusWriter, DataPolicy, HitFinder, EigerReceiver, EigerDetector, AgipdDetector)


def run_server(instance: str, tango_args: Sequence[str] = (), *, host: str | None = None, port: int = 0,
               server_name: str = SERVER_NAME) -> None:
    """Run ``<server_name>/<instance>`` (``detpipe/<instance>`` by default) as registered in the Tango database
    named by TANGO_HOST.

    ``host`` is the one interface the server listens on, for CORBA requests and for its ZMQ event sockets
    alike (omniORB's ``ORBendPoint giop:tcp:<host>:<port>``); ``port`` 0 lets the system choose, as Tango
    does. Without ``host`` the server follows Tango's convention on this computer: omniORB's own
    configuration (the ``ORBendPoint`` environment variable or omniORB.cfg) and otherwise every interface,
    so that control-room clients reach it. Extra ``tango_args`` go to the Tango kernel (e.g. ``-v4``).
    """
    if host is not None or port:  # omniORB reads ORB parameters from its environment too, and lets them win there
        os.environ["ORBendPoint"] = orb_endpoint(host, port)
    run(DEVICE_CLASSES, args=[server_name, instance, *tango_args], green_mode=GreenMode.Asyncio)


def orb_endpoint(host: str | None, port: int = 0) -> str:
    """omniORB's endpoint: ``giop:tcp:127.0.0.1:`` for one interface (an empty port is chosen by the system),
    ``giop:tcp::10100`` for every interface on a fixed port."""
    literal = ""
    if host is not None:
        address = ipaddress.ip_address(host)  # a name would make omniORB listen wherever it resolves
        literal = f"[{address}]" if address.version == 6 else str(address)
    return f"giop:tcp:{literal}:{port or ''}"
