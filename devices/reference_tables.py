"""The README's device reference, written from the device classes themselves, so it cannot drift from what
Jive shows: properties (default, doc), attributes (type, unit, access, label and description) and commands.

``python -m detpipe.devices.reference_tables README.md`` rewrites the blocks between
``<!-- reference: <Class> -->`` and ``<!-- end reference -->``; ``make reference`` runs it, and a test fails when
the README and the classes disagree.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from tango import AttrDataFormat, AttrWriteType, CmdArgType
from tango.server import Device, attribute, device_property

from .server import DEVICE_CLASSES

BEGIN = "<!-- reference: {name} -->"
END = "<!-- end reference -->"
_BLOCK = re.compile(r"<!-- reference: (\w+) -->\n.*?<!-- end reference -->", re.DOTALL)
_TYPE_NAMES = {
    CmdArgType.DevBoolean: "bool", CmdArgType.DevShort: "int", CmdArgType.DevLong: "int", CmdArgType.DevLong64: "int",
    CmdArgType.DevUShort: "uint16", CmdArgType.DevULong: "uint", CmdArgType.DevULong64: "uint",
    CmdArgType.DevUChar: "uint8", CmdArgType.DevFloat: "float", CmdArgType.DevDouble: "float",
    CmdArgType.DevString: "str", CmdArgType.DevEnum: "enum", CmdArgType.DevEncoded: "encoded",
    CmdArgType.DevState: "state",
}


def reference_block(device_class: type[Device]) -> str:
    """The Markdown block of one class, markers included."""
    lines = [BEGIN.format(name=device_class.__name__), "| property | default | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {_default(prop)} | {_cell(prop.doc)} |" for name, prop in _members(device_class, device_property)]
    lines += ["", "| attribute | type, unit | access | label: description |", "|---|---|---|---|"]
    events = set(getattr(device_class, "EVENT_ATTRIBUTES", ()))
    for name, attr in _members(device_class, attribute):
        props = attr.att_prop
        unit = f", {props.unit}" if props.unit else ""
        access = "rw" if attr.attr_write in (AttrWriteType.READ_WRITE, AttrWriteType.WRITE) else "r"
        access += ", memorized" if attr.memorized else ""
        access += ", events" if name in events else ""
        label = f"{props.label}: " if props.label and props.label != name else ""
        lines.append(f"| `{name}` | {_type(attr)}{unit} | {access} | {_cell(label + props.description)} |")
    lines += ["", "| command | argument | what it does |", "|---|---|---|"]
    lines += [f"| `{name}` | {_argument(cmd)} | {_cell(_first_paragraph(cmd.__doc__))} |"
              for name, cmd in _commands(device_class)]
    return "\n".join([*lines, END])


def rewrite(text: str) -> str:
    """``text`` with every reference block replaced by the classes' current one; ``ValueError`` for a block
    naming a class ``detpipe server`` does not run."""
    classes = {cls.__name__: cls for cls in DEVICE_CLASSES}

    def block(match: re.Match[str]) -> str:
        if match.group(1) not in classes:
            raise ValueError(f"reference block of {match.group(1)!r}: not a detpipe device class "
                             f"({', '.join(classes)})")
        return reference_block(classes[match.group(1)])
    return _BLOCK.sub(block, text)


def _members(device_class: type[Device], kind: type) -> Iterator[tuple[str, object]]:
    """Members of ``kind`` in declaration order, base classes first, a redefinition in place of the original."""
    found: dict[str, object] = {}
    for klass in reversed(device_class.__mro__):
        for key, value in vars(klass).items():
            if isinstance(value, kind):
                found[getattr(value, "attr_name", None) or key] = value
            elif key in found:
                del found[key]
    yield from found.items()


def _commands(device_class: type[Device]) -> Iterator[tuple[str, object]]:
    seen: dict[str, object] = {}
    for klass in reversed(device_class.__mro__):
        for key, value in vars(klass).items():
            if callable(value) and getattr(value, "__tango_command__", False):
                seen[key] = value
    yield from sorted(seen.items())


def _type(attr: attribute) -> str:
    name = _TYPE_NAMES.get(attr.attr_type, str(attr.attr_type))
    if attr.attr_type is CmdArgType.DevEnum:
        name = "enum: " + ", ".join(attr.att_prop.enum_labels.split(","))  # pytango keeps them comma-joined
    if attr.attr_format is AttrDataFormat.SPECTRUM:
        return f"{name}[]"
    if attr.attr_format is AttrDataFormat.IMAGE:
        return f"{name}[][]"
    return name


def _argument(cmd: object) -> str:
    """The input's type and doc_in, as Jive shows them; "–" for a command without one."""
    (arg_type, doc_in), _ = getattr(cmd, "__tango_command__")[1][:2]
    if arg_type is CmdArgType.DevVoid:
        return "–"
    return f"{_TYPE_NAMES.get(arg_type, str(arg_type))}: {_cell(doc_in)}"


def _default(prop: device_property) -> str:
    if prop.mandatory:
        return "(mandatory)"
    value = prop.default_value
    if value in (None, "", [], ()):
        return "empty"
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detpipe.devices.reference_tables", description=__doc__)
    parser.add_argument("markdown", type=Path, help="file whose reference blocks are rewritten (README.md)")
    args = parser.parse_args(argv)
    try:
        text = args.markdown.read_text(encoding="utf-8")
        if not _BLOCK.search(text):
            raise ValueError(f"no reference block ('{BEGIN.format(name='<Class>')}' ... '{END}')")
        updated = rewrite(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        parser.error(f"{args.markdown}: {err}")
    if updated != text:
        args.markdown.write_text(updated, encoding="utf-8")
        print(f"{args.markdown}: device reference rewritten from the classes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
