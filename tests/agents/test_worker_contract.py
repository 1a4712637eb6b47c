"""The handler contract and per-record isolation of capability workers, through test_context()."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from agents.worker import Result
from choreo.dead_letter import read_dead_letter_headers
from tests.agents.test_worker_failures import (
    CAPABILITY,
    DLQ,
    TOPIC,
    action_bytes,
    events,
    outcomes,
    setup,
)

pytestmark = pytest.mark.asyncio
AGENT = f"handle_{CAPABILITY}_actions"


async def returns_dicts(action):  # noqa: ANN001, ANN201
    return [{"event_type": "payment_successful", "payload": {}}]


async def returns_none(action):  # noqa: ANN001, ANN201
    return None


async def raises(action):  # noqa: ANN001, ANN201
    raise ValueError("gateway said no")


async def hangs(action):  # noqa: ANN001, ANN201
    await asyncio.sleep(30)


async def fixed(action):  # noqa: ANN001, ANN201
    return [Result("payment_successful", {"order_id": action.payload["data"]["order_id"]})]


@pytest.mark.parametrize(("handler", "reason", "says"), [
    (returns_dicts, "bad_result", "returns_dicts) returned list of dict, expected a list of "
                                  "Result"),
    (returns_none, "bad_result", "returns_none) returned NoneType, expected a list of Result"),
    (raises, "handler_error", "raises) raised ValueError: gateway said no"),
    (hangs, "timeout", "hangs) timed out after 0.05s"),
])
async def test_a_broken_handler_fails_the_action_after_its_retries_then_a_fix_runs(
        runtime, sent, handler, reason, says):
    calls = []

    async def counted(action):  # noqa: ANN001, ANN202
        calls.append(action.event_id)
        return await handler(action)

    counted.__qualname__ = handler.__qualname__
    counted.__module__ = handler.__module__
    worker, clock = setup(runtime, counted, timeout=0.05)
    raw, action_id = action_bytes("ord-c1")
    async with runtime.app.agents[AGENT].test_context() as agent:
        await agent.put(value=raw, key=b"ord-c1")
        await outcomes(sent, 1)
        assert len(calls) == 4, "the first attempt and max_retries = 3 retries"
        assert clock.slept == [1.0, 2.0, 4.0]
        [(key, value, headers)] = sent.records[DLQ]
        assert (key, value) == (b"ord-c1", raw), "the original record"
        info = read_dead_letter_headers(headers)
        assert info["reason"] == reason and info["attempts"] == "4"
        assert info["topic"] == TOPIC
        name = f"handler process_payment (tests.agents.test_worker_contract.{says}"
        assert info["detail"] == name
        out = events(sent)
        assert [e["event_type"] for e in out] == ["action.started", "action.failed"]
        assert out[-1]["payload"]["error"] == name
        assert out[-1]["payload"]["reason"] == reason

        worker.actions = {"process_payment": fixed}  # the fix is deployed
        again, _ = action_bytes("ord-c2")
        await agent.put(value=again, key=b"ord-c2")
        await outcomes(sent, 2)
    assert [e["event_type"] for e in events(sent)][2:] == [
        "action.started", "payment_successful", "action.completed"]


async def test_a_result_with_a_bad_event_type_or_payload_breaks_the_contract(runtime, sent):
    async def bad_payload(action):  # noqa: ANN001, ANN202
        return [Result("payment_successful", ["not", "a", "mapping"])]

    setup(runtime, bad_payload, max_retries=0)
    raw, _ = action_bytes("ord-c3")
    async with runtime.app.agents[AGENT].test_context() as agent:
        await agent.put(value=raw, key=b"ord-c3")
    [(_key, _value, headers)] = sent.records[DLQ]
    info = read_dead_letter_headers(headers)
    assert info["reason"] == "bad_result"
    assert "payload of list, expected a mapping" in info["detail"]


async def test_a_bad_record_between_two_good_actions_is_dead_lettered_and_both_run(runtime,
                                                                                  sent):
    """A record nested deeper than `max_event_depth` (orjson reads 1,024 levels, writes 254)
    and a garbage record, between two good actions: both dead-lettered where they were read."""
    setup(runtime, fixed)
    first, _ = action_bytes("ord-i1")
    second, _ = action_bytes("ord-i2")
    nested = action_bytes("ord-i3")[0]
    nested_raw = nested.replace(b'"pattern_id":"inventory-confirmed"',
                                b'"pattern_id":' + b'{"a":' * 300 + b"1" + b"}" * 300)
    assert nested_raw != nested
    garbage = b"\xff\x00 not an action"
    async with runtime.app.agents[AGENT].test_context() as agent:
        await agent.put(value=first, key=b"ord-i1")
        await agent.put(value=nested_raw, key=b"ord-i3")
        await agent.put(value=garbage, key=b"junk")
        await agent.put(value=second, key=b"ord-i2")
        await outcomes(sent, 2)
    completed = [e["metadata"]["correlation_id"] for e in events(sent)
                 if e["event_type"] == "action.completed"]
    assert completed == ["ord-i1", "ord-i2"]
    [(key, value, headers), (key2, value2, headers2)] = sent.records[DLQ]
    assert (key, value) == (b"ord-i3", nested_raw), "the original bytes"
    info = read_dead_letter_headers(headers)
    assert info["reason"] == "too_deep" and info["stage"] == f"worker.{CAPABILITY}"
    assert (key2, value2) == (b"junk", garbage)
    assert read_dead_letter_headers(headers2)["reason"] == "not_json"


async def test_an_unexpected_failure_on_one_action_is_dead_lettered_and_the_next_runs(
        runtime, sent, monkeypatch):
    """Per-record isolation: whatever raises while one action is handled (here, building its
    `action.started`), that record goes to the capability's dead-letter topic with the
    exception, and the next action runs."""
    import agents.worker as worker_module

    setup(runtime, fixed)
    real = worker_module.started_event

    def breaks_once(action, capability, generation=""):  # noqa: ANN001, ANN202
        if action.correlation_id == "ord-i6":
            raise KeyError("boom")
        return real(action, capability, generation)

    monkeypatch.setattr(worker_module, "started_event", breaks_once)
    bad, _ = action_bytes("ord-i6")
    good, _ = action_bytes("ord-i7")
    async with runtime.app.agents[AGENT].test_context() as agent:
        await agent.put(value=bad, key=b"ord-i6")
        await agent.put(value=good, key=b"ord-i7")
        await outcomes(sent, 1)
    completed = [e["metadata"]["correlation_id"] for e in events(sent)
                 if e["event_type"] == "action.completed"]
    assert completed == ["ord-i7"]
    [(key, value, headers)] = sent.records[DLQ]
    assert (key, value) == (b"ord-i6", bad), "the original bytes"
    info = read_dead_letter_headers(headers)
    assert info["reason"] == "worker_error" and info["stage"] == f"worker.{CAPABILITY}"
    assert info["exception"] == "KeyError" and "boom" in info["detail"]


async def test_a_result_too_deep_to_publish_fails_the_action_without_retrying(runtime, sent):
    calls = []

    async def deep_result(action):  # noqa: ANN001, ANN202
        calls.append(1)
        deep: list = []
        for _ in range(300):  # orjson writes at most 254 levels
            deep = [deep]
        return [Result("payment_successful", {"deep": deep})]

    setup(runtime, deep_result)
    text = action_bytes("ord-i4")[0]
    async with runtime.app.agents[AGENT].test_context() as agent:
        await agent.put(value=text, key=b"ord-i4")
        await outcomes(sent, 1)
    assert len(calls) == 1, "the handler ran: not retried"
    [(_key, value, headers)] = sent.records[DLQ]
    assert value == text
    info = read_dead_letter_headers(headers)
    assert info["reason"] == "event_unencodable"
    assert "payment_successful event that cannot be published" in info["detail"]
    assert events(sent)[-1]["event_type"] == "action.failed"


async def test_a_result_too_large_to_publish_fails_the_action(runtime, sent):
    limit = runtime.choreography.defaults.max_event_bytes

    async def huge(action):  # noqa: ANN001, ANN202
        return [Result("payment_successful", {"blob": "x" * limit})]

    setup(runtime, huge)
    raw, _ = action_bytes("ord-i5")
    async with runtime.app.agents[AGENT].test_context() as agent:
        await agent.put(value=raw, key=b"ord-i5")
        await outcomes(sent, 1)
    [(_key, value, headers)] = sent.records[DLQ]
    assert value == raw
    info = read_dead_letter_headers(headers)
    assert info["reason"] == "event_too_large"
    assert f"over the limit of {limit}" in info["detail"]
    out = events(sent)
    assert [e["event_type"] for e in out] == ["action.started", "action.failed"]
    assert max(len(v) for v in sent.values("events")) < limit


async def test_a_bad_record_in_an_agents_inbox_is_dead_lettered_not_read_again(runtime, sent):
    """An inbox (agents/inbox.py) restarts from its committed offset after an exception:
    the record must be dead-lettered instead, or the inbox would stop at it."""
    from agents.inbox import InboxMessage, InboxRecord
    from agents.worker import handle_record
    from tables.expiring import ExpiringTable

    worker, _clock = setup(runtime, fixed)
    raw = action_bytes("ord-x1")[0].replace(
        b'"pattern_id":"inventory-confirmed"', b'"pattern_id":' + b"[" * 300 + b"]" * 300)
    inbox = f"{TOPIC}.agent-1"
    record = InboxRecord(raw, InboxMessage(inbox, 0, 7, b"ord-x1", [], 0.0))
    await handle_record(worker, record, ExpiringTable({}, horizon=60.0, every=60.0))
    [(key, value, headers)] = sent.records[DLQ]
    assert (key, value) == (b"ord-x1", raw)
    info = read_dead_letter_headers(headers)
    assert (info["reason"], info["topic"], info["offset"]) == ("too_deep", inbox, "7")


async def test_a_far_future_action_is_dead_lettered_and_moves_no_horizon(runtime, sent):
    """An action stamped far ahead would move the handled-actions horizon past every real
    one (their ids forgotten, so handled again): refused as `future` where it was read."""
    from choreo.actions import build_action
    from choreo.envelope import iso_from_ts, new_event

    worker, _clock = setup(runtime, fixed)
    trigger = new_event("inventory_confirmed", {"order_id": "ord-f1"}, source="test",
                        correlation_id="ord-f1", timestamp=iso_from_ts(4102444800.0))
    future = build_action(pattern_id="inventory-confirmed", action="process_payment",
                          capability=CAPABILITY, priority=5, triggers=[trigger]).event
    future_raw = orjson.dumps({**future.as_dict(), "timestamp": "2100-01-01T00:00:00Z"})
    good, _ = action_bytes("ord-f2")
    async with runtime.app.agents[AGENT].test_context() as agent:
        await agent.put(value=future_raw, key=b"ord-f1")
        await agent.put(value=good, key=b"ord-f2")
        await outcomes(sent, 1)
    completed = [e["metadata"]["correlation_id"] for e in events(sent)
                 if e["event_type"] == "action.completed"]
    assert completed == ["ord-f2"]
    [(key, value, headers)] = sent.records[DLQ]
    assert (key, value) == (b"ord-f1", future_raw)
    assert read_dead_letter_headers(headers)["reason"] == "future"
    assert max(worker.handled._high_water.values(), default=0) < 4102444800.0  # noqa: SLF001


async def test_a_handlers_error_quoting_a_masked_field_is_scrubbed_everywhere(
        runtime, sent, caplog):
    """The handler's exception quotes the card number it was given: action.failed, the
    dead-letter detail and the log carry the error without it."""
    from choreo.actions import build_action
    from choreo.envelope import new_event
    from choreo.security import Guard, SecuritySettings

    card = "4242424242424242"

    async def quotes(action):  # noqa: ANN001, ANN202
        raise ValueError(f"card {action.payload['data']['payment']['card_number']} declined")

    runtime.guard = Guard(SecuritySettings(mask=("payload.payment.card_number",)))
    setup(runtime, quotes, max_retries=0)
    trigger = new_event("inventory_confirmed", {"order_id": "ord-m1",
                                                "payment": {"card_number": card}},
                        source="test", correlation_id="ord-m1")
    raw = build_action(pattern_id="inventory-confirmed", action="process_payment",
                       capability=CAPABILITY, priority=5, triggers=[trigger]).event.to_bytes()
    with caplog.at_level("DEBUG"):
        async with runtime.app.agents[AGENT].test_context() as agent:
            await agent.put(value=raw, key=b"ord-m1")
            await outcomes(sent, 1)
    [failed] = [e for e in events(sent) if e["event_type"] == "action.failed"]
    assert "declined" in failed["payload"]["error"] and card not in failed["payload"]["error"]
    [(_key, value, headers)] = sent.records[DLQ]
    assert card.encode() not in value
    assert not any(card.encode() in v for _n, v in headers)
    assert read_dead_letter_headers(headers)["reason"] == "handler_error"
    assert card not in caplog.text
