"""Keyed state always fits in a changelog record: snapshots are trimmed, and a state that
would still be too large refuses the record that would make it (`state_too_large`)."""

from __future__ import annotations

import orjson
import pytest

from choreo.envelope import now_iso
from choreo.matchers.base import SNAPSHOT_PAYLOAD_BYTES, TRIMMED
from choreo.matchers.correlation import TRACKER_ID
from choreo.samples import order
from streams.keyed import NOTE_HEADER
from tables.pattern_state import partition_for
from tests.agents.test_isolation import INVENTORY, agent, dead, ordered, settled

pytestmark = pytest.mark.asyncio
SEQUENCE = "order-to-shipment"  # buffers each order_received with its payload


def big_order(order_id: str, size: int) -> bytes:
    return orjson.dumps(order(order_id, [("SKU-BOOK", 1)], 10.0, notes="x" * size))


def ids_on(partition: int, partitions: int, n: int) -> list[str]:
    """Order ids whose keyed state lives on `partition` (applied there, not re-keyed)."""
    ids = (f"ok-{i}" for i in range(10_000))
    return [i for i in ids if partition_for(i, partitions) == partition][:n]


def stored(components, pattern_id: str, key: str) -> bytes | None:  # noqa: ANN001
    raw = components.keyed.store.table.data.get(f"{pattern_id}\x1f{key}".encode())
    return None if raw is None else bytes(raw)


async def test_a_1mb_order_keeps_a_trimmed_snapshot_and_every_order_acts(runtime, components, sent):
    p = partition_for("big-1", runtime.settings.partitions)
    values = [orjson.dumps(order(f"ok-{n}", [("SKU-BOOK", 1)], 10.0)) for n in range(3)]
    values.insert(1, big_order("big-1", 1_000_000))
    async with agent(runtime, "match_events").test_context() as ag:
        for value in values:
            await ag.put(value=value, key=b"k", partition=p, wait=False)
        assert await settled(lambda: len(ordered(sent)) == 4)
    assert ordered(sent) == ["big-1", "ok-0", "ok-1", "ok-2"]  # its own action too
    assert not dead(sent)
    raw = stored(components, SEQUENCE, "big-1")
    assert raw is not None and len(raw) < SNAPSHOT_PAYLOAD_BYTES + 16 * 1024
    [held] = orjson.loads(raw)["s"]["buf"]
    payload = held["e"]["payload"]
    assert payload["order_id"] == "big-1" and payload["order_value"] == 10.0
    assert "notes" not in payload
    assert payload[TRIMMED]["fields"] == ["notes"]
    assert payload[TRIMMED]["original_bytes"] > 1_000_000


async def test_a_state_over_the_record_limit_refuses_the_record_and_keeps_the_old_state(
        runtime, components, sent, monkeypatch):
    """A 40 KB order fits its snapshot budget; with a changelog limit of 30 KB its state
    would not: the order is dead-lettered, its neighbours act, the key holds nothing."""
    monkeypatch.setattr(components.keyed.store, "limit", 30_000)
    p = partition_for("big-2", runtime.settings.partitions)
    big = big_order("big-2", 40_000)
    ok = ids_on(p, runtime.settings.partitions, 4)
    values = [orjson.dumps(order(i, [("SKU-BOOK", 1)], 10.0)) for i in ok]
    values.insert(2, big)
    async with agent(runtime, "match_events").test_context() as ag:
        for value in values:
            await ag.put(value=value, key=b"k2", headers=[("trace", b"t")], partition=p,
                         wait=False)
        assert await settled(lambda: len(ordered(sent)) == 4 and bool(dead(sent)))
    assert ordered(sent) == sorted(ok)  # big-2 sent no action either
    [(key, value, info, headers)] = dead(sent)
    assert (key, value) == (b"k2", big)
    assert info["reason"] == "state_too_large" and info["stage"] == "ingest"
    assert "'big-2'" in info["detail"] and "over the limit of 30000" in info["detail"]
    assert ("trace", b"t") in headers
    assert stored(components, SEQUENCE, "big-2") is None
    assert all(stored(components, SEQUENCE, i) is not None for i in ok)
    assert INVENTORY in sent.records


async def test_notes_that_would_make_a_summary_too_large_are_dead_lettered_alone(
        runtime, components, sent, monkeypatch):
    """Actions noted on a correlation summary from elsewhere (the rekeyed topic, in a
    batch): the note that does not fit is refused; the batch's other notes are written."""
    monkeypatch.setattr(components.keyed.store, "limit", 3_000)

    def notes(n: int) -> bytes:
        return orjson.dumps([{"action": "a", "action_id": f"id-{i}", "pattern_id": "p",
                              "capability": "c", "priority": 1, "caused_by": None,
                              "at": now_iso()} for i in range(n)])

    big = notes(40)
    async with agent(runtime, "apply_rekeyed").test_context() as ag:
        for key, value in [(b"c-1", notes(1)), (b"c-2", big), (b"c-3", notes(2))]:
            await ag.put(value=value, key=key, headers=[(NOTE_HEADER, b"actions")],
                         wait=False)
        assert await settled(lambda: bool(dead(sent))
                             and components.keyed.store.load(TRACKER_ID, "c-3") is not None)
    store = components.keyed.store
    assert store.load(TRACKER_ID, "c-1") is not None
    assert store.load(TRACKER_ID, "c-2") is None
    [(key, value, info, _headers)] = dead(sent)
    assert (key, value, info["reason"]) == (b"c-2", big, "state_too_large")
