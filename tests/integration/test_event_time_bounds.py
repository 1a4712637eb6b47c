"""Event time bounded by the wall clock, and a poison record among good ones, on a real broker.

One event stamped in 2100 used to move its partition's watermark there: a flow twenty seconds
old got its timeout action, its next event was dead-lettered as `late`, and a replayed event
was no longer caught as a duplicate. Now such an event is dead-lettered as `future` and
moves nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest

from choreo.dead_letter import read_dead_letter_headers
from choreo.envelope import iso_from_ts, new_event
from choreo.kafka_io import envelopes, send_all, send_events
from tests.integration.conftest import Worker, wait_until

CONFIG = """
[topics]
prefix = ""

[defaults]
allowed_lateness = "0s"
idle_timeout = "1h"      # the watermark moves only with event time here

[[patterns]]
id = "checkout"
kind = "sequence"
steps = ["checkout_started", "order_placed"]
max_interval = "10m"
action = "confirm_order"
capability = "orders"
timeout_action = "escalate_stalled_checkout"
timeout_capability = "support"
"""
YEAR_2100 = 4_102_444_800.0


def ev(event_type: str, at: float, corr: str) -> dict:
    return new_event(event_type, {"n": 1}, source="test", correlation_id=corr,
                     timestamp=iso_from_ts(at)).as_dict()


def feed(worker: Worker, *events: dict) -> None:
    asyncio.run(send_events(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                            events))


@pytest.fixture(scope="module")
def worker(make_worker) -> Worker:  # noqa: ANN001
    return make_worker(CONFIG)


def dead_letters(worker: Worker, *keys: str) -> list[tuple[bytes | None, dict[str, str]]]:
    """The dead-lettered records with these keys: (value, dead-letter headers)."""
    return [(r.value, read_dead_letter_headers(r.headers))
            for r in worker.read(worker.choreography.topics.dead_letter_topic, idle=0.5)
            if r.key is not None and r.key.decode() in keys]


def actions(worker: Worker, capability: str, corr: str) -> list[dict]:
    topic = worker.choreography.topics.capability_topic(capability)
    return [a for a in envelopes(worker.read(topic, idle=0.5))
            if a["metadata"].get("correlation_id") == corr]


def watermarks(worker: Worker) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in worker.get("/metrics").decode().splitlines()
            if line.startswith("choreo_watermark_seconds{")]


def test_a_far_future_event_is_dead_lettered_and_the_flow_around_it_goes_on(worker: Worker):
    corr = f"flow-{uuid.uuid4().hex[:8]}"
    t0 = time.time() - 20
    started = ev("checkout_started", t0, corr)
    future = ev("page_viewed", YEAR_2100, corr)  # same key: the flow's own partition
    feed(worker, started, future)
    [(value, info)] = wait_until(lambda: dead_letters(worker, corr), timeout=90)
    assert value == orjson.dumps(future)
    assert info["stage"] == "ingest" and "max_future_skew" in info["detail"]

    duplicates = worker.metric("choreo_duplicates_total", stage="engine")
    feed(worker, started)  # a replay is still caught: the de-dup horizon did not move
    wait_until(lambda: worker.metric("choreo_duplicates_total", stage="engine") > duplicates)
    feed(worker, ev("order_placed", t0 + 10, corr))  # on time: the watermark did not move
    [confirmed] = wait_until(lambda: actions(worker, "orders", corr), timeout=60)
    assert confirmed["payload"]["action"] == "confirm_order"

    assert actions(worker, "support", corr) == []  # no timeout fired
    assert [info["reason"] for _v, info in dead_letters(worker, corr)] == ["future"]
    wait_until(lambda: watermarks(worker))
    assert max(watermarks(worker)) < time.time() + 3600


def test_a_too_deep_record_among_events_is_dead_lettered_and_the_others_act(worker: Worker):
    topic = worker.choreography.topics.events_topic
    flows = [f"deep-{uuid.uuid4().hex[:6]}-{n}" for n in range(20)]
    now = time.time()
    # It would complete its flow: the action carrying its payload could not be written.
    deep = orjson.dumps(ev("order_placed", now, "deep")).replace(
        b'"payload":{', b'"payload":{"x":' + b"[" * 300 + b"]" * 300 + b",", 1)
    records = [(b"deep", orjson.dumps(ev("checkout_started", now - 1, "deep")))]
    records += [(f.encode(), orjson.dumps(ev("checkout_started", now, f))) for f in flows[:10]]
    records += [(b"deep", deep), (b"empty", None), (b"bad", b"{not json")]
    records += [(f.encode(), orjson.dumps(ev("checkout_started", now, f))) for f in flows[10:]]
    records += [(f.encode(), orjson.dumps(ev("order_placed", now + 1, f))) for f in flows]
    asyncio.run(send_all(worker.broker.bootstrap, topic, records))

    def confirmed() -> set[str]:
        topic = worker.choreography.topics.capability_topic("orders")
        return {a["metadata"]["correlation_id"] for a in envelopes(worker.read(topic, idle=0.5))}

    wait_until(lambda: set(flows) <= confirmed(), timeout=90)
    found = wait_until(lambda: (lambda d: d if len(d) == 3 else None)(
        dead_letters(worker, "deep", "empty", "bad")))
    assert {info["reason"]: value for value, info in found} == {
        "too_deep": deep, "empty": None, "not_json": b"{not json"}
    assert worker.process.poll() is None
