"""The event envelope: parsing and validating raw bytes, and building new events."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

MAX_EVENT_BYTES = 1024 * 1024
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


def parse_event(raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Validate raw message bytes as an envelope, or raise InvalidEvent."""
    if raw is None:
        raise InvalidEvent("empty", "message has no value (tombstone)")
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", str(exc)[:200]) from None
    return event_from_mapping(data)


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


def _type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )
