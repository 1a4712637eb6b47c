"""Action events: what the engine sends to a capability topic when a pattern completes.

An action copies the payload of the event that fired it (`data`), so it is bigger than that
event. Every record the engine or a worker sends is checked before it goes out
(`encode_record`): a record whose encoding is larger than `max_event_bytes` (key, headers
and Kafka's record overhead counted as the producer counts them) is not sent, since no
reader would accept it; the caller dead-letters what caused it instead. The producer's
`max_request_size` is the larger of `max_event_bytes` and Kafka's default message size, plus
`DEAD_LETTER_HEADROOM`, so that any record read can be dead-lettered with its headers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.streams import current_event

from choreo.envelope import ACTION_REQUESTED, ENGINE_SOURCE, Event, event_from_mapping, now_iso

Headers = list[tuple[str, bytes]]
_NAMESPACE = uuid.UUID("6f1c3d2e-8a4b-5c6d-9e0f-1a2b3c4d5e6f")
# Room above `max_event_bytes` in the producer's request size for a dead-letter record's
# headers (the detail is cut at 1,000 characters) and for signature headers.
DEAD_LETTER_HEADROOM = 64 * 1024
# Kafka's default `message.max.bytes`: a record refused as larger than `max_event_bytes`
# can be this large, and is dead-lettered with its bytes too.
BROKER_MESSAGE_BYTES = 1024 * 1024 + 12


def producer_request_size(max_event_bytes: int) -> int:
    """The producer's `max_request_size`: any record read, even one refused as too large,
    fits with dead-letter headers."""
    return max(max_event_bytes, BROKER_MESSAGE_BYTES) + DEAD_LETTER_HEADROOM


def record_limit(max_event_bytes: int, app: Any) -> int:
    """The largest record the engine or a worker sends: what readers accept, and at most the
    producer's `max_request_size` (an app without a producer, a replay's, has none)."""
    producer = getattr(getattr(app, "conf", None), "producer_max_request_size", None)
    return min(max_event_bytes, producer) if isinstance(producer, int) else max_event_bytes


def changelog_limit(app: Any) -> int:
    """The largest state record a table may write to its changelog: what the producer sends
    and the broker takes by default. Not `max_event_bytes`: state is not an event, and a
    small event limit must not refuse the state a flow of small events builds up."""
    producer = getattr(getattr(app, "conf", None), "producer_max_request_size", None)
    limit = BROKER_MESSAGE_BYTES
    return min(limit, producer) if isinstance(producer, int) else limit


def record_size(key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes]] | None) -> int:
    """A record's size as the producer checks it against `max_request_size`."""
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers or ()))


class RecordRefused(ValueError):
    """A record that cannot go out: too large for its limit, or not encodable as JSON."""

    def __init__(self, reason: str, detail: str, size: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.size = reason, detail, size


def encode_record(event: Event, key: bytes | None, limit: int,
                  headers_for: Callable[[bytes], Headers | None] = lambda _value: None
                  ) -> tuple[bytes, Headers | None]:
    """The event's bytes and headers (`headers_for(value)`, e.g. a signature over them), or
    RecordRefused("too_large" | "unencodable", detail)."""
    try:
        value = event.to_bytes()
    except (orjson.JSONEncodeError, TypeError) as exc:  # e.g. nested deeper than 254 levels
        raise RecordRefused("unencodable", f"{type(exc).__name__}: {exc}"[:300]) from None
    headers = headers_for(value)
    size = record_size(key, value, headers)
    if size > limit:
        raise RecordRefused("too_large", f"{size} bytes, over the limit of {limit}", size)
    return value, headers


def _fired_by() -> Any:
    """The record being processed (its `value` and `message`), None for a deadline."""
    record = current_event()
    return record if isinstance(getattr(record, "value", None), bytes) else None


def action_id(pattern_id: str, key: str, trigger_ids: Sequence[str], variant: str = "") -> str:
    """A deterministic id: the same pattern, key and triggers always give the same id."""
    # A JSON array is an unambiguous encoding: no choice of ids can make two inputs collide.
    return str(uuid.uuid5(_NAMESPACE, orjson.dumps([pattern_id, key, variant, *trigger_ids])
                          .decode()))


@dataclass(frozen=True, slots=True)
class Action:
    """An action ready to send: the capability it goes to, its priority and its envelope."""

    capability: str
    priority: int
    event: Event
    # The record being processed when the pattern fired (a Faust event), None when a
    # deadline fired it: what is dead-lettered if the action cannot be sent.
    fired_by: Any = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str | None:
        return self.event.correlation_id

    @property
    def name(self) -> str:
        return self.event.payload["action"]


def build_action(
    *,
    pattern_id: str,
    action: str,
    capability: str,
    priority: int,
    triggers: Sequence[Event],
    key: str | None = None,
    variant: str = "",
    extra: Mapping[str, Any] | None = None,
    timestamp: str | None = None,
) -> Action:
    """Build the action.requested envelope for a pattern fired by `triggers` (last one latest).

    Its event time is the last trigger's, or `timestamp` for an action fired by a deadline
    (a timeout or an absence), which happens when the deadline passes, not at an event.
    """
    last = triggers[-1]
    trigger_ids = [e.event_id for e in triggers]
    correlation_id = last.correlation_id
    payload: dict[str, Any] = {
        "action": action,
        "capability": capability,
        "pattern_id": pattern_id,
        "priority": priority,
        "trigger": {
            "event_ids": trigger_ids,
            "event_type": last.event_type,
            "event_types": [e.event_type for e in triggers],
        },
        "data": last.payload,
    }
    if extra:
        payload.update(extra)
    metadata: dict[str, Any] = {
        "version": 1,
        "causation_id": last.event_id,
        "emitted_at": now_iso(),
    }
    if correlation_id:
        metadata["correlation_id"] = correlation_id
    if key is not None and key != correlation_id:
        metadata["pattern_key"] = key
    event = event_from_mapping(
        {
            "event_id": action_id(pattern_id, key or correlation_id or "", trigger_ids, variant),
            "event_type": ACTION_REQUESTED,
            "timestamp": timestamp or last.timestamp,
            "source": ENGINE_SOURCE,
            "payload": payload,
            "metadata": metadata,
        }
    )
    return Action(capability=capability, priority=priority, event=event, fired_by=_fired_by())


def by_priority(actions: Sequence[Action]) -> list[Action]:
    """Actions in the order they go out: highest priority first, ties in declaration order."""
    return sorted(actions, key=lambda a: -a.priority)
