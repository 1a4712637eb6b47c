"""Capability workers under failure, through test_context(): retries, dead letters, breaker."""

from __future__ import annotations

import orjson
import pytest

from agents.worker import ActionRefused, Result, derived_id
from choreo.actions import build_action
from choreo.dead_letter import read_dead_letter_headers
from choreo.envelope import new_event
from choreo.redrive import REDRIVE_HEADER
from choreo.resilience import CircuitBreaker
from choreo.worker_policy import WorkerPolicy

pytestmark = pytest.mark.asyncio
CAPABILITY = "payment_processing"
TOPIC = f"capability.{CAPABILITY}"
DLQ = f"capability.{CAPABILITY}.dlq"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def action_bytes(order_id: str, action: str = "process_payment") -> tuple[bytes, str]:
    trigger = new_event("inventory_confirmed", {"order_id": order_id}, source="test",
                        correlation_id=order_id)
    built = build_action(pattern_id="inventory-confirmed", action=action, capability=CAPABILITY,
                         priority=5, triggers=[trigger])
    return built.event.to_bytes(), built.event.event_id


def flaky(failures: int, error: Exception | None = None):  # noqa: ANN201
    calls = []

    async def handler(action):  # noqa: ANN001, ANN202
        calls.append(action.event_id)
        if len(calls) <= failures:
            raise error or ConnectionError("payment gateway unreachable")
        return [Result("payment_successful", {"order_id": action.payload["data"]["order_id"]})]

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


def setup(runtime, handler, **policy):  # noqa: ANN001, ANN201
    worker = runtime.workers[CAPABILITY]
    clock = Clock()
    worker.actions = {"process_payment": handler}
    worker.policy = WorkerPolicy(**{"max_retries": 3, "backoff_base": 1.0, "backoff_max": 8.0,
                                    "breaker_threshold": 0, **policy})
    worker.breaker = CircuitBreaker.for_policy(CAPABILITY, worker.policy, clock)
    worker.sleep = clock.sleep
    worker.rand = lambda: 1.0
    return worker, clock


def events(sent) -> list[dict]:  # noqa: ANN001
    return [orjson.loads(v) for v in sent.values("events")]


async def outcomes(sent, count: int, timeout: float = 5.0) -> None:  # noqa: ANN001
    """Wait until `count` actions have an outcome: put() returns once a record is taken."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum(e["event_type"] in ("action.completed", "action.failed")
              for e in events(sent)) < count:
        assert loop.time() < deadline, events(sent)
        await asyncio.sleep(0.01)


async def test_a_handler_that_fails_twice_is_retried_and_completes_once(runtime, sent):
    handler = flaky(2)
    worker, clock = setup(runtime, handler)
    raw, action_id = action_bytes("ord-r1")
    async with runtime.app.agents[f"handle_{CAPABILITY}_actions"].test_context() as agent:
        await agent.put(value=raw, key=b"ord-r1")
    assert len(handler.calls) == 3
    assert clock.slept == [1.0, 2.0]
    out = events(sent)
    assert [e["event_type"] for e in out] == ["action.started", "payment_successful",
                                              "action.completed"]
    assert out[-1]["payload"]["attempts"] == 3
    assert out[-1]["event_id"] == derived_id(action_id, "completed")
    assert DLQ not in sent.records


async def test_a_handler_that_always_fails_goes_to_the_capability_dead_letter_topic(runtime, sent):
    handler = flaky(99)
    worker, clock = setup(runtime, handler)
    raw, action_id = action_bytes("ord-r2")
    async with runtime.app.agents[f"handle_{CAPABILITY}_actions"].test_context() as agent:
        await agent.put(value=raw, key=b"ord-r2")
    assert len(handler.calls) == 4
    assert clock.slept == [1.0, 2.0, 4.0]
    [(key, value, headers)] = sent.records[DLQ]
    assert (key, value) == (b"ord-r2", raw)
    info = read_dead_letter_headers(headers)
    assert info["reason"] == "handler_error"
    assert info["detail"] == ("handler process_payment (tests.agents.test_worker_failures."
                              "flaky.<locals>.handler) raised ConnectionError: payment "
                              "gateway unreachable")
    assert info["attempts"] == "4"
    assert info["stage"] == f"worker.{CAPABILITY}"
    assert info["topic"] == TOPIC
    out = events(sent)
    assert [e["event_type"] for e in out] == ["action.started", "action.failed"]
    failed = out[-1]["payload"]
    assert failed["error"] == info["detail"]
    assert failed["attempts"] == 4 and failed["dead_letter_topic"] == DLQ
    assert out[-1]["metadata"]["causation_id"] == action_id


async def test_a_timeout_is_retried(runtime, sent):
    import asyncio

    calls = []

    async def slow(action):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(5)
        return []

    setup(runtime, slow, timeout=0.05)
    raw, _ = action_bytes("ord-r3")
    async with runtime.app.agents[f"handle_{CAPABILITY}_actions"].test_context() as agent:
        await agent.put(value=raw, key=b"ord-r3")
        await outcomes(sent, 1)
    assert len(calls) == 2
    assert events(sent)[-1]["event_type"] == "action.completed"


async def test_a_refusal_is_not_retried(runtime, sent):
    handler = flaky(99, ActionRefused("card expired"))
    setup(runtime, handler)
    raw, _ = action_bytes("ord-r4")
    async with runtime.app.agents[f"handle_{CAPABILITY}_actions"].test_context() as agent:
        await agent.put(value=raw, key=b"ord-r4")
    assert len(handler.calls) == 1
    [(_key, _value, headers)] = sent.records[DLQ]
    assert read_dead_letter_headers(headers)["reason"] == "refused"
    assert events(sent)[-1]["payload"]["error"] == "card expired"


async def test_the_breaker_opens_defers_and_closes_with_its_events(runtime, sent):
    handler = flaky(3)
    worker, clock = setup(runtime, handler, max_retries=1, breaker_threshold=2,
                          breaker_cooldown=30.0)
    first, _ = action_bytes("ord-b1")
    second, _ = action_bytes("ord-b2")
    async with runtime.app.agents[f"handle_{CAPABILITY}_actions"].test_context() as agent:
        await agent.put(value=first, key=b"ord-b1")   # fails twice: opens, dead-lettered
        await agent.put(value=second, key=b"ord-b2")  # waits 30 s, trial fails, waits, succeeds
    assert worker.breaker.state.value == "closed"
    changes = [(e["payload"]["from"], e["payload"]["to"]) for e in events(sent)
               if e["event_type"] == "circuit_breaker.state.changed"]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "open"),
                       ("open", "half_open"), ("half_open", "closed")]
    assert sum(s for s in clock.slept) >= 60.0
    assert len(sent.records[DLQ]) == 1, "only the first action, after its own retries"
    completed = [e for e in events(sent) if e["event_type"] == "action.completed"]
    assert [e["metadata"]["correlation_id"] for e in completed] == ["ord-b2"]
    body = worker.describe()
    assert body["circuit_breaker"]["state"] == "closed"
    assert body["dead_letter_topic"] == DLQ


async def test_a_redriven_action_runs_again_but_a_plain_duplicate_does_not(runtime, sent):
    handler = flaky(4)
    setup(runtime, handler, max_retries=3)
    raw, action_id = action_bytes("ord-d1")
    async with runtime.app.agents[f"handle_{CAPABILITY}_actions"].test_context() as agent:
        await agent.put(value=raw, key=b"ord-d1")                     # dead-lettered
        await agent.put(value=raw, key=b"ord-d1")                     # duplicate: dropped
        await agent.put(value=raw, key=b"ord-d1",
                        headers={REDRIVE_HEADER: b"capability.payment_processing.dlq:0:0"})
        await agent.put(value=raw, key=b"ord-d1",
                        headers={REDRIVE_HEADER: b"capability.payment_processing.dlq:0:0"})
    assert len(handler.calls) == 5
    kinds = [e["event_type"] for e in events(sent)]
    assert kinds == ["action.started", "action.failed",
                     "action.started", "payment_successful", "action.completed"]
    ids = [e["event_id"] for e in events(sent)]
    assert len(set(ids)) == len(ids), "the re-run's events are not taken for the first run's"


async def test_the_same_offset_read_again_in_the_same_process_is_not_handled_again(runtime,
                                                                                   sent):
    """A rebalance (a broker restart) re-reads from the committed offset, not a crash."""
    handler = flaky(0)
    setup(runtime, handler)
    raw, _ = action_bytes("ord-r1")
    async with runtime.app.agents[f"handle_{CAPABILITY}_actions"].test_context() as agent:
        await agent.put(value=raw, key=b"ord-r1")
        await outcomes(sent, 1)
        agent.sent_offset -= 1  # the same record, at the same offset, again
        await agent.put(value=raw, key=b"ord-r1")
    assert len(handler.calls) == 1


async def test_the_same_offset_read_by_a_new_process_is_handled_again(runtime, sent,
                                                                      monkeypatch):
    """After a crash the outcome events may never have left: at-least-once, by design."""
    import agents.worker

    handler = flaky(0)
    setup(runtime, handler)
    raw, _ = action_bytes("ord-r2")
    async with runtime.app.agents[f"handle_{CAPABILITY}_actions"].test_context() as agent:
        await agent.put(value=raw, key=b"ord-r2")
        await outcomes(sent, 1)
        monkeypatch.setattr(agents.worker, "INCARNATION", "a-new-process")
        agent.sent_offset -= 1
        await agent.put(value=raw, key=b"ord-r2")
    assert len(handler.calls) == 2
