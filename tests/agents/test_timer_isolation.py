"""The deadline timer handles each entry alone: one whose deadline raises is dropped and
dead-lettered (`timer_error`) with its stored state, and the others fire."""

from __future__ import annotations

import time

import orjson
import pytest

from choreo.envelope import iso_from_ts, new_event
from choreo.metrics import TIMER_ERRORS
from tables.pattern_state import partition_for
from tests.agents.test_isolation import agent, dead, settled

pytestmark = pytest.mark.asyncio
ABSENCE = "abandoned-checkout"
REMINDERS = "capability.customer_communication"


def keys_on(partition: int, partitions: int, n: int) -> list[str]:
    ids = (f"cart-{i}" for i in range(10_000))
    return [i for i in ids if partition_for(i, partitions) == partition][:n]


def checkout(cart: str, at: float) -> bytes:
    return new_event("checkout_started", {"cart_id": cart}, source="shop",
                     correlation_id=cart, timestamp=iso_from_ts(at)).to_bytes()


def reminded(sent) -> list[str]:  # noqa: ANN001
    return sorted(orjson.loads(v)["metadata"]["correlation_id"] for v in sent.values(REMINDERS)
                  if orjson.loads(v)["payload"]["action"] == "send_checkout_reminder")


def stored(components, key: str) -> bytes | None:  # noqa: ANN001
    raw = components.keyed.store.table.data.get(f"{ABSENCE}\x1f{key}".encode())
    return None if raw is None else bytes(raw)


@pytest.fixture
def timer(components, monkeypatch):  # noqa: ANN001, ANN201
    """The engine's tick, as if this worker owned partition 0 and was ready."""
    engine = components.keyed
    monkeypatch.setattr(engine, "ready", lambda: True)
    monkeypatch.setattr(engine, "active_partitions", lambda: {0})

    async def no_drain() -> None:
        return None

    monkeypatch.setattr(engine, "drain_changelog", no_drain)
    return engine


async def test_one_entry_whose_deadline_raises_is_dead_lettered_and_the_others_fire(
        runtime, components, sent, timer, monkeypatch):
    carts = keys_on(0, runtime.settings.partitions, 3)
    bad = carts[1]
    hour_ago = time.time() - 3600  # their 30-minute windows have passed
    matcher = timer.matchers[ABSENCE]
    on_time = matcher.on_time

    def failing(state, watermark, owned=False):  # noqa: ANN001, ANN202
        if state and state.get("key") == bad:
            raise KeyError("core")  # e.g. a state in a format this code does not know
        return on_time(state, watermark, owned=owned)

    monkeypatch.setattr(matcher, "on_time", failing)
    errors = TIMER_ERRORS.labels("pattern-state")._value.get()
    async with agent(runtime, "match_events").test_context() as ag:
        for cart in carts:
            await ag.put(value=checkout(cart, hour_ago), key=cart.encode(), partition=0)
        # A later event on the partition moves its watermark past the windows.
        await ag.put(value=checkout("later", time.time()), key=b"later", partition=0)
        assert await settled(lambda: all(stored(components, c) for c in carts))
        before = stored(components, bad)
        await timer.tick()
        await timer.tick()  # the next tick does not meet the entry again
    assert reminded(sent) == sorted(c for c in carts if c != bad)
    assert stored(components, bad) is None  # dropped
    assert all(stored(components, c) is None for c in carts)  # the others fired and ended
    [(key, value, info, _headers)] = dead(sent)
    assert key == bad.encode() and value == before  # the stored state, as stored
    assert orjson.loads(value)["s"]["key"] == bad
    assert info["reason"] == "timer_error" and info["stage"] == "timer"
    assert info["exception"] == "KeyError"
    assert ABSENCE in info["detail"] and bad in info["detail"]
    assert TIMER_ERRORS.labels("pattern-state")._value.get() == errors + 1


async def test_an_unreadable_stored_entry_is_dropped_at_the_rebuild_and_the_others_fire(
        runtime, components, sent, timer):
    carts = keys_on(0, runtime.settings.partitions, 3)
    hour_ago = time.time() - 3600
    async with agent(runtime, "match_events").test_context() as ag:
        for cart in carts:
            await ag.put(value=checkout(cart, hour_ago), key=cart.encode(), partition=0)
        await ag.put(value=checkout("later", time.time()), key=b"later", partition=0)
        assert await settled(lambda: all(stored(components, c) for c in carts))
        corrupt = b"{not json"
        table = components.keyed.store.table
        table.data[f"{ABSENCE}\x1f{carts[0]}".encode()] = corrupt
        timer.store.stale = True  # as after a restart: the deadlines are read from the table
        await timer.tick()
    assert reminded(sent) == sorted(carts[1:])
    assert stored(components, carts[0]) is None
    [(key, value, info, _headers)] = dead(sent)
    assert (key, value) == (carts[0].encode(), corrupt)
    assert info["reason"] == "timer_error" and info["exception"] == "JSONDecodeError"
