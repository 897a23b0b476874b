"""Config files are checked against detpipe's device classes: misspelt names are errors that suggest the right
one, mandatory properties must be given, other servers' classes pass through (docs/tango_database.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detpipe.devices.cli.demo import config_file
from detpipe.devices.server import DEVICE_CLASSES
from detpipe.devices.tangodb.class_schema import BUILTIN_ATTRIBUTES, ClassSchema, schema_problems
from detpipe.devices.tangodb.config_model import DatabaseConfig, load_database_config
from detpipe.pipeline.core.errors import ConfigError

WRITER = "test/writer/1"


def writer_file(tmp_path: Path, device: dict, *, device_class: str = "NexusWriter", server: str = "detpipe/lab",
                **sections: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"servers": {server: {device_class: {WRITER: device}}}, **sections}))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_database_config(path, {})
    return err.value.problems


@pytest.mark.parametrize("device_class", DEVICE_CLASSES, ids=lambda c: c.__name__)
def test_the_schema_names_exactly_what_pytango_registers_for_the_class(device_class: type) -> None:
    """pytango's own tables (TangoClassClass, built by the device metaclass) are the ground truth."""
    schema = ClassSchema.of(device_class)
    tables = device_class.TangoClassClass
    assert schema.properties == set(tables.device_property_list)
    assert schema.attributes == set(tables.attr_list) | set(BUILTIN_ATTRIBUTES)
    assert schema.class_properties == set(tables.class_property_list)
    assert schema.memorized == {name for name, attr in tables.attr_list.items() if attr.memorized}
    assert schema.mandatory <= schema.properties


def test_the_writer_schema_knows_its_mandatory_property_and_memorized_attributes() -> None:
    from detpipe.devices.nexus_writer import NexusWriter
    schema = ClassSchema.of(NexusWriter)
    assert schema.mandatory == {"DataRoots"}
    assert {"saving_directory", "saving_prefix", "saving_frame_per_file"} <= schema.memorized
    assert "frames_written" in schema.attributes - schema.memorized


def test_the_issue_file_lists_every_misspelt_name_with_its_correction_and_the_missing_mandatory_one(
        tmp_path: Path) -> None:
    path = tmp_path / "typos.yaml"
    path.write_text("""
servers:
  detpipe/demo:
    EigerDetecter:
      eiger/detector/1:
        properties: {DetectorUrl: "http://dcu", StreamEndpoint: "tcp://dcu:9999", WriterDevice: eiger/writer/1}
    NexusWriter:
      eiger/writer/1:
        properties: {DataRoot: [/data], BuferFrames: 8}
        attribute_properties:
          saving_directry: {__value: [/data/x]}
""")
    assert problems_of(path) == [
        "unknown class 'EigerDetecter' (device eiger/detector/1) in server detpipe/demo: did you mean 'EigerDetector'?",
        "unknown property 'DataRoot' of NexusWriter (device eiger/writer/1): did you mean 'DataRoots'?",
        "unknown property 'BuferFrames' of NexusWriter (device eiger/writer/1): did you mean 'BufferFrames'?",
        "mandatory property 'DataRoots' of NexusWriter (device eiger/writer/1) is missing",
        "unknown attribute 'saving_directry' of NexusWriter (device eiger/writer/1): did you mean 'saving_directory'?",
    ]


@pytest.mark.parametrize(("device", "problem"), [
    ({"properties": {"DataRoots": "/d", "Bufferframes": 8}},
     "unknown property 'Bufferframes' of NexusWriter (device test/writer/1): did you mean 'BufferFrames'?"),
    ({"properties": {"DataRoots": "/d"}, "attribute_properties": {"Saving_Prefix": {"__value": "x"}}},
     "unknown attribute 'Saving_Prefix' of NexusWriter (device test/writer/1): did you mean 'saving_prefix'?"),
    ({"properties": {"DataRoots": "/d"}, "attribute_properties": {"write_rat": {"unit": "MB/s"}}},
     "unknown attribute 'write_rat' of NexusWriter (device test/writer/1): did you mean 'write_rate'?"),
    ({"properties": {"DataRoots": "/d", "Zq": 1}},
     "unknown property 'Zq' of NexusWriter (device test/writer/1): properties: AgipdCompression, BufferFrames, "),
])
def test_a_misspelt_property_or_attribute_is_one_error_naming_the_valid_name(
        tmp_path: Path, device: dict, problem: str) -> None:
    (only,) = problems_of(writer_file(tmp_path, device))
    assert only.startswith(problem)


@pytest.mark.parametrize(("value", "problem"), [
    ({}, "is missing"),
    ({"DataRoots": None}, "needs a value, not null or blank"),
    ({"DataRoots": [" ", ""]}, "needs a value, not null or blank"),
])
def test_a_mandatory_property_missing_deleted_or_blank_is_an_error(tmp_path: Path, value: dict, problem: str) -> None:
    assert problems_of(writer_file(tmp_path, {"properties": value})) == [
        f"mandatory property 'DataRoots' of NexusWriter (device {WRITER}) {problem}"]


def test_a_memorized_value_for_an_attribute_that_is_not_memorized_is_an_error(tmp_path: Path) -> None:
    device = {"properties": {"DataRoots": "/d"}, "attribute_properties": {"frames_written": {"__value": "3"},
                                                                          "write_rate": {"unit": "MB/s"}}}
    (only,) = problems_of(writer_file(tmp_path, device))
    assert only.startswith(f"attribute 'frames_written' of NexusWriter (device {WRITER}) is not memorized")


def test_class_properties_of_a_detpipe_class_must_be_declared(tmp_path: Path) -> None:
    path = writer_file(tmp_path, {"properties": {"DataRoots": "/d"}},
                       classes={"NexusWriter": {"properties": {"Maintainer": "staff"}}})
    assert problems_of(path) == ["unknown class property 'Maintainer' of NexusWriter: it declares no class properties"]


def test_an_unknown_class_in_a_detpipe_server_lists_the_classes_when_none_is_close(tmp_path: Path) -> None:
    (only,) = problems_of(writer_file(tmp_path, {}, device_class="Pool", server="DetPipe/lab"))
    assert only == (f"unknown class 'Pool' (device {WRITER}) in server DetPipe/lab: detpipe classes: "
                    + ", ".join(sorted(c.__name__ for c in DEVICE_CLASSES)))


def test_classes_of_other_servers_pass_through_untouched(tmp_path: Path) -> None:
    """Sardana's Pool knows its own names; detpipe neither checks nor changes them."""
    device = {"properties": {"PoolPath": ["/ctrl"], "DataRoot": "x"}, "attribute_properties": {"anything": {"a": 1}}}
    path = writer_file(tmp_path, device, device_class="Pool", server="Pool/lab",
                       classes={"Pool": {"properties": {"Whatever": "x"}}})
    config = load_database_config(path, {})
    assert config.to_dsconfig() == {
        "servers": {"Pool/lab": {"Pool": {WRITER: {"properties": {"PoolPath": ["/ctrl"], "DataRoot": ["x"]},
                                                   "attribute_properties": {"anything": {"a": ["1"]}}}}}},
        "classes": {"Pool": {"properties": {"Whatever": ["x"]}}},
    }


def test_shape_and_name_problems_are_reported_in_the_same_run(tmp_path: Path) -> None:
    path = writer_file(tmp_path, {"properties": {"DataRoots": "/d", "BuferFrames": 8}, "propertys": {}})
    assert problems_of(path) == [
        f"device {WRITER}: unknown key 'propertys' (properties, attribute_properties)",
        f"unknown property 'BuferFrames' of NexusWriter (device {WRITER}): did you mean 'BufferFrames'?",
    ]


def test_from_mapping_checks_the_shape_only() -> None:
    """The structural reader stays usable for documents that are not for this detpipe's classes (exports)."""
    raw = {"servers": {"detpipe/x": {"NexusWriter": {WRITER: {"properties": {"DataRoot": "/d"}}}}}}
    assert len(schema_problems(DatabaseConfig.from_mapping(raw))) == 2  # misspelt, and so the mandatory one missing


@pytest.mark.parametrize(("name", "variables"), [
    ("demo-eiger.yaml", {"EIGER_REST_PORT": "80", "EIGER_STREAM_PORT": "9999", "DATA_ROOT": "/data"}),
    ("demo-agipd.yaml", {"AGIPD_BRIDGE_PORT": "4545", "DATA_ROOT": "/data"}),
    ("demo-eiger-receivers.yaml", {"EIGER_REST_PORT": "80", "EIGER_STREAM_PORT": "9999", "FAN_OUT_PORT_1": "9101",
                                   "FAN_OUT_PORT_2": "9102", "DATA_ROOT": "/data"}),
    ("demo-agipd-groups.yaml", {"AGIPD_BRIDGE_PORT": "4545", "AGIPD_BRIDGE_PORT_2": "4546", "DATA_ROOT": "/data"}),
])
def test_the_demo_configs_validate_cleanly(name: str, variables: dict[str, str]) -> None:
    config = load_database_config(config_file(name), variables)
    assert config.devices
    assert schema_problems(config) == []
