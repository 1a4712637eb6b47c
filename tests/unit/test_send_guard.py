"""A send that fails unnoticed must stop the next commit (see choreo.app.guard_sends)."""

from __future__ import annotations

import asyncio

import pytest

from choreo.app import SendFailed, guard_sends


class FakeProducer:
    def __init__(self) -> None:
        self.flushed = 0
        self.futures: list[asyncio.Future] = []

    async def send(self, topic, key, value, partition, timestamp, headers):  # noqa: ANN001, ANN201
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    async def flush(self) -> None:
        self.flushed += 1

    def _settings_extra(self) -> dict:
        return {}


def test_flush_raises_after_a_failed_send_and_not_before():
    async def run():
        producer = guard_sends(FakeProducer())
        ok = await producer.send("t", None, b"1", None, None, None)
        bad = await producer.send("t", None, b"2", None, None, None)
        ok.set_result("meta")
        await producer.flush()  # nothing failed yet
        bad.set_exception(TimeoutError("batch expired"))
        await asyncio.sleep(0)  # done callbacks run
        with pytest.raises(SendFailed, match="1 send"):
            await producer.flush()
        return producer

    producer = asyncio.run(run())
    assert producer.flushed == 2
