"""Dead-letter records: the original bytes untouched, the reason and origin in headers.

This follows Kafka Connect's convention: the value and key are exactly what arrived, so a
record can be re-driven as it was; headers say why it was refused and where it came from.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from choreo.envelope import now_iso

log = logging.getLogger(__name__)

HEADER_PREFIX = "choreo.dlq."


@dataclass(frozen=True)
class Origin:
    topic: str
    partition: int
    offset: int


def dead_letter_headers(reason: str, detail: str, origin: Origin, stage: str) -> list[
    tuple[str, bytes]
]:
    """Headers for a dead-lettered record."""
    values = {
        "reason": reason,
        "detail": detail[:1000],
        "stage": stage,
        "topic": origin.topic,
        "partition": str(origin.partition),
        "offset": str(origin.offset),
        "at": now_iso(),
    }
    return [(HEADER_PREFIX + name, value.encode()) for name, value in values.items()]


def read_dead_letter_headers(headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None
                             ) -> dict[str, str]:
    """The choreo.dlq.* headers of a record as a plain dict without the prefix."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return {
        name[len(HEADER_PREFIX):]: (value or b"").decode("utf-8", "replace")
        for name, value in items
        if name.startswith(HEADER_PREFIX)
    }


class BrokerFault(Exception):
    """An error that is the broker's or the producer's, never a record's (`broker_fault`)."""


def broker_fault(exc: BaseException | None) -> bool:
    """Whether `exc` is the broker or the producer failing (not one record's fault): the
    agent must stop without committing and read the record again, not dead-letter it."""
    while exc is not None:
        if isinstance(exc, MessageSizeTooLargeError):
            return False
        if isinstance(exc, KafkaError | BrokerFault):
            return True
        exc = exc.__cause__  # faust's ProducerSendError wraps aiokafka's error
    return False


async def isolate(work: Awaitable[None],
                  refuse: Callable[[Exception], Awaitable[None]]) -> bool:
    """Await one record's `work`; an unexpected exception is handed to `refuse` (which
    dead-letters the record) instead of ending the agent. False when that happened.

    Cancellation and broker faults are raised: they are not the record's fault.
    """
    try:
        await work
    except Exception as exc:  # noqa: BLE001 - one bad record must not stop the stream
        if broker_fault(exc):
            raise
        log.exception("handling a record failed; dead-lettering it")
        await refuse(exc)
        return False
    return True


def exception_headers(exc: BaseException) -> list[tuple[str, bytes]]:
    """The `choreo.dlq.exception` header: the class of the exception that stopped a record."""
    return [(HEADER_PREFIX + "exception", type(exc).__name__.encode())]
