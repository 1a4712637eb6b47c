"""The security checks in the agents: ingest refuses, the engine signs, workers verify."""

from __future__ import annotations

import dataclasses
import time

import orjson
import pytest

from choreo.app import create_app
from choreo.config import parse_choreography
from choreo.dead_letter import read_dead_letter_headers
from choreo.envelope import event_from_mapping
from choreo.samples import order
from choreo.settings import BUNDLED_CONFIG, Settings
from choreo.signing import Key, Keyring, sign, verify
from tests.agents.conftest import record_sends
from topology import wire

pytestmark = pytest.mark.asyncio

K1 = "k1-secret-0123456789abcdef012345"
K2 = "k2-secret-0123456789abcdef012345"
SECURITY = """
[security]
require_signatures = true
max_age = "5m"
mask = ["payload.payment.card_number", "payload.payment.cvv"]

[security.publishers]
"shop.*" = ["order_received", "checkout_started"]
"agent.*" = ["*"]
"""
CARD = "4242424242424242"
PRODUCER = Keyring({"k2": Key(K2.encode())}, signing="k2")


@pytest.fixture
def runtime(tmp_path):  # noqa: ANN201
    settings = Settings(broker="kafka://127.0.0.1:1", store="memory://", data_dir=tmp_path,
                        signing_keys=f"k1={K1} k2={K2}", signing_key_id="k1")
    choreography = parse_choreography(BUNDLED_CONFIG.read_text() + SECURITY)
    rt = wire(create_app(settings, choreography)).runtime
    rt.app.finalize()
    rt.app.conf.store = "memory://"
    return rt


@pytest.fixture
def sent(runtime):  # noqa: ANN001, ANN201
    return record_sends(runtime)


def engine(runtime):  # noqa: ANN001, ANN201
    return next(a for a in runtime.app.agents.values() if a.name.endswith("match_events"))


def signed(envelope: dict, at: float | None = None, ring: Keyring = PRODUCER,
           key: bytes | None = None, topic: str = "events") -> list:
    """Signature headers for the envelope's bytes (`orjson.dumps`), sent with `key`."""
    return sign(ring, topic, key, orjson.dumps(envelope), time.time() if at is None else at)


def valid(ring: Keyring, topic: str, key: bytes | None, value: bytes, headers: list) -> bool:
    return verify(ring, topic, key, value, headers, time.time(), 300, 30) is None


async def test_a_signed_event_fires_and_its_action_is_signed_by_the_engine(runtime, sent):
    envelope = order("ord-s1", [("SKU-BOOK", 1)], 20.0)
    async with engine(runtime).test_context() as ag:
        await ag.put(value=orjson.dumps(envelope), key=b"ord-s1",
                     headers=signed(envelope, key=b"ord-s1"))
    [(key, value, headers)] = sent.records["capability.inventory_management"]
    assert dict(headers)["choreo.sig.key"] == b"k1"
    ring = Keyring({"k1": Key(K1.encode())})
    assert valid(ring, "capability.inventory_management", key, value, headers)
    assert not valid(ring, "capability.payment_processing", key, value, headers)
    assert "events.dlq" not in sent.records


@pytest.mark.parametrize("case", ["unsigned", "bad_signature", "unknown_key", "stale",
                                  "unauthorized", "unauthorized_type"])
async def test_refused_events_are_dead_lettered_with_the_reason(runtime, sent, case):
    envelope = order("ord-s2", [("SKU-BOOK", 1)], 20.0)
    envelope["payload"]["payment"].pop("card_number")  # nothing to mask: bytes unchanged
    headers = signed(envelope, key=b"ord-s2")
    if case == "unsigned":
        headers = []
    elif case == "bad_signature":
        envelope["payload"]["order_value"] = 2000.0
    elif case == "unknown_key":
        headers = signed(envelope, ring=Keyring({"k0": Key(K1.encode())}, signing="k0"),
                         key=b"ord-s2")
    elif case == "stale":
        headers = signed(envelope, at=time.time() - 3600, key=b"ord-s2")
    elif case == "unauthorized":
        envelope["source"] = "intruder"
        headers = signed(envelope, key=b"ord-s2")
    else:
        envelope["event_type"] = "payment_successful"
        headers = signed(envelope, key=b"ord-s2")
    raw = orjson.dumps(envelope)
    async with engine(runtime).test_context() as ag:
        await ag.put(value=raw, key=b"ord-s2", headers=headers)
    [(key, value, dlq_headers)] = sent.records["events.dlq"]
    info = read_dead_letter_headers(dlq_headers)
    assert info["reason"] == case.removesuffix("_type")
    assert info["stage"] == "ingest"
    assert (key, value) == (b"ord-s2", raw)
    assert "masked" not in info
    assert not any(name.startswith("capability.") for name in sent.records)


async def test_a_dead_lettered_event_has_its_sensitive_fields_masked(runtime, sent):
    envelope = order("ord-s3", [("SKU-BOOK", 1)], 20.0, card=CARD)
    async with engine(runtime).test_context() as ag:
        await ag.put(value=orjson.dumps(envelope), key=b"ord-s3")
    [(_key, value, headers)] = sent.records["events.dlq"]
    assert CARD.encode() not in value
    assert orjson.loads(value)["payload"]["payment"]["card_number"] == "[masked]"
    info = read_dead_letter_headers(headers)
    assert info["reason"] == "unsigned"
    assert info["masked"] == "payload.payment.card_number"


def action_record(runtime, ring: Keyring | None, source: str = "choreo.engine",  # noqa: ANN001, ANN201
                  topic: str = "capability.inventory_management", key: bytes = b"ord-w1"):
    from choreo.actions import build_action

    trigger = event_from_mapping(order("ord-w1", [("SKU-BOOK", 1)], 20.0, card=CARD))
    action = build_action(pattern_id="order-received", action="check_inventory",
                          capability="inventory_management", priority=1, triggers=[trigger])
    data = action.event.as_dict()
    data["source"] = source
    ev = event_from_mapping(data)
    raw = orjson.dumps(data)
    return ev, raw, (sign(ring, topic, key, raw, time.time()) if ring else [])


@pytest.mark.parametrize(("ring", "source", "reason"), [
    (None, "choreo.engine", "unsigned"),
    (Keyring({"k9": Key(K1.encode())}, signing="k9"), "choreo.engine", "unknown_key"),
    (Keyring({"k1": Key(K2.encode())}, signing="k1"), "choreo.engine", "bad_signature"),
    (PRODUCER, "shop.checkout", "unauthorized"),
])
async def test_a_forged_action_is_refused_without_running_the_handler(runtime, sent, ring,
                                                                      source, reason):
    ev, raw, headers = action_record(runtime, ring, source)
    agent = runtime.app.agents["handle_inventory_management_actions"]
    async with agent.test_context() as ag:
        await ag.put(value=raw, key=b"ord-w1", headers=headers)
    assert "events" not in sent.records, "no action.started, no results"
    [(key, value, dlq_headers)] = sent.records["capability.inventory_management.dlq"]
    info = read_dead_letter_headers(dlq_headers)
    assert info["reason"] == reason and info["stage"] == "worker.inventory_management"
    assert key == b"ord-w1"
    assert CARD.encode() not in value and info["masked"] == "payload.payment.card_number"
    worker = runtime.workers["inventory_management"]
    assert worker.handled.get(ev.event_id) is None, "a forged id must not mark one handled"


async def test_a_signed_action_runs_and_its_events_are_signed(runtime, sent):
    engine_ring = Keyring({"k1": Key(K1.encode())}, signing="k1")
    _ev, raw, headers = action_record(runtime, engine_ring)
    agent = runtime.app.agents["handle_inventory_management_actions"]
    async with agent.test_context() as ag:
        await ag.put(value=raw, key=b"ord-w1", headers=headers)
    published = sent.records["events"]
    assert [orjson.loads(v)["event_type"] for _k, v, _h in published] == [
        "action.started", "inventory_confirmed", "action.completed"]
    for key, value, event_headers in published:
        assert valid(engine_ring, "events", key, value, event_headers)


ENGINE = Keyring({"k1": Key(K1.encode())}, signing="k1")


@pytest.mark.parametrize(("topic", "key"), [
    ("capability.payment_processing", b"ord-w1"),  # signed for another capability
    ("capability.inventory_management", b"ord-other"),  # signed for another key
])
async def test_an_engine_action_copied_to_another_topic_or_key_is_refused(runtime, sent,
                                                                          topic, key):
    ev, raw, headers = action_record(runtime, ENGINE, topic=topic, key=key)
    agent = runtime.app.agents["handle_inventory_management_actions"]
    async with agent.test_context() as ag:
        await ag.put(value=raw, key=b"ord-w1", headers=headers)
    assert "events" not in sent.records, "the handler never ran"
    [(_key, _value, dlq_headers)] = sent.records["capability.inventory_management.dlq"]
    assert read_dead_letter_headers(dlq_headers)["reason"] == "bad_signature"
    assert runtime.workers["inventory_management"].handled.get(ev.event_id) is None


async def test_the_signature_is_checked_before_size_and_shape(runtime, sent):
    """A forgery is refused as one whatever else is wrong with it: an unsigned 5 KB record
    over a 4 KB limit is `unsigned`, not `too_large`; a signed one is `too_large`."""
    choreography = runtime.choreography
    runtime.choreography = dataclasses.replace(choreography, defaults=dataclasses.replace(
        choreography.defaults, max_event_bytes=4096))
    envelope = order("ord-big", [("SKU-BOOK", 1)], 20.0)
    envelope["payload"]["note"] = "x" * 5000
    raw = orjson.dumps(envelope)
    async with engine(runtime).test_context() as ag:
        await ag.put(value=raw, key=b"forged")
        await ag.put(value=raw, key=b"genuine", headers=signed(envelope, key=b"genuine"))
        await ag.put(value=b'{"trailing": "comma",}', key=b"junk")
    reasons = {k: read_dead_letter_headers(h) for k, _v, h in sent.records["events.dlq"]}
    assert reasons[b"forged"]["reason"] == "unsigned"
    assert reasons[b"genuine"]["reason"] == "too_large"
    assert reasons[b"junk"]["reason"] == "unsigned"
    # The signature headers travel with the dead-lettered record, for `choreo redrive`.
    [genuine] = [h for k, _v, h in sent.records["events.dlq"] if k == b"genuine"]
    assert dict(genuine)["choreo.sig.key"] == b"k2"
    assert valid(PRODUCER, "events", b"genuine", raw, genuine)


async def test_a_trailing_comma_envelope_is_masked_and_a_short_cvv_scrubbed(runtime, sent,
                                                                            caplog):
    envelope = order("ord-tc", [("SKU-BOOK", 1)], 20.0, card=CARD)
    envelope["payload"]["payment"]["cvv"] = "737"
    raw = orjson.dumps(envelope)[:-1] + b",}"  # not JSON
    async with engine(runtime).test_context() as ag:
        await ag.put(value=raw, key=b"tc", headers=sign(PRODUCER, "events", b"tc", raw,
                                                         time.time()))
    [(_key, value, headers)] = sent.records["events.dlq"]
    info = read_dead_letter_headers(headers)
    assert info["reason"] == "not_json"
    assert CARD.encode() not in value and b"737" not in value
    assert b"ord-tc" in value, "the rest of the value is kept"
    assert info["masked-as"] == "text" and len(info["sha256"]) == 64
    assert all(CARD.encode() not in v and b"737" not in v for _n, v in headers)
    assert "dead-lettered" in caplog.text
    assert CARD not in caplog.text and "737" not in caplog.text


@pytest.mark.parametrize(("signed_for", "vouched"), [
    ("capability.inventory_management.a1", True),  # the down agent's inbox: signed again
    ("capability.inventory_management.a9", False),  # signed for another inbox: not
    (None, False),  # unsigned: not
])
async def test_an_action_drained_from_a_down_agent_is_signed_for_its_new_topic(
        runtime, sent, signed_for, vouched):
    from types import SimpleNamespace

    from streams.agents import LivenessOwner

    inbox = "capability.inventory_management.a1"
    _ev, raw, headers = action_record(runtime, ENGINE if signed_for else None,
                                      topic=signed_for or inbox, key=b"ord-w1")
    target = runtime.capability_topic("inventory_management")
    router = SimpleNamespace(target=lambda action, exclude: (target, None))
    owner = LivenessOwner(runtime, SimpleNamespace(), router)
    down = SimpleNamespace(descriptor=SimpleNamespace(agent_id="a1"))
    record = SimpleNamespace(topic=inbox, partition=0, offset=3, key=b"ord-w1", value=raw,
                             headers=headers)
    await owner.reroute(down, "inventory_management", record)
    [(key, value, moved)] = sent.records["capability.inventory_management"]
    assert (key, value) == (b"ord-w1", raw)
    assert valid(ENGINE, "capability.inventory_management", key, value, moved) is vouched
