"""The event envelope: parsing and validating raw bytes, and building new events."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

# The source of what the engine publishes, and the event type of the actions it asks for.
ENGINE_SOURCE = "choreo.engine"
ACTION_REQUESTED = "action.requested"
MAX_EVENT_BYTES = 1024 * 1024
# Nesting levels of objects and arrays an event may have, the envelope itself being one.
# orjson reads 1,024 levels but writes only 254, and the engine writes each event again,
# wrapped a few levels deeper, in the actions it fires: 64 leaves room for both.
MAX_EVENT_DEPTH = 64
MAX_DEPTH_LIMIT = 200  # the highest `max_event_depth` a file may set (254 less the wrapping)
# Characters an id field may have: event_id, event_type, source and the metadata ids.
MAX_ID_CHARS = 256
# Seconds an event may be stamped ahead of the wall clock reading it (Kafka's
# log.message.timestamp.after.max.ms plays the same part for record timestamps).
MAX_FUTURE_SKEW = 300.0
REQUIRED_FIELDS = ("event_id", "event_type", "timestamp", "source", "payload")
EVENT_TYPE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


class InvalidEvent(ValueError):
    """Raised for input that is not a valid envelope; `reason` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event. `ts` is the event time in seconds since the epoch."""

    event_id: str
    event_type: str
    timestamp: str
    ts: float
    source: str
    payload: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def correlation_id(self) -> str | None:
        value = self.metadata.get("correlation_id")
        return value if isinstance(value, str) and value else None

    @property
    def causation_id(self) -> str | None:
        value = self.metadata.get("causation_id")
        return value if isinstance(value, str) and value else None

    def as_dict(self) -> dict[str, Any]:
        """The envelope as plain data, as it travels on the wire."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "source": self.source,
            "payload": self.payload,
            "metadata": self.metadata,
        }

    def context(self) -> dict[str, Any]:
        """The variables a `when` condition sees."""
        return {
            "payload": self.payload,
            "metadata": self.metadata,
            "source": self.source,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "timestamp": self.timestamp,
        }

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.as_dict())


def parse_timestamp(value: object) -> float:
    """Parse an ISO 8601 timestamp that carries a zone; return epoch seconds."""
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"timestamp must be a string, got {_type(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("bad_timestamp", f"timestamp {value[:64]!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise InvalidEvent(
            "bad_timestamp", f"timestamp {value[:64]!r} has no zone (add Z or +00:00)"
        )
    return parsed.timestamp()


def parse_event(raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES,
                max_depth: int = MAX_EVENT_DEPTH) -> Event:
    """Validate raw message bytes as an envelope, or raise InvalidEvent.

    Whatever it accepts can be written again (`Event.to_bytes`): it is at most `max_depth`
    levels deep, well under what orjson writes.
    """
    if raw is None:
        raise InvalidEvent("empty", "message has no value (tombstone)")
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", str(exc)[:200]) from None
    # Fewer brackets than levels allowed cannot nest too deep: most events skip the walk.
    if raw.count(b"{") + raw.count(b"[") > max_depth and too_deep(data, max_depth):
        raise InvalidEvent("too_deep", f"objects and arrays nest more than {max_depth} levels "
                                       "deep (defaults.max_event_depth)")
    return event_from_mapping(data)


def too_deep(data: object, limit: int) -> bool:
    """Whether objects and arrays in `data` nest more than `limit` levels (the outermost is
    level 1). Iterative: a deep value cannot exhaust the stack."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict)
                                                      else node)
                     if isinstance(child, dict | list))
    return False


def check_event_time(event: Event, now: float, max_skew: float = MAX_FUTURE_SKEW) -> None:
    """Raise InvalidEvent("future") if the event is stamped more than `max_skew` seconds
    after `now` (the wall clock of the worker reading it): event time drives watermarks,
    de-duplication horizons and deadlines, which must not jump to a producer's far future."""
    ahead = event.ts - now
    if ahead > max_skew:
        raise InvalidEvent("future", f"timestamp {event.timestamp[:64]!r} is {ahead:.0f} s "
                                     f"ahead of this worker's clock; at most {max_skew:g} s "
                                     "is allowed (defaults.max_future_skew)")


def event_from_mapping(data: object) -> Event:
    """Validate decoded JSON as an envelope, or raise InvalidEvent."""
    if not isinstance(data, dict):
        raise InvalidEvent("not_object", f"an event is a JSON object, got {_type(data)}")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise InvalidEvent("missing_field", f"missing required field(s): {', '.join(missing)}")
    for name in ("event_id", "event_type", "source"):
        value = data[name]
        if not isinstance(value, str) or not value:
            raise InvalidEvent(
                "wrong_type", f"{name} must be a non-empty string, got {_type(value)}"
            )
        _check_length(name, value)
    if not EVENT_TYPE.match(data["event_type"]):
        raise InvalidEvent(
            "bad_event_type",
            f"event_type {data['event_type'][:64]!r} must be dot-separated words "
            "of letters, digits, _ and -",
        )
    if not isinstance(data["payload"], dict):
        raise InvalidEvent("wrong_type", f"payload must be an object, got {_type(data['payload'])}")
    metadata = data.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidEvent("wrong_type", f"metadata must be an object, got {_type(metadata)}")
    for name in ("correlation_id", "causation_id"):
        if name in metadata and metadata[name] is not None and not isinstance(metadata[name], str):
            raise InvalidEvent(
                "wrong_type", f"metadata.{name} must be a string, got {_type(metadata[name])}"
            )
        if isinstance(metadata.get(name), str):
            _check_length(f"metadata.{name}", metadata[name])
    ts = parse_timestamp(data["timestamp"])
    return Event(
        event_id=data["event_id"],
        event_type=data["event_type"],
        timestamp=data["timestamp"],
        ts=ts,
        source=data["source"],
        payload=data["payload"],
        metadata=metadata,
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def new_event(
    event_type: str,
    payload: Mapping[str, Any],
    *,
    source: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    event_id: str | None = None,
    timestamp: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Event:
    """Build a valid event; a random id and the current time unless given."""
    meta: dict[str, Any] = {"version": 1, **(metadata or {})}
    if correlation_id:
        meta["correlation_id"] = correlation_id
    if causation_id:
        meta["causation_id"] = causation_id
    stamp = timestamp or now_iso()
    return event_from_mapping(
        {
            "event_id": event_id or str(uuid.uuid4()),
            "event_type": event_type,
            "timestamp": stamp,
            "source": source,
            "payload": dict(payload),
            "metadata": meta,
        }
    )


def _check_length(name: str, value: str) -> None:
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent("too_long", f"{name} has {len(value)} characters; at most "
                                       f"{MAX_ID_CHARS} are allowed ({value[:64]!r}...)")


def _type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )
