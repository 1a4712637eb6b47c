"""Actions that would not fit the producer: the engine dead-letters what fired them."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from choreo.actions import Action, RecordRefused, build_action, encode_record, record_size
from choreo.app import create_app
from choreo.config import load_choreography
from choreo.dead_letter import read_dead_letter_headers
from choreo.envelope import new_event
from choreo.samples import order
from choreo.settings import BUNDLED_CONFIG, Settings
from tests.agents.conftest import record_sends
from tests.agents.test_match_events import agent
from topology import wire

pytestmark = pytest.mark.asyncio


async def sent_to(sent, topic: str, count: int, timeout: float = 10.0) -> None:  # noqa: ANN001
    """Wait until `count` records went to `topic`: a batch may still be running after put()."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(sent.records.get(topic, [])) < count:
        assert loop.time() < deadline, sent.records.keys()
        await asyncio.sleep(0.01)


def sized_order(order_id: str, size: int, value: float = 2500.0) -> bytes:
    """An order_received record of exactly `size` bytes."""
    envelope = order(order_id, [("SKU-BOOK", 1)], value, note="")
    base = len(orjson.dumps(envelope))
    envelope["payload"]["note"] = "x" * (size - base)
    raw = orjson.dumps(envelope)
    assert len(raw) == size
    return raw


@pytest.fixture(params=[1, 500], ids=["one-by-one", "batched"])
def engine(request, tmp_path):  # noqa: ANN001, ANN201
    settings = Settings(broker="kafka://127.0.0.1:1", store="memory://", data_dir=tmp_path,
                        batch_size=request.param)
    parts = wire(create_app(settings, load_choreography(BUNDLED_CONFIG)))
    parts.app.finalize()
    parts.app.conf.store = "memory://"
    return parts, record_sends(parts.runtime)


async def test_an_event_whose_actions_would_not_fit_is_dead_lettered_and_its_neighbours_act(
        engine):
    parts, sent = engine
    runtime = parts.runtime
    limit = runtime.choreography.defaults.max_event_bytes
    assert runtime.app.conf.producer_max_request_size > limit, "room for the dead letter"
    big = sized_order("ord-big", limit - 200)  # accepted: under max_event_bytes
    async with agent(runtime, "match_events").test_context() as ag:
        await ag.put(value=orjson.dumps(order("ord-a", [("SKU-BOOK", 1)], 10.0)), key=b"ord-a")
        await ag.put(value=big, key=b"ord-big")
        await ag.put(value=orjson.dumps(order("ord-b", [("SKU-BOOK", 1)], 10.0)), key=b"ord-b")
        await sent_to(sent, "capability.inventory_management", 2)
        await sent_to(sent, "events.dlq", 1)
    inventory = [orjson.loads(v) for v in sent.values("capability.inventory_management")]
    assert [a["metadata"]["correlation_id"] for a in inventory] == ["ord-a", "ord-b"]
    assert "capability.fraud_detection" not in sent.records
    [(key, value, headers)] = sent.records["events.dlq"]
    assert (key, value) == (b"ord-big", big), "the original record, once"
    info = read_dead_letter_headers(headers)
    assert info["reason"] == "action_too_large"
    assert (info["stage"], info["topic"], info["offset"]) == ("actions", "events", "1")
    for pattern, action in (("order-received", "check_inventory"),
                            ("high-value-order", "request_manual_review")):
        assert f"pattern {pattern}, action {action}" in info["detail"]
    assert f"over the limit of {limit}" in info["detail"]
    assert len(value) + sum(len(k) + len(v) for k, v in headers) < (
        runtime.app.conf.producer_max_request_size)


async def test_an_event_nested_too_deep_to_copy_into_an_action_is_dead_lettered(engine):
    """Refused at parse (`max_event_depth`), before an action could copy it past the 254
    levels orjson writes; `action_unencodable` stays the guard behind that."""
    parts, sent = engine
    runtime = parts.runtime
    envelope = order("ord-deep", [("SKU-BOOK", 1)], 10.0, note="N")
    raw = orjson.dumps(envelope).replace(b'"note":"N"', b'"note":' + b"[" * 300 + b"]" * 300)
    async with agent(runtime, "match_events").test_context() as ag:
        await ag.put(value=raw, key=b"ord-deep")
        await ag.put(value=orjson.dumps(order("ord-c", [("SKU-BOOK", 1)], 10.0)), key=b"ord-c")
        await sent_to(sent, "capability.inventory_management", 1)
        await sent_to(sent, "events.dlq", 1)
    inventory = [orjson.loads(v) for v in sent.values("capability.inventory_management")]
    assert [a["metadata"]["correlation_id"] for a in inventory] == ["ord-c"]
    [(_key, value, headers)] = sent.records["events.dlq"]
    assert value == raw
    assert read_dead_letter_headers(headers)["reason"] == "too_deep"


async def test_a_deadline_action_that_would_not_fit_goes_to_the_dead_letter_topic_without_data(
        engine):
    parts, sent = engine
    keyed = parts.keyed
    trigger = new_event("order_received", {"blob": "x" * 2_000_000}, source="t",
                        correlation_id="ord-t")
    action = build_action(pattern_id="p", action="check_inventory",
                          capability="inventory_management", priority=1, triggers=[trigger])
    assert action.fired_by is None, "no record is being processed: a deadline fired it"
    await keyed.send([action], None)
    assert "capability.inventory_management" not in sent.records
    [(key, value, headers)] = sent.records["events.dlq"]
    assert key == b"ord-t"
    stub = orjson.loads(value)
    assert stub["event_id"] == action.event.event_id and stub["payload"]["data"] is None
    info = read_dead_letter_headers(headers)
    assert info["reason"] == "action_too_large" and "fired by a deadline" in info["detail"]


def test_encode_record_counts_as_the_producer_does():
    event = new_event("x.y", {"blob": "x" * 1000}, source="t")
    value = event.to_bytes()
    size = record_size(b"k", value, [("h", b"v")])
    assert encode_record(event, b"k", size, lambda _v: [("h", b"v")]) == (value,
                                                                         [("h", b"v")])
    with pytest.raises(RecordRefused) as refused:
        encode_record(event, b"k", size - 1, lambda _v: [("h", b"v")])
    assert refused.value.reason == "too_large" and refused.value.size == size
    assert Action("c", 1, event) == Action("c", 1, event, fired_by=object())


def test_the_producer_can_dead_letter_any_record_the_broker_delivers():
    """A record refused as larger than a small max_event_bytes is still dead-lettered whole."""
    from choreo.actions import BROKER_MESSAGE_BYTES, producer_request_size

    for max_event_bytes in (256, 64 * 1024, 1024 * 1024, 4 * 1024 * 1024):
        room = producer_request_size(max_event_bytes)
        assert room >= max(max_event_bytes, BROKER_MESSAGE_BYTES) + 1000 + 200


async def test_a_record_the_producer_refuses_as_too_large_is_dead_lettered_not_a_crash(engine):
    """Should the producer still refuse a record the size check let through (its own limit
    configured lower), the send path dead-letters it like any action that does not fit."""
    from types import SimpleNamespace

    from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
    from faust.exceptions import ProducerSendError

    from choreo.app import Runtime

    async def refusing(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            raise MessageSizeTooLargeError("The message is 999 bytes when serialized")
        except MessageSizeTooLargeError as exc:
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc

    async def down(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            raise KafkaConnectionError("broker gone")
        except KafkaConnectionError as exc:
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc

    parts, sent = engine
    runtime = parts.runtime
    topic = runtime.capability_topic("inventory_management")
    fake = SimpleNamespace(app=SimpleNamespace(producer=SimpleNamespace(send=refusing)))
    with pytest.raises(RecordRefused) as refused:
        await Runtime.produce(fake, topic, b"k", b"v")
    assert refused.value.reason == "too_large" and "999 bytes" in refused.value.detail
    fake.app.producer.send = down
    with pytest.raises(ProducerSendError):  # the broker's fault: no commit, read again
        await Runtime.produce(fake, topic, b"k", b"v")

    async def produce(topic, key, value, headers=None):  # noqa: ANN001, ANN202
        if b"ord-huge" in value:
            raise RecordRefused("too_large", "The message is 999 bytes when serialized")
        return await topic.send(key=key, value=value, headers=headers)

    runtime.produce = produce
    raw = orjson.dumps(order("ord-huge", [("SKU-BOOK", 1)], 10.0))
    async with agent(runtime, "match_events").test_context() as ag:
        await ag.put(value=raw, key=b"ord-huge")
        await ag.put(value=orjson.dumps(order("ord-d", [("SKU-BOOK", 1)], 10.0)), key=b"ord-d")
        await sent_to(sent, "capability.inventory_management", 1)
        await sent_to(sent, "events.dlq", 1)
    inventory = [orjson.loads(v) for v in sent.values("capability.inventory_management")]
    assert [a["metadata"]["correlation_id"] for a in inventory] == ["ord-d"]
    [(_key, value, headers)] = sent.records["events.dlq"]
    assert value == raw
    assert read_dead_letter_headers(headers)["reason"] == "action_too_large"
