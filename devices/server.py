"""The detpipe device server: every detpipe class in one asyncio process (tango.md §7)."""

from __future__ import annotations

from collections.abc import Sequence

from tango import GreenMode
from tango.server import run

from .agipd_detector import AgipdDetector
from .data_policy import DataPolicy
from .eiger_detector import EigerDetector
from .hit_finder import HitFinder
from .nexus_writer import NexusWriter

SERVER_NAME = "detpipe"
# Writers and hit finders first: detectors look them up when they prepare.
DEVICE_CLASSES = (NexusWriter, DataPolicy, HitFinder, EigerDetector, AgipdDetector)


def run_server(instance: str, tango_args: Sequence[str] = ()) -> None:
    """Run ``detpipe/<instance>`` as registered in the Tango database named by TANGO_HOST.

    Extra ``tango_args`` go to the Tango kernel (e.g. ``-v4`` or ``-nodb -dlist …``).
    """
    run(DEVICE_CLASSES, args=[SERVER_NAME, instance, *tango_args], green_mode=GreenMode.Asyncio)
