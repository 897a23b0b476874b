"""The filewriter's ``config`` task (DECTRIS SIMPLON API documentation), kept so control systems can switch it off."""

from __future__ import annotations

from .simplon_parameters import ONLY_1_8, Parameter, ParameterTable, ValueType


class FilewriterConfig(ParameterTable):
    """``/filewriter/api/<v>/config/…``: present so control systems can switch it off; it writes no files,
    so ``mode`` accepts only ``disabled`` (detpipe records from the stream)."""

    def __init__(self) -> None:
        super().__init__(
            [
                Parameter("mode", ValueType.STRING, allowed_values=("disabled",)),
                Parameter("compression_enabled", ValueType.BOOL),
                Parameter("image_nr_start", ValueType.INT, min=0),
                Parameter("name_pattern", ValueType.STRING),
                Parameter("nimages_per_file", ValueType.INT, min=0),
                Parameter(
                    "format",
                    ValueType.STRING,
                    allowed_values=("hdf5 nexus legacy nxmx", "hdf5 nexus v2024.2 nxmx"),
                    versions=ONLY_1_8,
                ),
            ],
            {
                "mode": "disabled",
                "compression_enabled": True,
                "image_nr_start": 1,
                "name_pattern": "series_$id",
                "nimages_per_file": 1000,
                "format": "hdf5 nexus legacy nxmx",
            },
        )
