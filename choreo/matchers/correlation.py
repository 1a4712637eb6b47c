"""Correlation tracking: a running summary of every event and action sharing a correlation id.

Kept per correlation id like a pattern's state, and forgotten `correlation_ttl` of event time
after the correlation's latest event, so the table returns to its baseline once flows end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from choreo.actions import Action
from choreo.envelope import Event, iso_from_ts, parse_timestamp
from choreo.matchers.base import Outcome

TRACKER_ID = "~correlation"  # the pseudo pattern id its table keys carry
MAX_SOURCES = 64
MAX_ACTIONS = 256

NOTE_HEADER = "choreo.note"  # "actions": the value lists actions to record on a correlation


def action_note(action: Action) -> dict:
    """An action as a correlation summary keeps it."""
    return {"action": action.name, "action_id": action.event.event_id,
            "pattern_id": action.event.payload["pattern_id"], "capability": action.capability,
            "priority": action.priority, "caused_by": action.event.metadata.get("causation_id"),
            "at": action.event.timestamp}


class CorrelationTracker:
    """Pure: each call takes a snapshot and returns the new one, like the matchers."""

    kind = "correlation"

    def __init__(self, ttl: float, trail_limit: int = 256) -> None:
        self.ttl = ttl
        self.trail_limit = trail_limit  # events kept per correlation for its trail view

    def on_event(self, state: dict | None, event: Event, watermark: float,
                 position: tuple[int, int] | None = None) -> Outcome:
        """Count the event; `position` is its (partition, offset) on the events topic."""
        key = event.correlation_id
        if key is None:
            return Outcome(state, [], unkeyed=True)
        st = dict(state) if state else {"key": key, "n": 0, "types": {}, "sources": [],
                                         "first": event.ts, "last": event.ts, "actions": []}
        st["types"] = {**st["types"]}
        st["n"] += 1
        st["types"][event.event_type] = st["types"].get(event.event_type, 0) + 1
        if event.source not in st["sources"]:
            if len(st["sources"]) < MAX_SOURCES:
                st["sources"] = [*st["sources"], event.source]
            else:
                st["more_sources"] = True
        st["first"] = min(st["first"], event.ts)
        st["last"] = max(st["last"], event.ts)
        st["wm"] = max(watermark, st.get("wm", -math.inf), event.ts)
        if self.trail_limit:
            ref = [event.event_id, event.event_type, event.ts, event.source,
                   event.metadata.get("causation_id"), *(position or (None, None))]
            trail = [*st.get("trail", []), ref]
            if len(trail) > self.trail_limit:
                st["trail_dropped"] = st.get("trail_dropped", 0) + len(trail) - self.trail_limit
                trail = trail[-self.trail_limit:]
            st["trail"] = trail
        return Outcome(st, [])

    def events(self, state: dict | None) -> list[dict[str, Any]]:
        """The correlation's events in event-time order, each with its global position
        (partition, offset of the events topic) and its position in the stream."""
        if not state:
            return []
        refs = sorted(state.get("trail", []), key=lambda r: (r[2], r[5] or 0, r[6] or 0))
        first = state.get("trail_dropped", 0)
        return [{"stream_position": first + i, "event_id": r[0], "event_type": r[1],
                 "timestamp": iso_from_ts(r[2]), "source": r[3], "causation_id": r[4],
                 "partition": r[5], "offset": r[6]} for i, r in enumerate(refs)]

    def note_actions(self, state: dict | None, key: str, notes: Iterable[dict]) -> dict | None:
        """Record actions (as `action_note` gives them) the correlation triggered, each once."""
        notes = list(notes)
        if not notes:
            return state
        st = dict(state) if state else {"key": key, "n": 0, "types": {}, "sources": [],
                                         "first": None, "last": None, "actions": []}
        known = {a["action_id"] for a in st["actions"]}
        added = [n for n in notes if n["action_id"] not in known]
        if added:
            st["actions"] = (st["actions"] + added)[-MAX_ACTIONS:]
            if st["last"] is None:  # actions known before any event: keep them for the ttl
                at = max(parse_timestamp(n["at"]) for n in added)
                st["first"] = st["last"] = at
        return st

    def on_time(self, state: dict | None, watermark: float) -> Outcome:
        if not state:
            return Outcome(None, [])
        due = self.deadline(state)
        if due is not None and watermark >= due:
            return Outcome(None, [])
        return Outcome(state, [])

    def deadline(self, state: dict | None) -> float | None:
        if not state or state.get("last") is None:
            return None
        return math.nextafter(state["last"] + self.ttl, math.inf)

    def describe(self, state: dict | None, watermark: float) -> dict[str, Any]:
        if not state:
            return {"correlation_id": None, "found": False}
        n, first, last = state["n"], state["first"], state["last"]
        duration = (last - first) if n else 0.0
        return {
            "correlation_id": state["key"],
            "found": True,
            "event_count": n,
            "event_types": dict(sorted(state["types"].items(), key=lambda kv: (-kv[1], kv[0]))),
            "sources": state["sources"],
            "more_sources": state.get("more_sources", False),
            "first_timestamp": iso_from_ts(first) if first is not None else None,
            "last_timestamp": iso_from_ts(last) if last is not None else None,
            "duration_seconds": round(duration, 6),
            "average_interval_seconds": round(duration / (n - 1), 6) if n > 1 else None,
            "actions": state["actions"],
            "events_kept": len(state.get("trail", [])),
            "events_dropped": state.get("trail_dropped", 0),
            "forget_after": iso_from_ts(last + self.ttl) if last is not None else None,
        }
