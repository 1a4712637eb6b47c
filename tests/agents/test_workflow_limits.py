"""Workflow commands always fit, and one instance's deadline cannot stop the others'.

* A step action larger than the record limit is not sent: the step fails with the reason
  (and the saga ends as failed), and other instances go on.
* A tick whose handling raises parks its instance off the timer (its state dead-lettered,
  `timer_error`); the other instances' deadlines run.
"""

from __future__ import annotations

import time

import orjson
import pytest

from choreo.envelope import new_event
from choreo.metrics import TIMER_ERRORS
from choreo.workflows.machine import SOURCE, TICK
from tables.pattern_state import partition_for
from tests.agents.test_isolation import agent, credit_checks, dead, settled, start, wide  # noqa: F401

pytestmark = pytest.mark.asyncio


def put_on_home(runtime):  # noqa: ANN001, ANN201
    partitions = runtime.settings.partitions

    async def put(ag, instance_id: str, value: bytes) -> None:  # noqa: ANN001
        await ag.put(value=value, key=instance_id.encode(),
                     partition=partition_for(instance_id, partitions))

    return put


def tick(instance_id: str, now: float) -> bytes:
    return new_event(TICK, {"instance_id": instance_id, "now": now}, source=SOURCE,
                     correlation_id=instance_id).to_bytes()


async def test_a_step_action_over_the_record_limit_fails_the_step_and_others_go_on(
        wide, monkeypatch):  # noqa: F811
    parts, sent = wide
    runtime = parts.runtime
    orchestrator = parts.orchestrator
    monkeypatch.setattr(orchestrator, "record_limit", lambda: 3_000)
    big = start("wf-big", applicant="a" * 4_000)  # the credit check carries the applicant
    put = put_on_home(runtime)
    async with agent(runtime, "run_workflows").test_context() as ag:
        await put(ag, "wf-big", big)
        await put(ag, "wf-good", start("wf-good"))
        assert await settled(lambda: credit_checks(sent) == ["wf-good"])
        state = orchestrator.store.load("wf-big")
    assert state is not None and state["status"] == "compensated"  # a saga: nothing to undo
    error = state["timings"]["credit_check"]["error"]
    assert "too_large" in error and "over the limit of 3000" in error
    assert orchestrator.store.load("wf-good")["status"] == "running"
    assert all(len(v) <= 3_000 for v in sent.values("capability.credit_bureau"))


async def test_a_tick_that_raises_parks_its_instance_and_the_others_deadlines_run(
        wide, monkeypatch):  # noqa: F811
    parts, sent = wide
    runtime = parts.runtime
    orchestrator = parts.orchestrator
    machine = orchestrator.machine
    on_deadline = machine.on_deadline

    def failing(state, now):  # noqa: ANN001, ANN202
        if state["instance_id"] == "wf-a":
            raise KeyError("tasks")  # e.g. a state of an older format
        return on_deadline(state, now)

    monkeypatch.setattr(machine, "on_deadline", failing)
    errors = TIMER_ERRORS.labels("workflow-instances")._value.get()
    put = put_on_home(runtime)
    later = time.time() + 100  # past the steps' 30 s timeout
    async with agent(runtime, "run_workflows").test_context() as ag:
        for instance_id in ("wf-a", "wf-b"):
            await put(ag, instance_id, start(instance_id))
        assert await settled(lambda: sorted(credit_checks(sent)) == ["wf-a", "wf-b"])
        stored_a = bytes(orchestrator.store.table.data[b"wf-a"])
        for instance_id in ("wf-a", "wf-b"):
            await put(ag, instance_id, tick(instance_id, later))
        assert await settled(lambda: bool(dead(sent)) and any(
            h["what"] == "retry_scheduled"
            for h in orchestrator.store.load("wf-b")["history"]))
        # The timer no longer finds wf-a due; wf-b's retry is.
        monkeypatch.setattr(orchestrator, "ready", lambda: True)
        monkeypatch.setattr(orchestrator, "active_partitions",
                            lambda: set(range(runtime.settings.partitions)))
        orchestrator.store.stale = False
        sent.records.pop("events", None)
        assert orchestrator.store.due(later + 10) == ["wf-b"]
    [(key, value, info, _headers)] = dead(sent)
    assert (key, value) == (b"wf-a", stored_a)
    assert info["reason"] == "timer_error" and info["stage"] == "timer"
    assert info["exception"] == "KeyError" and "wf-a" in info["detail"]
    assert orchestrator.store.load("wf-a") is not None  # parked, not dropped
    assert orjson.loads(value)["s"]["instance_id"] == "wf-a"
    assert TIMER_ERRORS.labels("workflow-instances")._value.get() == errors + 1


async def test_an_instance_the_rebuild_cannot_read_is_parked_and_the_timer_goes_on(
        wide, monkeypatch):  # noqa: F811
    parts, sent = wide
    runtime = parts.runtime
    orchestrator = parts.orchestrator
    put = put_on_home(runtime)
    async with agent(runtime, "run_workflows").test_context() as ag:
        await put(ag, "wf-ok", start("wf-ok"))
        assert await settled(lambda: credit_checks(sent) == ["wf-ok"])
    orchestrator.store.table.data[b"wf-corrupt"] = b"{not json"
    orchestrator.store.stale = True  # as after a restart
    monkeypatch.setattr(orchestrator, "ready", lambda: True)
    monkeypatch.setattr(orchestrator, "active_partitions",
                        lambda: set(range(runtime.settings.partitions)))
    await orchestrator.tick()
    await orchestrator.tick()  # reported once
    assert set(orchestrator.store.index) == {"wf-ok"}
    [(key, value, info, _headers)] = dead(sent)
    assert (key, value) == (b"wf-corrupt", b"{not json")
    assert info["reason"] == "timer_error" and info["exception"] == "JSONDecodeError"


async def test_an_event_that_would_make_an_instance_state_too_large_is_dead_lettered(
        wide, monkeypatch):  # noqa: F811
    parts, sent = wide
    runtime = parts.runtime
    orchestrator = parts.orchestrator
    monkeypatch.setattr(orchestrator.store, "limit", 5_000)
    huge = start("wf-huge", applicant="a" * 6_000)
    put = put_on_home(runtime)
    async with agent(runtime, "run_workflows").test_context() as ag:
        await put(ag, "wf-huge", huge)
        await put(ag, "wf-fine", start("wf-fine"))
        assert await settled(lambda: credit_checks(sent) == ["wf-fine"] and bool(dead(sent)))
    assert orchestrator.store.load("wf-huge") is None  # never written
    [(key, value, info, _headers)] = dead(sent)
    assert (key, value) == (b"wf-huge", huge)
    assert info["reason"] == "state_too_large" and info["stage"] == "workflow"
    assert "over the limit of 5000" in info["detail"]
