"""Malformed records for the ingestion fuzz tests, from a fixed seed.

Each generator gives bytes (or None for a tombstone) that must be refused by
`parse_event`; `malformed` tags each with the reason the engine is expected to give.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import orjson

from choreo.envelope import InvalidEvent, parse_event

MAX_EVENT_BYTES = 64 * 1024  # the fuzz worker's max_event_bytes


def _valid(rng: random.Random) -> dict:
    return {"event_id": f"ev-{rng.getrandbits(48):x}", "event_type": "order_received",
            "timestamp": "2026-11-21T10:00:00Z", "source": "fuzz",
            "payload": {"order_id": f"ord-{rng.randrange(10**6)}", "order_value": 12.5,
                        "items": [{"sku": "SKU-BOOK", "quantity": 1}]},
            "metadata": {"correlation_id": f"ord-{rng.randrange(10**6)}"}}


def random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randrange(0, 300))


def truncated_json(rng: random.Random) -> bytes:
    whole = orjson.dumps(_valid(rng))
    return whole[: rng.randrange(0, len(whole))]


WRONG_VALUES = [0, 1.5, -1, True, False, None, [], [1, "a"], {}, {"x": {"y": 1}}, "", " "]


def wrong_types(rng: random.Random) -> bytes:
    event = _valid(rng)
    field = rng.choice(["event_id", "event_type", "source", "payload", "metadata", "timestamp",
                        "metadata.correlation_id", "metadata.causation_id", "missing"])
    if field == "missing":
        del event[rng.choice(["event_id", "event_type", "timestamp", "source", "payload"])]
    elif field.startswith("metadata."):
        event["metadata"][field.split(".")[1]] = rng.choice([0, 1.5, True, [], {}, ["x"]])
    else:
        allowed = {"payload": lambda v: isinstance(v, dict),
                   "metadata": lambda v: v is None or isinstance(v, dict)}.get(field)
        choices = [v for v in WRONG_VALUES if not (allowed and allowed(v))
                   and not (isinstance(v, str) and v and field != "timestamp")]
        event[field] = rng.choice(choices)
    return orjson.dumps(event)


def not_an_object(rng: random.Random) -> bytes:
    return orjson.dumps(rng.choice([[], [_valid(rng)], 42, -0.0, "order_received", None, True,
                                    "x" * rng.randrange(100)]))


def huge_payload(rng: random.Random) -> bytes:
    event = _valid(rng)
    size = rng.randrange(MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES * 3)
    event["payload"]["blob"] = "x" * size
    return orjson.dumps(event)


def deep_nesting(rng: random.Random) -> bytes:
    depth = rng.choice([rng.randrange(2, 200), rng.randrange(1000, 3000)])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    inner = opener * depth + b"1" + closer * depth
    if rng.random() < 0.5:  # inside an envelope that lacks its source
        event = _valid(rng)
        del event["source"]
        return orjson.dumps(event)[:-1] + b',"deep":' + inner + b"}"
    return inner


def _envelope_with(rng: random.Random, **fields: object) -> bytes:
    return orjson.dumps({**_valid(rng), **fields})


UNICODE_CASES: list[Callable[[random.Random], bytes]] = [
    lambda r: b'{"event_type": "\xc0\xaf"}',                      # overlong encoding
    lambda r: b"\xef\xbb\xbf" + orjson.dumps(_valid(r)),          # UTF-8 BOM
    lambda r: orjson.dumps(_valid(r))[:-2] + b'\xed\xa0\x80"}',   # encoded surrogate
    lambda r: b'{"event_id": "\\ud800", "x": ' + b"1}",             # lone surrogate escape
    lambda r: r.randbytes(8) + "\U0001f4a5".encode() + b"\xff",
    lambda r: _envelope_with(r, event_type="order\u202ereceived"),  # right-to-left override
    lambda r: _envelope_with(r, event_type="order\x00received"),
    lambda r: _envelope_with(r, event_type="\U0001f4e6.received"),
    lambda r: _envelope_with(r, event_type="order received"),
    lambda r: _envelope_with(r, event_type=".order"),
    lambda r: _envelope_with(r, timestamp="\uff12\uff10\uff12\uff16-11-21T10:00:00Z"),
    lambda r: _envelope_with(r, timestamp="2026-11-21T10:00:00"),
    lambda r: _envelope_with(r, timestamp="yesterday \ufffe"),
    lambda r: _envelope_with(r, event_id="\u200b", source="\U0010ffff", event_type=""),
]


def unicode_edges(rng: random.Random) -> bytes:
    return rng.choice(UNICODE_CASES)(rng)


def tombstone(rng: random.Random) -> None:
    return None


# (generator, weight): huge payloads are rare so that a run moves few megabytes.
GENERATORS: list[tuple[Callable[[random.Random], bytes | None], int]] = [
    (random_bytes, 250), (truncated_json, 200), (wrong_types, 250), (not_an_object, 80),
    (deep_nesting, 80), (unicode_edges, 128), (huge_payload, 2), (tombstone, 10),
]


def expected_reason(value: bytes | None) -> str:
    """The reason the engine gives, or raise AssertionError if the record is valid."""
    try:
        parse_event(value, MAX_EVENT_BYTES)
    except InvalidEvent as exc:
        return exc.reason
    raise AssertionError(f"fuzz generated a valid event: {value[:200]!r}")


def malformed(count: int, seed: int = 20261121, run: str = "fuzz"
              ) -> Iterator[tuple[bytes, bytes | None, str, str]]:
    """(key, value, reason, kind) for `count` malformed records, the same for the same seed."""
    rng = random.Random(seed)
    funcs = [g for g, _ in GENERATORS]
    weights = [w for _, w in GENERATORS]
    for index in range(count):
        func = rng.choices(funcs, weights)[0]
        value = func(rng)
        yield f"{run}-{index}".encode(), value, expected_reason(value), func.__name__
