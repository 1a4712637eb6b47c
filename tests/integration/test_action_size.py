"""An event near the size limit on a real broker: its action would not fit, so the event is
dead-lettered, and the partition it shares with its neighbours goes on."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from choreo.dead_letter import read_dead_letter_headers
from choreo.kafka_io import send_all
from choreo.samples import order
from choreo.settings import BUNDLED_CONFIG, Settings
from tables.pattern_state import partition_for
from tests.integration.conftest import Worker, wait_until
from tests.integration.test_hostile_input import lag

LIMIT = 1_031_000  # max_event_bytes: a 1.03 MB event is accepted, its action is not


def sized(order_id: str, size: int) -> bytes:
    """An order_received record of exactly `size` bytes (value 10: one action)."""
    envelope = order(order_id, [("SKU-BOOK", 1)], 10.0, note="")
    envelope["payload"]["note"] = "x" * (size - len(orjson.dumps(envelope)))
    raw = orjson.dumps(envelope)
    assert len(raw) == size
    return raw


def same_partition_ids(count: int) -> list[str]:
    """Order ids whose records all land on one partition of the events topic."""
    partitions, run = Settings().partitions, uuid.uuid4().hex[:6]
    ids = [f"ord-size-{run}-{n}" for n in range(200)]
    home = partition_for(ids[0], partitions)
    return [i for i in ids if partition_for(i, partitions) == home][:count]


def test_an_action_too_large_is_dead_lettered_and_the_partition_goes_on(make_worker):
    text = BUNDLED_CONFIG.read_text().replace(
        'idle_timeout = "30s"', f'idle_timeout = "30s"\nmax_event_bytes = {LIMIT}')
    worker: Worker = make_worker(text)
    topics = worker.choreography.topics
    first, big, last = same_partition_ids(3)
    too_large = sized(big, LIMIT - 200)  # ~1.03 MB: its action copies it, and more
    records = [(first.encode(), orjson.dumps(order(first, [("SKU-BOOK", 1)], 10.0))),
               (big.encode(), too_large),
               (last.encode(), orjson.dumps(order(last, [("SKU-BOOK", 1)], 10.0)))]
    asyncio.run(send_all(worker.broker.bootstrap, topics.events_topic, records))

    def completed() -> set[str]:
        return {e["metadata"].get("correlation_id") for e in worker.events()
                if e["event_type"] == "action.completed"
                and e["payload"]["action"] == "check_inventory"}

    wait_until(lambda: {first, last} <= completed(), timeout=120, every=2)
    dead = [r for r in worker.read(topics.dead_letter_topic) if r.key == big.encode()]
    assert len(dead) == 1 and dead[0].value == too_large, "the original record, once"
    info = read_dead_letter_headers(dead[0].headers)
    assert info["reason"] == "action_too_large" and info["stage"] == "actions"
    assert "pattern order-received, action check_inventory" in info["detail"]
    assert f"over the limit of {LIMIT}" in info["detail"]
    source = next(r for r in worker.read(topics.events_topic) if r.key == big.encode())
    assert (info["topic"], int(info["partition"]), int(info["offset"])) == (
        source.topic, source.partition, source.offset)
    actions = worker.read(topics.capability_topic("inventory_management"))
    assert big not in {orjson.loads(r.value)["metadata"]["correlation_id"] for r in actions}
    assert max(len(r.value) for r in actions) <= LIMIT
    assert worker.process.poll() is None, "the worker never stopped"
    wait_until(lambda: asyncio.run(lag(worker.broker.bootstrap, worker.name,
                                       topics.events_topic)) == 0, timeout=60, every=2)
