"""The event envelope: what parses, what is refused and why, and events built in code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreo.envelope import (
    MAX_EVENT_DEPTH,
    MAX_ID_CHARS,
    InvalidEvent,
    check_event_time,
    new_event,
    parse_event,
)


def raw(envelope: Any) -> bytes:
    return orjson.dumps(envelope)


def reason_for(data: bytes | None, max_bytes: int = 1024 * 1024) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(data, max_bytes)
    return caught.value.reason


def test_a_valid_envelope_parses(envelope_factory):
    event = parse_event(raw(envelope_factory()))

    assert event.event_id == "evt-1"
    assert event.event_type == "order_received"
    assert event.timestamp == "2024-05-01T12:00:00Z"
    assert event.ts == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    assert event.source == "shop.checkout"
    assert event.payload == {"order_id": "ord-1", "order_value": 54.9}
    assert event.correlation_id == "ord-1"
    assert event.causation_id is None


# --- every reason an envelope is refused ------------------------------------------------------

def test_no_value_is_empty():
    assert reason_for(None) == "empty"


def test_too_many_bytes_is_too_large(envelope_factory):
    data = raw(envelope_factory(payload={"blob": "x" * 500}))

    with pytest.raises(InvalidEvent) as caught:
        parse_event(data, max_bytes=len(data) - 1)

    assert caught.value.reason == "too_large"
    assert f"{len(data)} bytes exceeds the limit of {len(data) - 1}" in caught.value.detail


def test_exactly_the_limit_is_accepted(envelope_factory):
    data = raw(envelope_factory())

    assert parse_event(data, max_bytes=len(data)).event_id == "evt-1"


@pytest.mark.parametrize("data", [
    pytest.param(b"", id="zero-bytes"),
    pytest.param(b'{"event_type": "order_received"', id="truncated"),
    pytest.param(b"\xff\xfe not utf-8", id="not-utf8"),
    pytest.param(b"{'event_id': 'single quotes'}", id="single-quotes"),
    pytest.param(b"NaN", id="nan"),
])
def test_bytes_that_are_not_json(data: bytes):
    assert reason_for(data) == "not_json"


@pytest.mark.parametrize("data", [b"[]", b'"order_received"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object(data: bytes):
    assert reason_for(data) == "not_object"


@pytest.mark.parametrize("name", ["event_id", "event_type", "timestamp", "source", "payload"])
def test_each_required_field(envelope_factory, name: str):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw(envelope_factory(omit=[name])))

    assert caught.value.reason == "missing_field"
    assert name in caught.value.detail


def test_every_missing_field_is_named(envelope_factory):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw(envelope_factory(omit=["source", "payload"])))

    assert caught.value.detail == "missing required field(s): source, payload"


@pytest.mark.parametrize(("fields", "detail"), [
    ({"event_id": 17}, "event_id must be a non-empty string, got number"),
    ({"event_id": ""}, "event_id must be a non-empty string, got string"),
    ({"event_type": None}, "event_type must be a non-empty string, got null"),
    ({"source": ["shop"]}, "source must be a non-empty string, got array"),
    ({"payload": "not an object"}, "payload must be an object, got string"),
    ({"payload": None}, "payload must be an object, got null"),
    ({"metadata": []}, "metadata must be an object, got array"),
    ({"metadata": {"correlation_id": 5}}, "metadata.correlation_id must be a string, got number"),
    ({"metadata": {"causation_id": True}}, "metadata.causation_id must be a string, got boolean"),
    ({"timestamp": 1714564800}, "timestamp must be a string, got number"),
])
def test_fields_of_the_wrong_type(envelope_factory, fields: dict[str, Any], detail: str):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw(envelope_factory(**fields)))

    assert caught.value.reason == "wrong_type"
    assert caught.value.detail == detail


@pytest.mark.parametrize("event_type", [
    "order received", "order..received", ".order", "order.", "order/received", "ordér", "*",
])
def test_bad_event_types(envelope_factory, event_type: str):
    assert reason_for(raw(envelope_factory(event_type=event_type))) == "bad_event_type"


@pytest.mark.parametrize("event_type", [
    "order_received", "memory.create.completed", "agent.writer-1.completed", "v2.X_y-z.0",
])
def test_valid_event_types(envelope_factory, event_type: str):
    assert parse_event(raw(envelope_factory(event_type=event_type))).event_type == event_type


@pytest.mark.parametrize("timestamp", [
    "2024-05-01T12:00:00", "2024-05-01", "yesterday", "2024-13-01T00:00:00Z", "",
])
def test_bad_timestamps(envelope_factory, timestamp: str):
    assert reason_for(raw(envelope_factory(timestamp=timestamp))) == "bad_timestamp"


def test_a_timestamp_without_a_zone_says_how_to_fix_it(envelope_factory):
    with pytest.raises(InvalidEvent, match="has no zone"):
        parse_event(raw(envelope_factory(timestamp="2024-05-01T12:00:00")))


def test_invalid_event_carries_reason_and_detail():
    error = InvalidEvent("not_json", "unexpected end")

    assert (error.reason, error.detail, str(error)) == (
        "not_json", "unexpected end", "not_json: unexpected end")
    assert isinstance(error, ValueError)


# --- timestamps, metadata and accessors -------------------------------------------------------

NOON_UTC = datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(("timestamp", "expected"), [
    ("2024-05-01T12:00:00Z", NOON_UTC),
    ("2024-05-01T12:00:00+00:00", NOON_UTC),
    ("2024-05-01T14:00:00+02:00", NOON_UTC),
    ("2024-05-01T07:30:00-04:30", NOON_UTC),
    ("2024-05-01T12:00:00.250Z", NOON_UTC + timedelta(milliseconds=250)),
    ("2024-05-01T12:00:00.123456+00:00", NOON_UTC + timedelta(microseconds=123456)),
    ("2024-05-01T14:00:00.5+02:00", NOON_UTC + timedelta(milliseconds=500)),
])
def test_timestamps_with_zones_give_the_event_time(envelope_factory, timestamp: str,
                                                    expected: datetime):
    event = parse_event(raw(envelope_factory(timestamp=timestamp)))

    assert event.ts == pytest.approx(expected.timestamp(), abs=1e-6)
    assert event.timestamp == timestamp  # kept as written


@pytest.mark.parametrize("fields", [{"omit": ["metadata"]}, {"metadata": None}, {"metadata": {}}])
def test_metadata_is_optional(envelope_factory, fields: dict[str, Any]):
    event = parse_event(raw(envelope_factory(**fields)))

    assert event.metadata == {}
    assert event.correlation_id is None
    assert event.causation_id is None


def test_correlation_and_causation_accessors(envelope_factory):
    event = parse_event(raw(envelope_factory(
        metadata={"correlation_id": "ord-9", "causation_id": "evt-0", "tenant": "eu"})))

    assert (event.correlation_id, event.causation_id) == ("ord-9", "evt-0")
    assert event.metadata["tenant"] == "eu"


@pytest.mark.parametrize("value", [None, ""])
def test_null_or_empty_ids_in_metadata_mean_none(envelope_factory, value: str | None):
    event = parse_event(raw(envelope_factory(
        metadata={"correlation_id": value, "causation_id": value})))

    assert (event.correlation_id, event.causation_id) == (None, None)


def test_unknown_top_level_fields_are_ignored(envelope_factory):
    event = parse_event(raw(envelope_factory(schema="v9")))

    assert "schema" not in event.as_dict()


def test_context_is_what_conditions_see(envelope_factory):
    event = parse_event(raw(envelope_factory()))

    assert event.context() == {
        "payload": {"order_id": "ord-1", "order_value": 54.9},
        "metadata": {"correlation_id": "ord-1"},
        "source": "shop.checkout",
        "event_type": "order_received",
        "event_id": "evt-1",
        "timestamp": "2024-05-01T12:00:00Z",
    }


# --- events built in code ---------------------------------------------------------------------

def test_new_event_round_trips_through_the_wire():
    event = new_event("memory.create.completed", {"memory_id": "m-1", "tags": ["a", "b"]},
                      source="agent.memory", correlation_id="conv-7", causation_id="evt-3",
                      metadata={"tenant": "eu"})

    again = parse_event(event.to_bytes())

    assert again == event
    assert again.metadata == {"version": 1, "tenant": "eu", "correlation_id": "conv-7",
                              "causation_id": "evt-3"}


def test_new_event_fills_in_an_id_and_the_current_time():
    before = datetime.now(UTC).timestamp()
    first = new_event("ping", {}, source="test")
    second = new_event("ping", {}, source="test")
    after = datetime.now(UTC).timestamp()

    assert first.event_id != second.event_id
    assert before - 0.001 <= first.ts <= after + 0.001
    assert first.timestamp.endswith("Z")
    assert first.correlation_id is None


def test_new_event_refuses_what_parse_event_refuses():
    with pytest.raises(InvalidEvent) as caught:
        new_event("not a type", {}, source="test")

    assert caught.value.reason == "bad_event_type"


def test_new_event_keeps_a_given_id_and_timestamp():
    stamp = datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=2))).isoformat()

    event = new_event("ping", {}, source="test", event_id="fixed", timestamp=stamp)

    assert (event.event_id, event.timestamp, event.ts) == ("fixed", stamp, NOON_UTC.timestamp())


# --- properties -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
field_values = json_values | st.sampled_from(
    ["order_received", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00", "evt-1", ""])


def expect_valid_or_invalid_event(data: bytes) -> None:
    try:
        event = parse_event(data)
    except InvalidEvent as error:
        assert error.reason in {"empty", "too_large", "not_json", "not_object", "missing_field",
                                "wrong_type", "bad_event_type", "bad_timestamp", "too_deep",
                                "too_long"}
    else:
        assert parse_event(event.to_bytes()) == event


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes):
    expect_valid_or_invalid_event(data)


@given(json_values)
def test_arbitrary_json_never_raises_anything_else(value: Any):
    expect_valid_or_invalid_event(orjson.dumps(value))


@given(st.dictionaries(
    st.sampled_from(["event_id", "event_type", "timestamp", "source", "payload", "metadata"]),
    field_values, max_size=6,
))
def test_envelope_shaped_json_with_arbitrary_fields_never_raises_anything_else(
    fields: dict[str, Any],
):
    expect_valid_or_invalid_event(orjson.dumps(fields))


@given(st.text(min_size=1))
def test_arbitrary_timestamps_never_raise_anything_else(timestamp: str):
    envelope = {"event_id": "e", "event_type": "t", "timestamp": timestamp, "source": "s",
                "payload": {}}
    expect_valid_or_invalid_event(orjson.dumps(envelope))


@given(
    event_type=st.from_regex(r"\A[A-Za-z0-9_\-]{1,8}(\.[A-Za-z0-9_\-]{1,8}){0,3}\Z"),
    payload=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    correlation_id=st.none() | st.text(min_size=1, max_size=20),
    moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 1, 1),
                        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                   timezone(-timedelta(hours=8))])),
)
def test_any_event_built_in_code_round_trips(event_type: str, payload: dict[str, Any],
                                            correlation_id: str | None, moment: datetime):
    event = new_event(event_type, payload, source="test", correlation_id=correlation_id,
                      timestamp=moment.isoformat())

    again = parse_event(event.to_bytes())

    assert again == event
    assert again.ts == pytest.approx(moment.timestamp(), abs=1e-6)


# --- limits: what parses can be written again --------------------------------------------------


def nested(levels: int, opener: bytes = b'{"x":', closer: bytes = b"}") -> bytes:
    """An envelope whose payload holds `levels` - 2 more levels (the envelope is level 1 and
    the payload level 2), built as bytes: orjson would refuse to write it."""
    inner = opener * (levels - 2) + b"1" + closer * (levels - 2)
    return (b'{"event_id":"e","event_type":"order_received","timestamp":'
            b'"2024-05-01T12:00:00Z","source":"s","payload":{"deep":' + inner + b"}}")


@pytest.mark.parametrize(("opener", "closer"), [(b'{"x":', b"}"), (b"[", b"]")])
def test_an_event_nested_past_the_limit_is_too_deep(opener: bytes, closer: bytes):
    assert parse_event(nested(MAX_EVENT_DEPTH, opener, closer)).to_bytes()
    with pytest.raises(InvalidEvent) as caught:
        parse_event(nested(MAX_EVENT_DEPTH + 1, opener, closer))
    assert caught.value.reason == "too_deep"
    assert "max_event_depth" in caught.value.detail


def test_300_levels_are_refused_not_crashed_on_later():
    """The measured case: orjson reads 300 levels but cannot write them again."""
    deep = nested(300)
    with pytest.raises(TypeError):  # what the engine met when it wrote the action
        orjson.dumps(orjson.loads(deep))
    with pytest.raises(InvalidEvent) as caught:
        parse_event(deep)
    assert caught.value.reason == "too_deep"


def test_the_depth_limit_is_a_parameter():
    assert parse_event(nested(10), max_depth=10).payload
    with pytest.raises(InvalidEvent, match="too_deep"):
        parse_event(nested(11), max_depth=10)


def test_many_brackets_side_by_side_are_not_deep():
    items = b",".join(b'{"sku":[1]}' for _ in range(500))
    data = (b'{"event_id":"e","event_type":"t","timestamp":"2024-05-01T12:00:00Z",'
            b'"source":"s","payload":{"items":[' + items + b"]}}")
    assert len(parse_event(data).payload["items"]) == 500


@pytest.mark.parametrize("name", ["event_id", "event_type", "source",
                                  "metadata.correlation_id", "metadata.causation_id"])
def test_over_long_ids_are_too_long(envelope_factory, name: str):
    envelope = envelope_factory()
    envelope.setdefault("metadata", {})
    parent, _, field = name.rpartition(".")
    target = envelope["metadata"] if parent else envelope
    target[field] = "a" * MAX_ID_CHARS
    assert parse_event(raw(envelope))
    target[field] = "a" * (MAX_ID_CHARS + 1)
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw(envelope))
    assert caught.value.reason == "too_long"
    assert name in caught.value.detail


@given(levels=st.integers(1, 1100), kinds=st.lists(st.booleans(), min_size=1, max_size=8))
def test_whatever_parses_can_be_written_again(levels: int, kinds: list[bool]):
    """Any nesting up to past orjson's read limit: refused, or accepted and writable."""
    openers = [b'{"k":' if kinds[n % len(kinds)] else b"[" for n in range(levels)]
    closers = [b"}" if kinds[n % len(kinds)] else b"]" for n in reversed(range(levels))]
    payload = b"".join(openers) + b"0" + b"".join(closers)
    data = (b'{"event_id":"e","event_type":"t","timestamp":"2024-05-01T12:00:00Z",'
            b'"source":"s","payload":{"v":' + payload + b"}}")
    try:
        event = parse_event(data)
    except InvalidEvent as error:
        assert error.reason in {"too_deep", "not_json"}
        return
    assert parse_event(event.to_bytes()) == event


def test_an_event_far_ahead_of_the_clock_is_future(envelope_factory):
    event = parse_event(raw(envelope_factory(timestamp="2100-01-01T00:00:00Z")))
    now = datetime(2026, 12, 7, tzinfo=UTC).timestamp()
    with pytest.raises(InvalidEvent) as caught:
        check_event_time(event, now, 300)
    assert caught.value.reason == "future"
    assert "max_future_skew" in caught.value.detail


def test_an_event_within_the_skew_is_on_time(envelope_factory):
    event = parse_event(raw(envelope_factory(timestamp="2026-12-07T00:04:59Z")))
    now = datetime(2026, 12, 7, tzinfo=UTC).timestamp()
    check_event_time(event, now, 300)  # 299 s ahead: accepted
    check_event_time(event, now + 3600, 300)  # in the past: accepted
    with pytest.raises(InvalidEvent, match="future"):
        check_event_time(event, now, 60)
