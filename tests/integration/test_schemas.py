"""Event schemas on a real broker: a violating event is dead-lettered, a valid one fires."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from choreo.dead_letter import read_dead_letter_headers
from choreo.kafka_io import envelopes, send_all
from choreo.samples import order
from choreo.settings import BUNDLED_CONFIG
from tests.integration.conftest import wait_until

SCHEMAS = """
[schemas]
base = { required = ["metadata"] }

[schemas.types."order_received"]
type = "object"
required = ["order_id", "items"]
properties = { order_id = { type = "string" }, items = { type = "array", minItems = 1, items = { type = "object", required = ["sku", "quantity"], properties = { quantity = { type = "integer", minimum = 1 } } } } }
"""  # noqa: E501


def test_a_violating_event_is_dead_lettered_and_a_valid_one_fires(make_worker):
    worker = make_worker(BUNDLED_CONFIG.read_text() + SCHEMAS)
    topics = worker.choreography.topics
    suffix = uuid.uuid4().hex[:6]
    valid = order(f"ord-ok-{suffix}", [("SKU-BOOK", 1)], 12.0)
    invalid = order(f"ord-bad-{suffix}", [("SKU-BOOK", 0)], 12.0)
    records = [(b"bad", orjson.dumps(invalid)), (b"ok", orjson.dumps(valid))]
    asyncio.run(send_all(worker.broker.bootstrap, topics.events_topic, records))

    wait_until(lambda: worker.metric("choreo_dead_lettered_total", reason="schema_violation"))
    dead = [r for r in worker.read(topics.dead_letter_topic) if r.key == b"bad"]
    assert len(dead) == 1
    assert dead[0].value == records[0][1], "the original bytes are kept"
    info = read_dead_letter_headers(dead[0].headers)
    assert info["reason"] == "schema_violation"
    assert info["stage"] == "ingest"
    assert info["detail"] == (
        "payload.items[0].quantity: 0 is less than the minimum of 1 (schema order_received)")

    inventory = topics.capability_topic("inventory_management")

    def fired() -> list[dict]:
        return [a for a in envelopes(worker.read(inventory))
                if a["payload"]["trigger"]["event_ids"] in ([valid["event_id"]],
                                                            [invalid["event_id"]])]

    actions = wait_until(fired)
    assert [a["payload"]["trigger"]["event_ids"] for a in actions] == [[valid["event_id"]]]
    assert actions[0]["payload"]["action"] == "check_inventory"
    assert worker.metric("choreo_dead_lettered_total", reason="schema_violation") == 1
