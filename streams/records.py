"""What every engine agent does with a record it reads: parse it within the file's limits,
bound its event time by the wall clock, and dead-letter it, alone, when handling it fails.

`isolated` draws the line between the two kinds of failure an agent meets:

* **The record's**: anything a record can provoke (a bug a strange value reaches, a matcher or
  condition raising, a value no serializer writes). The record is dead-lettered with reason
  `internal_error` (or the exception's `dead_letter_reason`, e.g. `state_too_large`), its
  original bytes and headers, the stage, and the exception's class and
  message; the agent goes on with the next record, and a batch keeps the others' effects.
* **The infrastructure's**: a send the broker did not acknowledge (`SendFailed` from
  `guard_sends`, any `KafkaError`), Faust's own errors (`FaustError`: a table whose changelog
  is not there yet, `PartitionsMismatch`; the producer or consumer not ready), I/O and
  connection errors (`OSError`), memory exhausted, cancellation (a rebalance or shutdown
  stopping the agent). These propagate: the agent stops before its offsets are committed and
  the records are read again once it is back. Dead-lettering them would lose good records.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import FaustError

from choreo.app import Runtime, SendFailed
from choreo.dead_letter import HEADER_PREFIX, Origin
from choreo.envelope import Event, check_event_time, parse_event

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"
EXCEPTION_HEADER = HEADER_PREFIX + "exception"  # the class of the exception, e.g. "KeyError"
# Failures that are not the record's: they stop the agent instead of dead-lettering it.
# (asyncio.CancelledError, KeyboardInterrupt and SystemExit are not Exceptions at all.)
INFRASTRUCTURE: tuple[type[BaseException], ...] = (SendFailed, KafkaError, FaustError, OSError,
                                                   MemoryError)


def read_event(runtime: Runtime, raw: bytes | None) -> Event:
    """Parse a record's value with the file's limits ([defaults] max_event_bytes and
    max_event_depth); raises InvalidEvent."""
    defaults = runtime.choreography.defaults
    return parse_event(raw, defaults.max_event_bytes, defaults.max_event_depth)


def check_time(runtime: Runtime, event: Event, now: float) -> None:
    """Refuse (InvalidEvent "future") an event stamped more than [defaults] max_future_skew
    after `now`, the wall clock of the worker (a replay's clock in a replay)."""
    check_event_time(event, now, runtime.choreography.defaults.max_future_skew)


def origin_of(record: faust.EventT) -> Origin:
    message = record.message
    return Origin(message.topic, message.partition, message.offset)


def original_headers(record: faust.EventT) -> list[tuple[str, bytes]]:
    """The record's own headers, as a list, without any `choreo.dlq.*` a producer put there
    (the dead-letter headers are the engine's to write)."""
    headers: Any = record.message.headers or []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, value) for name, value in items if not name.startswith(HEADER_PREFIX)]


async def refuse(runtime: Runtime, record: faust.EventT, reason: str, detail: str,
                 stage: str, origin: Origin | None = None, key: bytes | None = None,
                 extra: list[tuple[str, bytes]] | None = None) -> None:
    """Dead-letter a record as it arrived (value, key, headers) with the reason."""
    message = record.message
    await runtime.dead_letter(record.value, key if key is not None else message.key, reason,
                              detail, origin or origin_of(record), stage,
                              extra=[*original_headers(record), *(extra or [])])


async def isolated(runtime: Runtime, record: faust.EventT, stage: str,
                   work: Callable[[], Awaitable[Any]], origin: Origin | None = None) -> bool:
    """Run `work` (the handling of `record`); if it raises, dead-letter the record with
    `internal_error` and return False. Infrastructure failures propagate (module docstring).

    `origin`: where the record was first read, if not where it is now (a re-keyed record).
    """
    try:
        await work()
    except INFRASTRUCTURE:
        raise
    except Exception as exc:  # noqa: BLE001 - the record's failure, isolated here
        name = type(exc).__name__
        log.exception("%s: handling %s:%s@%s failed; the record is dead-lettered", stage,
                      record.message.topic, record.message.partition, record.message.offset)
        # An exception may name its own reason (e.g. StateTooLarge: state_too_large).
        reason = getattr(exc, "dead_letter_reason", INTERNAL_ERROR)
        await refuse(runtime, record, reason, f"{name}: {exc}"[:1000], stage, origin,
                     extra=[(EXCEPTION_HEADER, name.encode())])
        return False
    return True
