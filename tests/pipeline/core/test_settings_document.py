"""Settings documents (data policies, triage parameters) are parsed with bounded cost: an alias bomb, a huge or deeply nested text is refused
with a one-line reason before it can cost seconds or gigabytes."""

from __future__ import annotations

import time

import pytest

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.core.settings_document import MAX_DOCUMENT_BYTES, settings_mapping

# 400 bytes that expand to 9**9 list items through aliases (the "billion laughs" of YAML).
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


def test_json_and_yaml_mappings_are_read() -> None:
    assert settings_mapping('{"hits_only": true, "miss_fraction": 0.05}', "text", "x") == {"hits_only": True,
                                                                                          "miss_fraction": 0.05}
    assert settings_mapping("policy: keep-everything\n", "text", "x") == {"policy": "keep-everything"}
    assert settings_mapping("", "text", "x") == {}


@pytest.mark.parametrize(("text", "words"), [
    (ALIAS_BOMB, "aliases"),
    ("x" * (MAX_DOCUMENT_BYTES + 1), "at most"),
    ("[" * 20_000 + "]" * 20_000, "nests too deeply"),
    ("a: [1, 2", "not valid YAML"),
    ("- a\n- b\n", "mapping"),
])
def test_hostile_documents_are_refused_at_once(text: str, words: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=words) as caught:
        settings_mapping(text, "LoadPolicy's argument", "data policy parameters")
    assert time.perf_counter() - t0 < 5.0
    assert len(caught.value.problems) == 1 and "\n" not in caught.value.problems[0]
