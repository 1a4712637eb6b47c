"""The match_events agent through Faust's test_context(), with a memory store."""

from __future__ import annotations

import orjson
import pytest

from choreo.dead_letter import read_dead_letter_headers
from choreo.samples import order

pytestmark = pytest.mark.asyncio


def agent(runtime, name: str):
    return runtime.app.agents[name] if name in runtime.app.agents else next(
        a for a in runtime.app.agents.values() if a.name.endswith(name))


async def test_an_order_fires_its_actions_in_priority_order(runtime, sent):
    envelope = order("ord-1", [("SKU-BOOK", 1)], 2500.0)
    async with agent(runtime, "match_events").test_context() as ag:
        await ag.put(value=orjson.dumps(envelope), key=b"ord-1")
    fraud = sent.values("capability.fraud_detection")
    inventory = sent.values("capability.inventory_management")
    assert [orjson.loads(v)["payload"]["action"] for v in fraud] == ["request_manual_review"]
    assert [orjson.loads(v)["payload"]["action"] for v in inventory] == ["check_inventory"]
    action = orjson.loads(inventory[0])
    assert action["event_type"] == "action.requested"
    assert action["metadata"]["correlation_id"] == "ord-1"
    assert action["metadata"]["causation_id"] == envelope["event_id"]
    assert action["payload"]["data"] == envelope["payload"]
    assert action["payload"]["trigger"]["event_ids"] == [envelope["event_id"]]


async def test_a_duplicate_event_fires_nothing_the_second_time(runtime, sent):
    envelope = orjson.dumps(order("ord-2", [("SKU-BOOK", 1)], 10.0))
    async with agent(runtime, "match_events").test_context() as ag:
        await ag.put(value=envelope, key=b"ord-2")
        await ag.put(value=envelope, key=b"ord-2")
    assert len(sent.values("capability.inventory_management")) == 1


async def test_the_same_event_id_from_another_source_is_not_a_duplicate(runtime, sent):
    first = order("ord-3", [("SKU-BOOK", 1)], 10.0)
    second = {**first, "source": "shop.mobile"}
    async with agent(runtime, "match_events").test_context() as ag:
        await ag.put(value=orjson.dumps(first), key=b"ord-3")
        await ag.put(value=orjson.dumps(second), key=b"ord-3")
    assert len(sent.values("capability.inventory_management")) == 2


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (orjson.dumps({"event_type": "order_received"}), "missing_field"),
        (orjson.dumps({"event_id": 5, "event_type": "a", "timestamp": "2026-01-01T00:00:00Z",
                       "source": "s", "payload": {}}), "wrong_type"),
        (orjson.dumps({"event_id": "e", "event_type": "a", "timestamp": "yesterday",
                       "source": "s", "payload": {}}), "bad_timestamp"),
    ],
)
async def test_bad_input_goes_to_the_dead_letter_topic_with_its_bytes(runtime, sent, raw,
                                                                      reason):
    async with agent(runtime, "match_events").test_context() as ag:
        await ag.put(value=raw, key=b"k")
    [(key, value, headers)] = sent.records["events.dlq"]
    assert value == raw
    assert key == b"k"
    info = read_dead_letter_headers(headers)
    assert info["reason"] == reason
    assert info["stage"] == "ingest"
    assert info["topic"] == "events"
    assert not any(name.startswith("capability.") for name in sent.records)
