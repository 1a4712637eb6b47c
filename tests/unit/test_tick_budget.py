"""The deadline timer yields to the stream once its budget is spent and the stream has work."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from streams.keyed import TICK_BUDGET, TICK_MAX, KeyedEngine


@pytest.mark.asyncio
async def test_timer_yields_only_when_over_budget_and_the_stream_waits() -> None:
    lock = asyncio.Lock()
    engine = SimpleNamespace(lock=lock, _stream_behind=lambda: False)
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


def test_timer_yields_over_budget_when_records_wait_for_the_stream() -> None:
    """Records fetched but not yet processed: the stream is not at the lock, but has work."""
    behind = [False]
    engine = SimpleNamespace(lock=asyncio.Lock(), _stream_behind=lambda: behind[0])
    now = time.monotonic()

    def stop(spent: float) -> bool:
        return KeyedEngine._yield_to_stream(engine, now - spent, TICK_BUDGET)  # type: ignore[arg-type]

    assert not stop(TICK_BUDGET + 0.1)  # nothing waits anywhere: go on
    behind[0] = True
    assert not stop(0.1)  # within budget
    assert stop(TICK_BUDGET + 0.1)


def test_the_stream_is_behind_when_the_highwater_is_past_what_was_processed() -> None:
    from aiokafka import TopicPartition

    tp = TopicPartition("events", 0)
    consumer = SimpleNamespace(assignment=lambda: {tp}, highwater=lambda _tp: 120,
                               _acked={tp: [99]}, _committed_offset={tp: 90})
    engine = SimpleNamespace(runtime=SimpleNamespace(app=SimpleNamespace(consumer=consumer)))
    assert KeyedEngine._stream_behind(engine)  # type: ignore[arg-type]
    consumer._acked = {tp: [119]}
    assert not KeyedEngine._stream_behind(engine)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_long_batch_gives_the_event_loop_turns() -> None:
    """Other tasks (the producer's sender, the consumer's hand-over) run during a batch."""
    from streams.keyed import TURN_SECONDS, in_turns

    ran_during: list[int] = []
    done: list[int] = []

    async def other() -> None:
        while True:
            ran_during.append(len(done))
            await asyncio.sleep(0)

    class Record:  # Faust's events are weakly referenced while processed
        def __init__(self, n: int) -> None:
            self.n = n

    async def work(record: Record) -> None:
        time.sleep(TURN_SECONDS / 4)  # synchronous, as a record's matching is
        done.append(record.n)

    records = [Record(i) for i in range(20)]
    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    ran_during.clear()
    await in_turns(records, work)  # type: ignore[arg-type]
    task.cancel()
    assert done == list(range(20))  # in order, all of them
    assert any(0 < n < 20 for n in ran_during)  # the other task ran in the middle
