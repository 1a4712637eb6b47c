"""`isolated`: a record's failure is dead-lettered; the infrastructure's stops the agent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import PartitionsMismatch

from choreo.app import SendFailed
from choreo.dead_letter import read_dead_letter_headers
from streams.records import isolated

pytestmark = pytest.mark.asyncio


@dataclass
class Message:
    topic: str = "events"
    partition: int = 1
    offset: int = 7
    key: bytes | None = b"k"
    headers: list = field(default_factory=lambda: [("trace", b"t"),
                                                   ("choreo.dlq.reason", b"forged")])


@dataclass
class Record:
    value: bytes | None = b'{"x": 1}'
    message: Message = field(default_factory=Message)


class Runtime:
    def __init__(self) -> None:
        self.dead: list[tuple] = []

    async def dead_letter(self, value, key, reason, detail, origin, stage,  # noqa: ANN001
                          topic=None, extra=None) -> None:  # noqa: ANN001
        self.dead.append((value, key, reason, detail, origin, stage, extra))


async def test_a_failure_of_the_record_dead_letters_it_with_its_headers():
    runtime, record = Runtime(), Record()

    async def work() -> None:
        raise ZeroDivisionError("division by zero")

    assert await isolated(runtime, record, "ingest", work) is False  # type: ignore[arg-type]
    [(value, key, reason, detail, origin, stage, extra)] = runtime.dead
    assert (value, key, reason, stage) == (b'{"x": 1}', b"k", "internal_error", "ingest")
    assert detail == "ZeroDivisionError: division by zero"
    assert (origin.topic, origin.partition, origin.offset) == ("events", 1, 7)
    assert ("trace", b"t") in extra  # the record's own headers
    assert read_dead_letter_headers(extra) == {"exception": "ZeroDivisionError"}  # no forgery


async def test_work_that_succeeds_is_not_dead_lettered():
    runtime = Runtime()

    async def work() -> None:
        return None

    assert await isolated(runtime, Record(), "ingest", work) is True  # type: ignore[arg-type]
    assert runtime.dead == []


@pytest.mark.parametrize("failure", [
    SendFailed("1 send(s) failed"), KafkaTimeoutError(), MemoryError(), asyncio.CancelledError(),
    PartitionsMismatch("changelog topic has 0 partitions"), ConnectionResetError()])
async def test_infrastructure_failures_propagate_and_nothing_is_dead_lettered(failure):
    runtime = Runtime()

    async def work() -> None:
        raise failure

    with pytest.raises(type(failure)):
        await isolated(runtime, Record(), "ingest", work)  # type: ignore[arg-type]
    assert runtime.dead == []
