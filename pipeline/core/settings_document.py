"""Settings written as text (DataPolicy.LoadPolicy, ``detpipe reduce --policy``, HitFinder.LoadParameters),
parsed with bounded cost.

YAML's aliases let 400 bytes expand to gigabytes (a "billion laughs" document took 34 s and 3.3 GB of a
server's memory), so a settings document is refused above 64 KiB, may not use aliases, and may not nest
deeper than the parser's recursion allows. JSON is YAML, so both spellings go through the same gate.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError, one_line

MAX_DOCUMENT_BYTES = 64 * 1024  # a complete policy is under 2 KiB, an OM monitor.yaml under 8 KiB


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors' aliases instead of expanding them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in settings",
                                              event.start_mark)
        return super().compose_node(parent, index)


def settings_mapping(text: str, source: str, what: str) -> dict[str, Any]:
    """The mapping in ``text`` (from ``source``, for the message; ``what`` it should hold, e.g. "data policy
    parameters"), or ``ConfigError``."""
    size = len(text.encode("utf-8", "replace"))
    if size > MAX_DOCUMENT_BYTES:
        raise ConfigError([f"{source} is {size} bytes; a settings document is at most {MAX_DOCUMENT_BYTES}"])
    try:
        document = yaml.load(text, Loader=_NoAliasLoader) or {}  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as err:
        raise ConfigError([f"{source} is not valid YAML/JSON ({one_line(err)})"]) from None
    except RecursionError:
        raise ConfigError([f"{source} nests too deeply"]) from None
    if not isinstance(document, dict):
        raise ConfigError([f"{source} must hold a mapping of {what}"])
    return document
