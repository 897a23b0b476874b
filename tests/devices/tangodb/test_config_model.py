"""Config files (config/*.yaml, exported dsconfig JSON): parsing, placeholders and validation, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from detpipe.devices.tangodb.config_model import DatabaseConfig, load_database_config
from detpipe.pipeline.core.errors import ConfigError

WRITER_YAML = """
servers:
  detpipe/${INSTANCE}:
    NexusWriter:
      test/writer/1:
        properties:
          DataRoots: ["${DATA_ROOT}", /data/common]
          BufferFrames: 64
          InstrumentName: null
        attribute_properties:
          saving_prefix: {__value: [scan_$id]}
classes:
  Pool: {properties: {Maintainer: staff}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_placeholders_are_filled_in_names_and_values_and_other_dollars_pass_through(tmp_path: Path) -> None:
    config = load_database_config(write(tmp_path, WRITER_YAML), {"INSTANCE": "lab", "DATA_ROOT": "/data/lab"})
    (writer,) = config.devices
    assert (writer.server, writer.device_class, writer.name) == ("detpipe/lab", "NexusWriter", "test/writer/1")
    assert writer.properties == {"DataRoots": ["/data/lab", "/data/common"], "BufferFrames": ["64"],
                                 "InstrumentName": None}
    assert writer.attribute_properties == {"saving_prefix": {"__value": ["scan_$id"]}}
    assert config.classes == {"Pool": {"Maintainer": ["staff"]}}


def test_every_missing_placeholder_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_database_config(write(tmp_path, WRITER_YAML), {})
    assert [p.rsplit(": ", 1)[1] for p in err.value.problems] == [
        "placeholder ${DATA_ROOT} has no value", "placeholder ${INSTANCE} has no value"]


def test_nested_server_spelling_means_the_same_as_executable_slash_instance() -> None:
    flat = DatabaseConfig.from_mapping({"servers": {"detpipe/demo": {"HitFinder": {"a/b/c": {}}}}})
    nested = DatabaseConfig.from_mapping({"servers": {"detpipe": {"demo": {"HitFinder": {"a/b/c": {}}}}}})
    assert flat == nested


def test_every_problem_of_a_file_is_collected() -> None:
    with pytest.raises(ConfigError) as err:
        DatabaseConfig.from_mapping({"servers": {"a/b/c": {"HitFinder": {"bad-name": {"propertys": {}}}}},
                                     "tango_host": "x"})
    assert err.value.problems == [
        "config: unknown key 'tango_host' (servers, classes)",
        "server 'a/b/c' must be <executable>/<instance>",
        "device 'bad-name' must be domain/family/member of letters, digits and _ . + -",
        "device bad-name: unknown key 'propertys' (properties, attribute_properties)",
    ]


def test_dsconfig_document_reads_back_as_the_same_config(tmp_path: Path) -> None:
    config = load_database_config(write(tmp_path, WRITER_YAML), {"INSTANCE": "lab", "DATA_ROOT": "/data/lab"})
    assert DatabaseConfig.from_mapping(config.to_dsconfig()) == config


@pytest.mark.parametrize(("properties", "name", "words"), [
    ({"DataRoots": {"a": 1}}, "det/eiger/1", "not a string, number or boolean"),
    ({"DataRoots": [["/data"]]}, "det/eiger/1", "not a string, number or boolean"),
    ({"DetectorUrl": "http://dcu\x00"}, "det/eiger/1", "control characters"),
    ({}, "det/eiger/one two", "letters, digits"),
    ({}, "det/eig*r/1", "letters, digits"),
])
def test_values_tango_cannot_hold_as_written_are_refused(properties: dict, name: str, words: str) -> None:
    """They used to be written as their Python spelling (["{'a': 1}"]) and the server then refused to start."""
    document = {"servers": {"detpipe/x": {"EigerDetector": {name: {"properties": properties}}}}}
    with pytest.raises(ConfigError, match=words) as caught:
        DatabaseConfig.from_mapping(document)
    assert len(caught.value.problems) == 1


def test_a_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("servers: {detpipe/x: {EigerDetector: {det/eiger/1: {properties: {Note: 'caf\xe9'}}}}}".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_database_config(path, {})
