"""A 1 MB order through the bundled e-commerce choreography on a real broker: the keyed
patterns keep a trimmed snapshot of it, so no changelog record outgrows the producer or the
broker; the worker stays up, every order acts, and the partition is read to its end."""

from __future__ import annotations

import asyncio

import orjson

from choreo.dead_letter import read_dead_letter_headers
from choreo.kafka_io import send_all
from choreo.samples import order
from tests.integration.conftest import Worker, wait_until
from tests.integration.test_action_size import same_partition_ids
from tests.integration.test_hostile_input import lag

BIG = 1_000_000  # bytes: under the bundled max_event_bytes (1 MiB), its action fits too


def test_a_1mb_order_among_ordinary_ones_leaves_the_worker_up_and_every_order_acts(
        make_worker):
    worker: Worker = make_worker()
    topics = worker.choreography.topics
    ids = same_partition_ids(7)
    big, ordinary = ids[3], ids[:3] + ids[4:]
    envelope = order(big, [("SKU-BOOK", 1)], 10.0, note="")
    envelope["payload"]["note"] = "x" * (BIG - len(orjson.dumps(envelope)))
    too_big_for_state = orjson.dumps(envelope)
    records = [(i.encode(), too_big_for_state if i == big
                else orjson.dumps(order(i, [("SKU-BOOK", 1)], 10.0))) for i in ids]
    asyncio.run(send_all(worker.broker.bootstrap, topics.events_topic, records))

    def completed(action: str) -> set[str]:
        return {e["metadata"].get("correlation_id") for e in worker.events()
                if e["event_type"] == "action.completed" and e["payload"]["action"] == action}

    def big_ended() -> str | None:
        # Each worker copies the order into its result: the sequence order-to-shipment
        # holds the order while payment_successful waits in its buffer, 2 MB untrimmed.
        if big in completed("initiate_fulfillment"):
            return "acted"
        dead = [r for r in worker.read(topics.dead_letter_topic) if r.key == big.encode()]
        return read_dead_letter_headers(dead[0].headers)["reason"] if dead else None

    for action in ("check_inventory", "process_payment", "initiate_fulfillment"):
        wait_until(lambda action=action: set(ordinary) <= completed(action), timeout=180,
                   every=2)
    ended = wait_until(big_ended, timeout=120, every=2)
    assert ended in ("acted", "state_too_large", "action_too_large"), ended
    assert worker.process.poll() is None, "the worker never stopped"
    wait_until(lambda: asyncio.run(lag(worker.broker.bootstrap, worker.name,
                                       topics.events_topic)) == 0, timeout=120, every=2)
    assert worker.process.poll() is None
    if ended == "acted":  # its sequence went on, on trimmed snapshots
        view = orjson.loads(worker.get(f"/patterns/order-to-shipment/state/{big}/"))
        assert view["empty"] is False and view["key"] == big
