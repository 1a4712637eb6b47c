"""What a keyed pattern keeps of one event is bounded, whatever the event's size."""

from __future__ import annotations

import orjson

from choreo.envelope import new_event
from choreo.matchers.base import (
    SNAPSHOT_METADATA_BYTES,
    SNAPSHOT_PAYLOAD_BYTES,
    TRIMMED,
    event_from_snapshot,
    event_to_snapshot,
)


def test_a_small_event_is_kept_whole() -> None:
    event = new_event("order_received", {"order_id": "o-1", "items": [1, 2]}, source="shop",
                      correlation_id="o-1")
    snap = event_to_snapshot(event)
    assert snap["payload"] == event.payload and snap["metadata"] == event.metadata
    assert TRIMMED not in snap["payload"]


def test_a_large_payload_keeps_its_small_fields_and_names_what_it_left_out() -> None:
    payload = {"order_id": "o-2", "blob": "x" * 500_000, "order_value": 12.5,
               "lines": ["y" * 1000] * 200, "currency": "EUR"}
    event = new_event("order_received", payload, source="shop", correlation_id="o-2",
                      metadata={"extra_meta": "z" * 100_000})
    snap = event_to_snapshot(event)
    assert len(orjson.dumps(snap["payload"])) <= SNAPSHOT_PAYLOAD_BYTES
    assert len(orjson.dumps(snap["metadata"])) <= SNAPSHOT_METADATA_BYTES
    kept = snap["payload"]
    assert {k: kept[k] for k in ("order_id", "order_value", "currency")} == {
        "order_id": "o-2", "order_value": 12.5, "currency": "EUR"}
    assert kept[TRIMMED]["fields"] == ["blob", "lines"]
    assert kept[TRIMMED]["original_bytes"] == len(orjson.dumps(payload))
    again = event_from_snapshot(snap)  # what an action fired later is built from
    assert again.correlation_id == "o-2" and again.payload["order_id"] == "o-2"
    assert snap["metadata"][TRIMMED]["fields"] == ["extra_meta"]
