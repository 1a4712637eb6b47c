"""The bundled e-commerce choreography end to end, through a real broker and worker."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from choreo.dead_letter import read_dead_letter_headers
from choreo.kafka_io import envelopes, send_all, send_events
from choreo.samples import order, sample_orders, with_short_windows
from choreo.settings import BUNDLED_CONFIG
from choreo.trail import build_trail, render
from tests.integration.conftest import Worker, wait_until


@pytest.fixture(scope="module")
def worker(make_worker) -> Worker:  # noqa: ANN001
    text = with_short_windows(BUNDLED_CONFIG.read_text()).replace(
        'idle_timeout = "2s"', 'idle_timeout = "2s"\nmax_event_bytes = 4096')
    return make_worker(text)


def feed(worker: Worker, events: list[dict]) -> None:
    asyncio.run(send_events(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                            events))


def records_for(worker: Worker, correlation_id: str) -> list[dict]:
    topics = worker.choreography.topics
    names = [topics.events_topic,
             *(topics.capability_topic(c) for c in worker.choreography.capabilities)]
    found = [e for e in envelopes(worker.read(*names))
             if e["metadata"].get("correlation_id") == correlation_id]
    return sorted(found, key=lambda e: e["timestamp"])


def test_each_sample_order_grows_exactly_its_expected_trail(worker: Worker):
    suffix = "-" + uuid.uuid4().hex[:6]
    samples = sample_orders(suffix)
    feed(worker, [envelope for _, envelope, _ in samples])
    ids = [envelope["metadata"]["correlation_id"] for _, envelope, _ in samples]

    def trails_complete():
        return all(render(build_trail(records_for(worker, i))) == expected
                   for i, (_, _, expected) in zip(ids, samples, strict=True))

    try:  # the sequence and absence deadlines pass after 4 to 8 s of event time
        wait_until(trails_complete, timeout=90)
    except AssertionError:
        pass  # the comparison below says which trail differs
    for (description, _envelope, expected), order_id in zip(samples, ids, strict=True):
        records = records_for(worker, order_id)
        assert render(build_trail(records)) == expected, description
        # Every action has its lifecycle: started, then completed, from the same worker.
        actions = [r for r in records if r["event_type"] == "action.requested"]
        for action in actions:
            effects = [r for r in records
                       if r["metadata"].get("causation_id") == action["event_id"]]
            kinds = [r["event_type"] for r in effects]
            assert kinds[0] == "action.started", (description, kinds)
            assert kinds[-1] == "action.completed", (description, kinds)
            assert all(r["source"] == f"agent.{action['payload']['capability']}"
                       for r in effects)


def test_bad_input_reaches_the_dead_letter_topic_and_nothing_else(worker: Worker):
    topics = worker.choreography.topics
    valid = order("ord-bad-ref", [("SKU-BOOK", 1)], 5.0)
    bad = [
        (b"bad-1", b"{\"event_type\": \"order_received\""),
        (b"bad-2", orjson.dumps({**valid, "payload": "not an object"})),
        (b"bad-3", orjson.dumps({k: v for k, v in valid.items() if k != "source"})),
        (b"bad-4", orjson.dumps({**valid, "timestamp": "2026-11-21T10:00:00"})),
        (b"bad-5", orjson.dumps({**valid, "payload": {"blob": "x" * 5000}})),
        (b"bad-6", b"\xff\xfe not utf-8"),
    ]
    before = worker.metric("choreo_dead_lettered_total")
    asyncio.run(send_all(worker.broker.bootstrap, topics.events_topic, bad))
    wait_until(lambda: worker.metric("choreo_dead_lettered_total") - before >= len(bad))

    dead = {r.key: r for r in worker.read(topics.dead_letter_topic)}
    source_offsets = {r.key: r for r in worker.read(topics.events_topic)}
    reasons = {}
    for key, value in bad:
        record = dead[key]
        assert record.value == value, "the original bytes are kept"
        info = read_dead_letter_headers(record.headers)
        origin = source_offsets[key]
        assert (info["topic"], int(info["partition"]), int(info["offset"])) == (
            origin.topic, origin.partition, origin.offset)
        reasons[key] = info["reason"]
    assert reasons == {b"bad-1": "not_json", b"bad-2": "wrong_type", b"bad-3": "missing_field",
                       b"bad-4": "bad_timestamp", b"bad-5": "too_large", b"bad-6": "not_json"}
    actions = envelopes(worker.read(*(topics.capability_topic(c)
                                       for c in worker.choreography.capabilities)))
    assert not [a for a in actions if a["payload"]["trigger"]["event_ids"] == [valid["event_id"]]]
    assert worker.get("/health/")  # still running


def test_a_duplicated_event_fires_its_pattern_once(worker: Worker):
    topics = worker.choreography.topics
    envelope = order(f"ord-dup-{uuid.uuid4().hex[:6]}", [("SKU-GPU", 1)], 15.0)
    order_id = envelope["payload"]["order_id"]
    before = worker.metric("choreo_duplicates_total", stage="engine")
    feed(worker, [envelope, envelope, envelope])

    def shortage_handled():
        return any(e["event_type"] == "suppliers_notified"
                   and e["metadata"].get("correlation_id") == order_id for e in worker.events())

    wait_until(shortage_handled)
    inventory = [a for a in envelopes(worker.read(topics.capability_topic("inventory_management")))
                 if a["metadata"].get("correlation_id") == order_id]
    assert len(inventory) == 1
    assert worker.metric("choreo_duplicates_total", stage="engine") - before == 2
    received = [e for e in worker.events() if e["event_type"] == "order_received"
                and e["metadata"].get("correlation_id") == order_id]
    assert len(received) == 3, "all three copies were on the topic"


def test_views_list_the_patterns_with_counts(worker: Worker):
    body = orjson.loads(worker.get("/patterns/"))
    by_id = {p["id"]: p for p in body["patterns"]}
    assert set(by_id) >= {"order-received", "high-value-order", "payment-failed-cancel"}
    assert by_id["order-received"]["counts"]["fired"] >= 1
    assert by_id["high-value-order"]["listens_to"] == [
        {"on": "order_received", "when": ["payload.order_value > 1000"]}]


def test_the_correlation_views_show_the_flow_as_the_topics_do(worker: Worker):
    suffix = "-" + uuid.uuid4().hex[:6]
    description, envelope, expected = sample_orders(suffix)[3]  # the declined payment
    order_id = envelope["metadata"]["correlation_id"]
    feed(worker, [envelope])
    wait_until(lambda: render(build_trail(records_for(worker, order_id))) == expected,
               timeout=90)

    trail = wait_until(lambda: (t := orjson.loads(worker.get(
        f"/correlations/{order_id}/trail/")))["lines"] == expected and t, timeout=30)
    assert trail["trail"][0]["label"] == "order_received"
    listed = orjson.loads(worker.get(f"/correlations/{order_id}/events/"))["events"]
    on_topic = [e for e in worker.events() if e["metadata"].get("correlation_id") == order_id]
    assert sorted(e["event_id"] for e in listed) == sorted(e["event_id"] for e in on_topic)
    assert [e["stream_position"] for e in listed] == list(range(len(listed)))
    assert [e["timestamp"] for e in listed] == sorted(e["timestamp"] for e in listed)
    by_id = {}
    for record in worker.read(worker.choreography.topics.events_topic):
        envelope = record.envelope()  # None for the malformed records of another test
        if envelope and "event_id" in envelope:
            by_id[envelope["event_id"]] = record
    for event in listed:  # each event's global position is where it sits on the topic
        record = by_id[event["event_id"]]
        assert (event["partition"], event["offset"]) == (record.partition, record.offset)
    with_lifecycle = orjson.loads(worker.get(f"/correlations/{order_id}/trail/?lifecycle=1"))
    assert "action.started" in "\n".join(with_lifecycle["lines"])
