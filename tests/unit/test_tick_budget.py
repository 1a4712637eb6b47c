"""The deadline timer yields to the stream once its budget is spent and the stream waits."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from streams.keyed import TICK_BUDGET, TICK_MAX, KeyedEngine


@pytest.mark.asyncio
async def test_timer_yields_only_when_over_budget_and_the_stream_waits() -> None:
    lock = asyncio.Lock()
    engine = SimpleNamespace(lock=lock)
    now = time.monotonic()

    def stop(spent: float, budget: float | None = TICK_BUDGET) -> bool:
        return KeyedEngine._yield_to_stream(engine, now - spent, budget)  # type: ignore[arg-type]

    await lock.acquire()  # the timer holds it between batches in the real loop
    assert not stop(0.1)  # within budget
    assert not stop(TICK_BUDGET + 0.1)  # over budget, but nothing waits: go on
    waiter = asyncio.create_task(lock.acquire())
    await asyncio.sleep(0)
    assert not stop(0.1)  # the stream waits, but the budget is not spent
    assert stop(TICK_BUDGET + 0.1)  # both: give the stream its turn
    assert not stop(TICK_MAX + 1, budget=None)  # a replay runs everything that is due
    lock.release()
    await waiter
    lock.release()
    assert stop(TICK_MAX + 0.1)  # nothing waits, but a tick never runs longer than this
