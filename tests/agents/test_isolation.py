"""One bad record, dead-lettered alone: the engine's agents go on with the records around it.

The agents run through Faust's test_context() on a memory store. Records are put without
waiting for each, so that the agent takes several in one batch (`take_events`), and the
batches are recorded to show the bad record shared one with good ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
import pytest

import streams.keyed
import streams.match_events
from choreo.app import create_app
from choreo.config import parse_choreography
from choreo.dead_letter import read_dead_letter_headers
from choreo.envelope import iso_from_ts, new_event
from choreo.matchers.correlation import TRACKER_ID
from choreo.samples import order
from choreo.settings import BUNDLED_CONFIG, Settings
from streams.keyed import GROUP_HEADER, NOTE_HEADER, ORIGIN_HEADER
from tables.pattern_state import partition_for
from tests.agents.conftest import record_sends
from topology import wire

pytestmark = pytest.mark.asyncio
INVENTORY = "capability.inventory_management"
WORKFLOWS = BUNDLED_CONFIG.parent / "workflows.toml"


def agent(runtime, name: str):  # noqa: ANN001, ANN201
    return next(a for a in runtime.app.agents.values() if a.name.endswith(name))


def an_order(n: int) -> bytes:
    return orjson.dumps(order(f"iso-{n}", [("SKU-BOOK", 1)], 10.0))


def deep_order(levels: int = 300) -> bytes:
    """An order whose payload nests `levels` deep: orjson reads it, and cannot write it."""
    envelope = orjson.dumps(order("iso-deep", [("SKU-BOOK", 1)], 10.0))
    return envelope.replace(b'"payload":{', b'"payload":{"deep":' + b"[" * levels
                            + b"]" * levels + b",", 1)


def ordered(sent) -> list[str]:  # noqa: ANN001
    return sorted(orjson.loads(v)["metadata"]["correlation_id"] for v in sent.values(INVENTORY))


def dead(sent) -> list[tuple[bytes | None, bytes | None, dict[str, str], list]]:  # noqa: ANN001
    return [(key, value, read_dead_letter_headers(headers), headers)
            for key, value, headers in sent.records.get("events.dlq", [])]


async def settled(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether `check` holds once the agent is done (it waits up to batch_wait to fill)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check() and loop.time() < end:
        await asyncio.sleep(0.01)
    return check()


@pytest.fixture
def batches(monkeypatch) -> list[list[bytes]]:  # noqa: ANN001
    """The values of each batch the agents handled."""
    seen: list[list[bytes]] = []

    def spy(module, name: str) -> None:  # noqa: ANN001
        real = getattr(module, name)

        async def recorded(runtime, *args):  # noqa: ANN001, ANN202
            seen.append([r.value for r in next(a for a in args if isinstance(a, list))])
            return await real(runtime, *args)

        monkeypatch.setattr(module, name, recorded)

    spy(streams.match_events, "process_batch")
    spy(streams.keyed, "process_rekeyed_batch")
    return seen


# --- match_events ---------------------------------------------------------------------------


async def test_a_too_deep_record_among_orders_is_dead_lettered_and_every_order_acts(
        runtime, sent, batches):
    bad = deep_order()
    values = [an_order(n) for n in range(5)] + [bad] + [an_order(n) for n in range(5, 10)]
    async with agent(runtime, "match_events").test_context() as ag:
        for value in values:
            await ag.put(value=value, key=b"k", headers=[("trace", b"t-1")], wait=False)
        assert await settled(lambda: len(ordered(sent)) == 10 and bool(dead(sent)))
    assert ordered(sent) == sorted(f"iso-{n}" for n in range(10))
    [(key, value, info, headers)] = dead(sent)
    assert (key, value) == (b"k", bad)
    assert info["reason"] == "too_deep" and info["stage"] == "ingest"
    assert ("trace", b"t-1") in headers  # the record's own headers are kept
    assert any(bad in batch and len(batch) > 1 for batch in batches)


async def test_a_failure_in_the_middle_of_a_batch_dead_letters_only_that_record(
        runtime, sent, batches, monkeypatch):
    values = [an_order(n) for n in range(10)]
    bad = values[5]
    bad_id = orjson.loads(bad)["event_id"]
    match = runtime.matcher.match

    def failing(event):  # noqa: ANN001, ANN202
        if event.event_id == bad_id:
            raise RuntimeError("boom on this one")
        return match(event)

    monkeypatch.setattr(runtime.matcher, "match", failing)
    async with agent(runtime, "match_events").test_context() as ag:
        for value in values:
            await ag.put(value=value, key=b"k5", headers=[("trace", b"t-5")], wait=False)
        assert await settled(lambda: len(ordered(sent)) == 9 and bool(dead(sent)))
        assert batches and any(bad in batch and len(batch) > 1 for batch in batches)
        # Once the fault is gone, the same record re-driven is not taken for a duplicate.
        monkeypatch.setattr(runtime.matcher, "match", match)
        await ag.put(value=bad, key=b"k5")
        assert await settled(lambda: len(ordered(sent)) == 10)
    assert ordered(sent) == sorted(f"iso-{n}" for n in range(10))
    [(key, value, info, headers)] = dead(sent)
    assert (key, value) == (b"k5", bad)
    assert info["reason"] == "internal_error" and info["stage"] == "ingest"
    assert info["exception"] == "RuntimeError"
    assert info["detail"] == "RuntimeError: boom on this one"
    assert ("trace", b"t-5") in headers


async def test_a_record_failing_half_way_leaves_no_state_and_the_others_keep_theirs(
        runtime, components, sent, batches, monkeypatch):
    """The correlation summary (written in the batch) of the failed record is undone."""
    values = [an_order(n) for n in range(6)]
    bad_id = orjson.loads(values[3])["event_id"]
    engine = components.keyed
    report_late = engine.report_late

    async def failing(result, raw, key, origin):  # noqa: ANN001, ANN202
        if orjson.loads(raw)["event_id"] == bad_id:  # after the summary was applied
            raise KeyError("no such thing")
        return await report_late(result, raw, key, origin)

    monkeypatch.setattr(engine, "report_late", failing)
    async with agent(runtime, "match_events").test_context() as ag:
        for n, value in enumerate(values):
            # On the partition of its correlation id: applied here, not re-keyed.
            await ag.put(value=value, key=b"k", wait=False,
                         partition=partition_for(f"iso-{n}", runtime.settings.partitions))
        assert await settled(lambda: bool(dead(sent)) and len(ordered(sent)) >= 5)
        await asyncio.sleep(0.1)
    summaries = {n: engine.store.load(TRACKER_ID, f"iso-{n}") for n in range(6)}
    assert summaries[3] is None
    assert all(summaries[n] is not None for n in (0, 1, 2, 4, 5))
    assert "iso-3" not in ordered(sent)  # nor its action sent
    assert [info["reason"] for _k, _v, info, _h in dead(sent)] == ["internal_error"]


async def test_over_long_ids_are_dead_lettered_as_too_long(runtime, sent):
    envelope = order("iso-long", [("SKU-BOOK", 1)], 10.0)
    envelope["metadata"]["correlation_id"] = "c" * 5000
    raw = orjson.dumps(envelope)
    async with agent(runtime, "match_events").test_context() as ag:
        await ag.put(value=raw, key=b"k")
        await ag.put(value=an_order(1), key=b"k")
        assert await settled(lambda: bool(dead(sent)) and len(ordered(sent)) == 1)
    [(_key, value, info, _headers)] = dead(sent)
    assert value == raw
    assert info["reason"] == "too_long"
    assert "metadata.correlation_id" in info["detail"]


async def test_a_far_future_event_is_refused_and_moves_no_clock(runtime, components, sent):
    future = order("iso-future", [("SKU-BOOK", 1)], 10.0)
    future["timestamp"] = "2100-01-01T00:00:00Z"
    raw = orjson.dumps(future)
    partition = partition_for("iso-future", runtime.settings.partitions)
    engine = components.keyed
    async with agent(runtime, "match_events").test_context() as ag:
        await ag.put(value=an_order(1), key=b"k", partition=partition)
        assert await settled(lambda: len(ordered(sent)) == 1)
        before = engine.store.watermark(f"e{partition}")
        await ag.put(value=raw, key=b"k", partition=partition)
        assert await settled(lambda: bool(dead(sent)))
        assert engine.store.watermark(f"e{partition}") == before < time.time() + 60
        assert components.seen_events._high_water[partition] < time.time() + 60
        await ag.put(value=an_order(2), key=b"k", partition=partition)
        assert await settled(lambda: len(ordered(sent)) == 2)
    [(_key, value, info, _headers)] = dead(sent)
    assert value == raw
    assert info["reason"] == "future" and info["stage"] == "ingest"
    assert "iso-future" not in ordered(sent)


# --- apply_rekeyed --------------------------------------------------------------------------


def rekeyed_event(corr: str, at: float | None = None) -> bytes:
    return new_event("order_shipped", {"order_id": corr}, source="shop", correlation_id=corr,
                     timestamp=iso_from_ts(time.time() if at is None else at)).to_bytes()


async def test_a_poison_record_on_the_rekeyed_topic_is_dead_lettered_alone(
        runtime, components, sent, batches):
    engine = components.keyed
    origin = (ORIGIN_HEADER, b"events:2:41")
    far = rekeyed_event("rk-3", at=4_102_444_800.0)  # 2100-01-01
    records = [
        (b"rk-1", rekeyed_event("rk-1"), [(GROUP_HEADER, b""), origin]),
        (b"rk-2", b"{not json", [(NOTE_HEADER, b"actions"), origin]),  # a note that is not one
        (b"rk-3", far, [(GROUP_HEADER, b""), origin]),
        (b"rk-4", rekeyed_event("rk-4"), [(GROUP_HEADER, b""), origin]),
    ]
    async with agent(runtime, "apply_rekeyed").test_context() as ag:
        for key, value, headers in records:
            await ag.put(value=value, key=key, headers=headers, wait=False)
        assert await settled(lambda: len(dead(sent)) == 2
                             and engine.store.load(TRACKER_ID, "rk-4") is not None)
    assert engine.store.load(TRACKER_ID, "rk-1") is not None
    assert engine.store.load(TRACKER_ID, "rk-3") is None
    assert engine.store.watermark("r0") < time.time() + 60
    by_key = {key: (value, info) for key, value, info, _h in dead(sent)}
    assert by_key[b"rk-2"][0] == b"{not json"
    assert by_key[b"rk-2"][1]["reason"] == "internal_error"
    assert by_key[b"rk-2"][1]["stage"] == "rekeyed"
    assert by_key[b"rk-2"][1]["exception"] == "JSONDecodeError"
    # Dead-lettered as from where it was first read, so a re-drive sends it there.
    assert (by_key[b"rk-2"][1]["topic"], by_key[b"rk-2"][1]["offset"]) == ("events", "41")
    assert by_key[b"rk-3"] == (far, by_key[b"rk-3"][1])
    assert by_key[b"rk-3"][1]["reason"] == "future"
    assert any(len(batch) > 1 and b"{not json" in batch for batch in batches)


# --- the orchestrator, the registry and the tasks -------------------------------------------


@pytest.fixture
def wide(tmp_path):  # noqa: ANN001, ANN201
    """A runtime with workflows, the agent registry and task progress."""
    settings = Settings(broker="kafka://127.0.0.1:1", store="memory://", data_dir=tmp_path)
    text = WORKFLOWS.read_text() + '\n[agents]\nheartbeat_interval = "1s"\n'
    parts = wire(create_app(settings, parse_choreography(text)))
    parts.app.finalize()
    parts.app.conf.store = "memory://"
    return parts, record_sends(parts.runtime)


def start(instance_id: str, applicant: object = "a-1") -> bytes:
    return new_event("workflow.start", {"workflow": "loan_approval", "instance_id": instance_id,
                                        "input": {"applicant_id": applicant, "amount": 10}},
                     source="test", correlation_id=instance_id).to_bytes()


def credit_checks(sent) -> list[str]:  # noqa: ANN001
    return [orjson.loads(v)["metadata"]["correlation_id"]
            for v in sent.values("capability.credit_bureau")]


async def test_the_orchestrator_goes_on_after_a_record_that_breaks_it(wide, monkeypatch):
    parts, sent = wide
    runtime = parts.runtime
    orchestrator = parts.orchestrator
    real = orchestrator.machine.start

    def failing(request, now):  # noqa: ANN001, ANN202
        if request.instance_id == "wf-bad":
            raise ValueError("cannot start this one")
        return real(request, now)

    monkeypatch.setattr(orchestrator.machine, "start", failing)
    bad = start("wf-bad")
    deep = start("wf-deep").replace(b'"amount":10', b'"amount":' + b"[" * 300 + b"]" * 300)
    partitions = runtime.settings.partitions
    async with agent(runtime, "run_workflows").test_context() as ag:
        for instance_id, value in [("wf-deep", deep), ("wf-bad", bad),
                                   ("wf-good", start("wf-good"))]:
            await ag.put(value=value, key=instance_id.encode(),
                         partition=partition_for(instance_id, partitions))
        assert await settled(lambda: credit_checks(sent) == ["wf-good"])
    [(key, value, info, _headers)] = dead(sent)
    assert (key, value) == (b"wf-bad", bad)
    assert info["reason"] == "internal_error" and info["stage"] == "workflow"
    assert info["detail"] == "ValueError: cannot start this one"


async def test_the_registry_dead_letters_a_record_it_cannot_fold_and_goes_on(wide):
    parts, sent = wide
    runtime = parts.runtime
    view = parts.registry.view
    beat = {"kind": "heartbeat", "agent_id": "agent-1", "seq": 1, "incarnation": "i1",
            "capabilities": ["credit_bureau"], "interval": 1.0}
    poison = orjson.dumps({**beat, "agent_id": "agent-2", "inboxes": ["not", "a", "map"]})
    good = orjson.dumps(beat)
    view.apply(b"agent-2", poison, time.time())  # the global view skips it
    view.apply(b"agent-1", good, time.time())
    assert list(view.registry.agents) == ["agent-1"]
    async with agent(runtime, "track_agents").test_context() as ag:
        await ag.put(value=poison, key=b"agent-2")
        await ag.put(value=b"{not json", key=b"agent-3")
        await ag.put(value=good, key=b"agent-1")
    infos = {key: (value, info) for key, value, info, _h in dead(sent)}
    assert set(infos) == {b"agent-2", b"agent-3"}
    assert infos[b"agent-2"][0] == poison
    assert infos[b"agent-2"][1]["reason"] == "internal_error"
    assert infos[b"agent-2"][1]["exception"] == "AttributeError"
    assert infos[b"agent-3"][1]["reason"] == "invalid_agent_record"
    assert {info["stage"] for _v, info in infos.values()} == {"registry"}


async def test_task_progress_refuses_what_it_cannot_take_and_goes_on(wide):
    parts, sent = wide
    runtime = parts.runtime
    table = parts.tasks

    def progress(task_id: str, at: float | None = None) -> bytes:
        return new_event("task.progress", {"task_id": task_id, "state": "working"},
                         source="agent", correlation_id=task_id,
                         timestamp=iso_from_ts(time.time() if at is None else at)).to_bytes()

    far = progress("t-2", at=4_102_444_800.0)
    async with agent(runtime, "track_tasks").test_context() as ag:
        await ag.put(value=b"[1, 2]", key=b"t-1")
        await ag.put(value=far, key=b"t-2")
        await ag.put(value=progress("t-3"), key=b"t-3")
    assert table.get("t-3") is not None and table.get("t-2") is None
    assert table._high_water[0] < time.time() + 60
    reasons = {key: info["reason"] for key, _v, info, _h in dead(sent)}
    assert reasons == {b"t-1": "not_object", b"t-2": "future"}


# --- with [security]: signatures required, card numbers masked -------------------------------

SECURITY = """
[security]
require_signatures = true
max_age = "5m"
mask = ["payload.payment.card_number"]

[security.publishers]
"shop.*" = ["order_received"]
"""


@pytest.fixture
def secured(tmp_path):  # noqa: ANN001, ANN201
    settings = Settings(broker="kafka://127.0.0.1:1", store="memory://", data_dir=tmp_path,
                        signing_keys="k1=k1-secret-0123456789abcdef012345", signing_key_id="k1")
    choreography = parse_choreography(BUNDLED_CONFIG.read_text() + SECURITY)
    rt = wire(create_app(settings, choreography)).runtime
    rt.app.finalize()
    rt.app.conf.store = "memory://"
    return rt, record_sends(rt)


async def test_a_deep_record_with_forged_signature_headers_is_dead_lettered_not_a_crash(
        secured):
    """No key needed to reach it: the signature is judged first (a forgery is refused as one),
    and the card number in it, which cannot be masked at that depth, does not reach the
    dead-letter topic."""
    runtime, sent = secured
    forged = [("choreo.sig", b"AAAA"), ("choreo.sig.key", b"k1"),
              ("choreo.sig.at", str(int(time.time() * 1000)).encode())]
    deep = deep_order()
    assert b"4242424242424242" in deep
    async with agent(runtime, "match_events").test_context() as ag:
        await ag.put(value=deep, key=b"k", headers=forged)
        await ag.put(value=an_order(1), key=b"k", headers=forged)  # shallow: bad signature
        assert await settled(lambda: len(dead(sent)) == 2)
    [(deep_value, deep_info, headers), (_v, info, _h)] = [
        (value, info, headers) for _k, value, info, headers in dead(sent)]
    assert deep_info["reason"] == "bad_signature"
    assert deep_value is None and deep_info["masked"] == "*"
    assert not any(b"4242424242424242" in value for _n, value in headers)
    assert info["reason"] == "bad_signature"
    assert not any(name.startswith("capability.") for name in sent.records)
