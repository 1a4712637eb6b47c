"""Action events: what the engine sends to a capability topic when a pattern completes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from choreo.envelope import Event, event_from_mapping, now_iso

ENGINE_SOURCE = "choreo.engine"
ACTION_REQUESTED = "action.requested"
_NAMESPACE = uuid.UUID("6f1c3d2e-8a4b-5c6d-9e0f-1a2b3c4d5e6f")


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
    return Action(capability=capability, priority=priority, event=event)


def by_priority(actions: Sequence[Action]) -> list[Action]:
    """Actions in the order they go out: highest priority first, ties in declaration order."""
    return sorted(actions, key=lambda a: -a.priority)
