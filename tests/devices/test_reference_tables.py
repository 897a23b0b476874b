"""The README's device reference is generated from the device classes: it names every property, attribute and
command each class declares, with what Jive shows for it, and a test fails as soon as the two differ."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tango.server import Device

from detpipe.devices.nexus_writer import NexusWriter
from detpipe.devices.reference_tables import reference_block, rewrite
from detpipe.devices.server import DEVICE_CLASSES
from detpipe.devices.tangodb.class_schema import BUILTIN_ATTRIBUTES, ClassSchema

README = Path(__file__).resolve().parents[2] / "README.md"


def first_column(block: str, header: str) -> set[str]:
    """The backquoted names in the first column of the table whose header row starts with ``header``."""
    table = block.split(f"| {header} |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE))


def test_the_readme_reference_is_what_the_classes_declare() -> None:
    text = README.read_text(encoding="utf-8")
    assert rewrite(text) == text, "the device classes changed: run `make reference` and commit README.md"


@pytest.mark.parametrize("device_class", DEVICE_CLASSES, ids=lambda cls: cls.__name__)
def test_each_class_block_lists_every_property_attribute_and_command(device_class: type[Device]) -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count(f"<!-- reference: {device_class.__name__} -->") == 1
    block = reference_block(device_class)
    schema = ClassSchema.of(device_class)
    assert first_column(block, "property") == schema.properties
    assert first_column(block, "attribute") == schema.attributes - set(BUILTIN_ATTRIBUTES)
    declared_commands = set(device_class.TangoClassClass.cmd_list)
    assert first_column(block, "command") == declared_commands


def test_make_reference_rewrites_a_stale_block_and_leaves_the_rest(tmp_path: Path) -> None:
    stale = tmp_path / "README.md"
    stale.write_text("# Intro\n\n<!-- reference: NexusWriter -->\n| old table |\n<!-- end reference -->\n\nOutro\n")
    run = subprocess.run([sys.executable, "-m", "detpipe.devices.reference_tables", str(stale)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert stale.read_text() == f"# Intro\n\n{reference_block(NexusWriter)}\n\nOutro\n"
    assert "| `saving_overwrite_policy` | enum: Abort, Overwrite | rw, memorized |" in stale.read_text()


@pytest.mark.parametrize(("content", "says"), [
    (None, "No such file"),
    ("# a README without markers\n", "no reference block"),
    ("<!-- reference: EigerDetecter -->\n<!-- end reference -->\n", "'EigerDetecter': not a detpipe device class"),
], ids=["missing file", "no block", "unknown class"])
def test_a_mistake_is_one_error_line_exit_2_and_the_file_unchanged(
        tmp_path: Path, content: str | None, says: str) -> None:
    target = tmp_path / "README.md"
    if content is not None:
        target.write_text(content)
    run = subprocess.run([sys.executable, "-m", "detpipe.devices.reference_tables", str(target)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines()[-1].startswith("python -m detpipe.devices.reference_tables: error: ")
    assert says in run.stderr.splitlines()[-1]
    assert "Traceback" not in run.stderr
    assert (target.read_text() if content is not None else None) == content
