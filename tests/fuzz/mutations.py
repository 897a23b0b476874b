"""Seeded, structure-aware mutations of detector stream messages: EIGER Stream V1 (JSON parts + blob), Stream
V2 (one CBOR map) and Karabo bridge 2.2 (msgpack header/payload pairs + array buffers) and 1.0 (one msgpack map).

Each mutation works on the message's own structure (a key of a JSON part, a CBOR map field, a bridge
header) as well as on its bytes, so it reaches the checks behind the first parse. No mutation turns a
message into a valid end of the series it belongs to: the fuzz tests interleave good frames after it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import cbor2
import msgpack

END_TYPES = {"dseries_end-1.0", "end"}  # never produced: the series must go on after a mutated message
# Victim frames are numbered from here: two high bits set, so no single flipped bit can turn a victim's id
# into a good frame's (a flip there is a corruption no receiver can tell from a real frame).
VICTIM_BASE = 3 << 20
MASK64 = (1 << 64) - 1


def extreme(rng: random.Random, *, msgpack_safe: bool = False) -> Any:
    """A value that a careless decoder mistakes for a good one: wrong type, huge, negative, NaN, text with
    NUL, deep nesting, an id of ≥ 2**63."""
    ints = [-1, -(2**63) - 1, 2**31, 2**32 + 1, 2**63, 2**64 - 1, 0]
    if not msgpack_safe:
        ints += [2**64 + 1, 10**400, -(10**30)]
    choices: list[Any] = [
        None, True, False, "", "x" * rng.randint(1, 5000), "nul\x00in text", "line\nbreak", "é\u202e",
        float("nan"), float("inf"), -float("inf"), 1e300, -1e-300, 1.5, [], {}, [[1, 2], [3]],
        {"nested": {"deeper": [1, {"deepest": None}]}}, nested(rng.randint(50, 900)), *ints,
        rng.randint(-(2**70), 2**70) if not msgpack_safe else rng.randint(-(2**63), 2**64 - 1),
    ]
    return rng.choice(choices)


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def flip_bits(rng: random.Random, data: bytes, count: int | None = None) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(count or rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))] if data else data


def garbage(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 3, 17, 256, 4096]))


def mutate_map(rng: random.Random, value: dict[str, Any], *, msgpack_safe: bool = False,
               protected: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One key changed to an extreme value, dropped, or added; type keys never become an end type."""
    out = dict(value)
    keys = [k for k in out if k not in protected]
    op = rng.choice(["set", "set", "set", "drop", "add"]) if keys else "add"
    if op == "drop":
        del out[rng.choice(keys)]
    elif op == "add":
        out[rng.choice(["extra", "series", "frame", "shape", "image_id", "series_id", "type", "htype"])] = \
            extreme(rng, msgpack_safe=msgpack_safe)
    else:
        key = rng.choice(keys)
        out[key] = extreme(rng, msgpack_safe=msgpack_safe)
    for key in ("htype", "type"):
        if isinstance(out.get(key), str) and out[key] in END_TYPES:
            out[key] = "dimage-1.0" if key == "htype" else "image"
    return out


def mutate_parts(rng: random.Random, parts: list[bytes], structured: Callable[[bytes], bytes | None]) -> list[bytes]:
    """A multipart mutation: ``structured`` changes one part's structure (None when it cannot), the rest are
    byte-level: truncate, flip bits, garbage, drop, duplicate, swap, add."""
    out = list(parts)
    op = rng.choice(["structure", "structure", "structure", "truncate", "flip", "garbage", "drop", "duplicate",
                     "swap", "add", "empty"])
    i = rng.randrange(len(out))
    if op == "structure" and (changed := structured(out[i])) is not None:
        out[i] = changed
    elif op == "truncate":
        out[i] = truncate(rng, out[i])
    elif op == "flip":
        out[i] = flip_bits(rng, out[i])
    elif op == "garbage":
        out[i] = garbage(rng)
    elif op == "drop" and len(out) > 1:
        del out[i]
    elif op == "duplicate":
        out.insert(i, out[i])
    elif op == "swap" and len(out) > 1:
        j = rng.randrange(len(out))
        out[i], out[j] = out[j], out[i]
    elif op == "empty":
        out[i] = b""
    else:
        out.append(garbage(rng))
    return out


def mutate_v1(rng: random.Random, parts: list[bytes]) -> list[bytes]:
    def structured(part: bytes) -> bytes | None:
        try:
            value = json.loads(part)
        except (ValueError, RecursionError):
            return None
        if not isinstance(value, dict):
            return None
        if rng.random() < 0.05:  # deeper than any encoder here would write
            depth = rng.randint(1000, 100_000)
            return b"[" * depth + b"0" + b"]" * depth
        try:
            return json.dumps(mutate_map(rng, value)).encode()
        except RecursionError:
            return None

    return mutate_parts(rng, parts, structured)


def mutate_v2(rng: random.Random, content: dict[str, Any], encoded: bytes) -> bytes:
    op = rng.random()
    if op < 0.55:
        changed = mutate_map(rng, content)
        if rng.random() < 0.3 and isinstance(changed.get("data"), dict):
            changed["data"] = {"threshold_1": rng.choice([
                extreme(rng), cbor2.CBORTag(40, [extreme(rng), b"\0" * 8]),
                cbor2.CBORTag(40, [[extreme(rng), 4], cbor2.CBORTag(69, b"\0" * 8)]),
                cbor2.CBORTag(40, [[2, 2], cbor2.CBORTag(56500, ["bslz4", extreme(rng), garbage(rng)])]),
                cbor2.CBORTag(40, [[2, 2], cbor2.CBORTag(56500, ["lz4", 0, b"\xff" * 12])]),
                cbor2.CBORTag(rng.choice([0, 1, 40, 56500, 69, 12345]), extreme(rng)),
            ])}
        try:
            return cbor2.dumps(cbor2.CBORTag(55799, changed))
        except (ValueError, TypeError, OverflowError, RecursionError):
            return encoded
    if op < 0.65:
        return b"\xd9\xd9\xf7" + b"\x81" * rng.randint(1000, 100_000) + b"\x00"
    if op < 0.75:
        return truncate(rng, encoded)
    if op < 0.9:
        return flip_bits(rng, encoded)
    if op < 0.95:
        return encoded[3:]  # no self-describe tag
    return garbage(rng)


def mutate_bridge(rng: random.Random, parts: list[bytes]) -> list[bytes]:
    def structured(part: bytes) -> bytes | None:
        try:
            value = msgpack.unpackb(part, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if not isinstance(value, dict):
            return None
        if "metadata" in value and isinstance(value["metadata"], dict) and rng.random() < 0.5:
            value = {**value, "metadata": mutate_map(rng, value["metadata"], msgpack_safe=True)}
        elif rng.random() < 0.3 and any(isinstance(v, dict) for v in value.values()):
            key = rng.choice([k for k, v in value.items() if isinstance(v, dict)])
            value = {**value, key: mutate_map(rng, value[key], msgpack_safe=True)}
        else:
            value = mutate_map(rng, value, msgpack_safe=True)
        if rng.random() < 0.1:
            value[rng.choice(["image.cellId", "image.pulseId", "modulesPresent"])] = rng.choice(
                [msgpack.ExtType(rng.randrange(128), b"x"), ["0", "1"], [[0, 1], [2]], [1.5], [-1], [2**64 - 1]])
        try:
            return msgpack.packb(value, use_bin_type=True)
        except (ValueError, TypeError, OverflowError, RecursionError):
            return None

    return mutate_parts(rng, parts, structured)


def bump_id(rng: random.Random, value: int) -> int:
    """Another id near ``value``, earlier or later (a leftover of an earlier series or a foreign stream)."""
    return max(0, value + rng.choice([-3, -1, 1, 2, 1000])) & MASK64
