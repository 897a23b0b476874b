"""The stream interface's ``config`` task (DECTRIS SIMPLON API documentation) and the choices it offers.

``mode`` starts ``disabled`` as on real DCUs (the ALBA simulator starts enabled): a control system that
forgets to enable the stream gets no frames, here as at the beamline.
"""

from __future__ import annotations

import enum

from .simplon_parameters import ONLY_1_8, Parameter, ParameterTable, ValueType


class StreamFormat(enum.Enum):
    """``stream/config/format`` (API 1.8 only; 1.6 DCUs speak legacy only)."""

    LEGACY = "legacy"  # Stream V1, JSON multipart (DECTRIS Stream V1 documentation)
    CBOR = "cbor"  # Stream V2 (DECTRIS Stream V2 documentation, CBOR)


class HeaderDetail(enum.Enum):
    """How much the series header carries; V2 treats ``none`` as ``basic``."""

    ALL = "all"
    BASIC = "basic"
    NONE = "none"


class StreamConfig(ParameterTable):
    """``/stream/api/<v>/config/…``."""

    def __init__(self) -> None:
        super().__init__(
            [
                Parameter("mode", ValueType.STRING, allowed_values=("enabled", "disabled")),
                Parameter(
                    "format", ValueType.STRING, allowed_values=tuple(f.value for f in StreamFormat), versions=ONLY_1_8
                ),
                Parameter("header_detail", ValueType.STRING, allowed_values=tuple(d.value for d in HeaderDetail)),
                Parameter("header_appendix", ValueType.STRING),
                Parameter("image_appendix", ValueType.STRING),
            ],
            {
                "mode": "disabled",
                "format": StreamFormat.LEGACY.value,
                "header_detail": HeaderDetail.BASIC.value,
                "header_appendix": "",
                "image_appendix": "",
            },
        )

    @property
    def enabled(self) -> bool:
        return self["mode"] == "enabled"
