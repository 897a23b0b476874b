"""Memorized DevEnum values: a config file gives labels, the Tango database keeps indices (which is all a server
accepts at start-up), and an export shows labels again (docs/tango_database.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detpipe.devices.cli.demo import config_file
from detpipe.devices.eiger_detector import TRIGGER_MODES
from detpipe.devices.server import DEVICE_CLASSES
from detpipe.devices.tangodb.class_schema import ClassSchema
from detpipe.devices.tangodb.config_model import load_database_config
from detpipe.devices.tangodb.enum_values import with_enum_labels
from detpipe.pipeline.core.errors import ConfigError

DETECTOR = "test/detector/1"


def detector_file(tmp_path: Path, memorized: dict[str, str]) -> Path:
    device = {"properties": {"DetectorUrl": "http://dcu", "StreamEndpoint": "tcp://dcu:9999",
                             "WriterDevice": "test/writer/1"},
              "attribute_properties": {name: {"__value": [value]} for name, value in memorized.items()}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"servers": {"detpipe/lab": {"EigerDetector": {DETECTOR: device}}}}))
    return path


def stored(path: Path) -> dict[str, list[str] | None]:
    (entry,) = load_database_config(path, {}).devices
    return {name: props["__value"] for name, props in entry.attribute_properties.items()}


def test_the_schema_lists_every_memorized_devenum_with_its_labels_in_index_order() -> None:
    enums = {cls.__name__: ClassSchema.of(cls).enum_labels for cls in DEVICE_CLASSES}
    assert enums["EigerDetector"] == {"acq_trigger_mode": tuple(TRIGGER_MODES), "compression_type": ("bslz4", "lz4")}
    assert enums["NexusWriter"] == {"saving_overwrite_policy": ("Abort", "Overwrite")}
    assert enums["DataPolicy"] == {"policy": ("raw", "red", "raw+red")}


def test_labels_are_stored_as_indices_whatever_their_case_and_an_index_is_kept(tmp_path: Path) -> None:
    path = detector_file(tmp_path, {"compression_type": "LZ4", "acq_trigger_mode": "3", "acq_expo_time": "0.5"})
    assert stored(path) == {"compression_type": ["1"], "acq_trigger_mode": ["3"], "acq_expo_time": ["0.5"]}


@pytest.mark.parametrize(("value", "hint"), [
    ("bslz", "did you mean 'bslz4'?"),
    ("zstd", "values: bslz4, lz4"),
    ("2", "values: bslz4, lz4"),  # an index beyond the labels
])
def test_a_value_that_is_neither_label_nor_index_is_refused_naming_the_labels(
        tmp_path: Path, value: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_database_config(detector_file(tmp_path, {"compression_type": value}), {})
    assert err.value.problems == [f"{DETECTOR} attribute compression_type: __value {value!r} is none of its "
                                  f"values: {hint}"]


def test_the_shipped_configs_store_their_labels_as_the_indices_and_an_export_shows_the_labels() -> None:
    config = load_database_config(config_file("demo-eiger.yaml"), {
        "EIGER_REST_PORT": "8000", "EIGER_STREAM_PORT": "9999", "DATA_ROOT": "/data"})
    detector = next(entry for entry in config.devices if entry.device_class == "EigerDetector")
    assert detector.attribute_properties["compression_type"] == {"__value": ["0"]}
    shown = next(entry for entry in with_enum_labels(config).devices if entry.device_class == "EigerDetector")
    assert shown.attribute_properties["compression_type"] == {"__value": ["bslz4"]}
    assert shown.attribute_properties["acq_expo_time"] == detector.attribute_properties["acq_expo_time"]
