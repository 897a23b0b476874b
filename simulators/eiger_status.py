"""The ``status`` tasks of the detector, stream and filewriter modules (DECTRIS SIMPLON API documentation), read live.

Environmental values (temperature, humidity, links) are constant: a healthy detector. The stream's
``state`` is ``disabled`` while ``mode`` is, ``acquire`` while images are going out, else ``ready``.
"""

from __future__ import annotations

from collections.abc import Callable

from .eiger_acquisition import EigerAcquisition
from .eiger_stream import StreamSender
from .simplon_parameters import ONLY_1_8, StatusEntry, StatusTable, ValueType, utc_timestamp
from .stream_config import StreamConfig

_F, _I, _S = ValueType.FLOAT, ValueType.INT, ValueType.STRING


def _constant(value: object) -> Callable[[], object]:
    return lambda: value


def detector_status(acquisition: EigerAcquisition, series_unique_id: Callable[[], str]) -> StatusTable:
    return StatusTable(
        [
            StatusEntry("state", _S, lambda: acquisition.state.value),
            StatusEntry("error", ValueType.STRING_LIST, lambda: list(acquisition.errors)),
            StatusEntry("time", ValueType.DATE, utc_timestamp),
            StatusEntry("board_000/th0_temp", _F, _constant(24.8), unit="°C"),
            StatusEntry("board_000/th0_humidity", _F, _constant(4.1), unit="%"),
            StatusEntry("builder/dcu_buffer_free", _F, _constant(100.0), unit="%"),
            StatusEntry("temperature", _F, _constant(24.8), unit="°C", versions=ONLY_1_8),
            StatusEntry("humidity", _F, _constant(4.1), unit="%", versions=ONLY_1_8),
            StatusEntry("link_0", _S, _constant("up"), versions=ONLY_1_8),
            StatusEntry("link_1", _S, _constant("up"), versions=ONLY_1_8),
            StatusEntry("series_unique_id", _S, series_unique_id, versions=ONLY_1_8),
        ]
    )


def stream_status(config: StreamConfig, sender: StreamSender) -> StatusTable:
    def state() -> str:
        if not config.enabled:
            return "disabled"
        return "acquire" if sender.sending else "ready"

    return StatusTable(
        [
            StatusEntry("state", _S, state),
            StatusEntry("dropped", _I, lambda: sender.frames_dropped),
        ]
    )


def filewriter_status() -> StatusTable:
    return StatusTable(
        [
            StatusEntry("state", _S, _constant("ready")),
            StatusEntry("error", ValueType.STRING_LIST, lambda: []),
            StatusEntry("time", ValueType.DATE, utc_timestamp),
            StatusEntry("buffer_free", _I, _constant(2**40), unit="B"),
            StatusEntry("files", ValueType.STRING_LIST, lambda: [], versions=ONLY_1_8),
        ]
    )
