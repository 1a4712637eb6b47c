"""What every keyed matcher shares: keys, snapshots, lateness and the reorder buffer.

A matcher is a pure state machine over one key's JSON snapshot. The caller (the Faust
agent) loads the snapshot for the event's key, calls `on_event` or `on_time` with the
partition's watermark, stores `Outcome.state` (deleting the key when it is None) and sends
`Outcome.actions` in order.

Time is event time. With L the pattern's `allowed_lateness` and W the watermark:

* an event with ts + L < W is late: not applied, `Outcome.late` is set;
* any other event waits in the key's reorder buffer until ts + L <= W, and buffered events
  are applied in (ts, arrival) order, so events out of order within L give the same result
  as events in order (with L = 0 an event is applied at once);
* a deadline d (a sequence step, an absence window, a window closing) fires once it has
  passed, when d + L < W; events at exactly d are applied before it.

`deadline(state)` is the smallest watermark at which `on_time` has something to do.
The snapshot remembers the highest watermark its key has seen, so a lower one handed in
later (say after a restart) cannot reorder what was applied. Only events a pattern cares
about (type, filters and conditions hold) are buffered or reported late; a matcher does not
de-duplicate, the same event delivered twice counts twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from choreo.actions import Action, build_action
from choreo.envelope import Event, iso_from_ts
from choreo.matching import PatternStats, spec_accepts
from choreo.patterns import EventSpec, Pattern

Snapshot = dict[str, Any]
# What a snapshot keeps of one event's payload and metadata, at most (`bounded`).
SNAPSHOT_PAYLOAD_BYTES = 64 * 1024
SNAPSHOT_METADATA_BYTES = 16 * 1024
TRIMMED = "_choreo_trimmed"  # the marker a trimmed payload or metadata carries
MAX_TRIMMED_NAMES = 16  # field names listed in the marker, at most (64 characters each)
_MARKER_ROOM = MAX_TRIMMED_NAMES * (64 * 4 + 3) + 128  # the marker's JSON, at most


@dataclass(frozen=True)
class Outcome:
    """What one call did: the key's new snapshot (None = delete the key) and actions to send."""

    state: dict | None
    actions: list[Action]
    late: bool = False  # the event was late and not applied
    unkeyed: bool = False  # the event has no key for this pattern and was not counted


class Matcher(Protocol):
    pattern: Pattern

    def on_event(self, state: dict | None, event: Event, watermark: float) -> Outcome: ...

    def on_time(self, state: dict | None, watermark: float) -> Outcome: ...

    def deadline(self, state: dict | None) -> float | None: ...

    def describe(self, state: dict | None, watermark: float) -> dict[str, Any]: ...


def key_for(pattern: Pattern, event: Event) -> str | None:
    """The key a pattern keeps state under: `group_by`, else metadata.correlation_id."""
    path = pattern.group_by
    if path is None:
        return event.correlation_id
    if path == "source":
        return event.source or None
    root, *parts = path.split(".")
    value: Any = event.payload if root == "payload" else event.metadata
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)
    return None  # objects, arrays and null do not name a key


def event_to_snapshot(event: Event, full: bool = True) -> Snapshot:
    """The event as plain data for a state snapshot; without payload and metadata if not full.

    Payload and metadata are kept within `SNAPSHOT_PAYLOAD_BYTES` / `SNAPSHOT_METADATA_BYTES`
    (`bounded`): what a pattern keeps of one event is a few dozen KiB at most, whatever the
    event's size, so a key's state fits in a changelog record.
    """
    snap: Snapshot = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "timestamp": event.timestamp,
        "ts": event.ts,
        "source": event.source,
    }
    if full:
        snap["payload"] = bounded(event.payload, SNAPSHOT_PAYLOAD_BYTES)
        snap["metadata"] = bounded(event.metadata, SNAPSHOT_METADATA_BYTES,
                                   ("correlation_id", "causation_id"))
    return snap


def bounded(data: dict[str, Any], budget: int, first: Sequence[str] = ()) -> dict[str, Any]:
    """`data` if its JSON is at most `budget` bytes; else its top-level fields that fit,
    `first` ones first, then in order, each one whole, and under `TRIMMED` the names of the
    fields left out (at most `MAX_TRIMMED_NAMES`) and the size of the original.

    Conditions and filters are judged on the whole event when it arrives; what is trimmed
    is only what a pattern keeps, i.e. the `data` of the action the event later fires.
    """
    size = len(orjson.dumps(data))
    if size <= budget:
        return data
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    left = budget - _MARKER_ROOM
    order = [*(n for n in first if n in data), *(n for n in data if n not in first)]
    for name in order:
        value = data[name]
        cost = len(orjson.dumps({name: value}))
        if cost <= left:
            kept[name] = value
            left -= cost
        else:
            dropped.append(name)
    kept[TRIMMED] = {"fields": [n[:64] for n in dropped[:MAX_TRIMMED_NAMES]],
                     "fields_total": len(dropped), "original_bytes": size}
    return kept


def event_from_snapshot(snap: Snapshot) -> Event:
    return Event(
        event_id=snap["event_id"],
        event_type=snap["event_type"],
        timestamp=snap["timestamp"],
        ts=snap["ts"],
        source=snap["source"],
        payload=snap.get("payload", {}),
        metadata=snap.get("metadata", {}),
    )


def compact(snap: Snapshot) -> Snapshot:
    """A held event that will never be the last trigger needs neither payload nor metadata."""
    return {k: v for k, v in snap.items() if k not in ("payload", "metadata")}


def event_ref(snap: Snapshot) -> dict[str, Any]:
    """How the web view shows a held event."""
    return {"event_id": snap["event_id"], "event_type": snap["event_type"],
            "timestamp": snap["timestamp"]}


class KeyedMatcher:
    """The lateness, buffer and deadline loop; each kind supplies the hooks below.

    Snapshot layout: {"key", "wm" (highest watermark seen), "seq" (arrival counter, reset
    when the buffer empties), "buf" (events waiting for the watermark, sorted by ts then
    arrival), "core" (the kind's own state, which drops its fields when they empty)}.
    """

    kind = "pattern"

    def __init__(self, pattern: Pattern, stats: PatternStats) -> None:
        self.pattern = pattern
        self.stats = stats

    # --- hooks for each kind -----------------------------------------------------------

    def classify(self, event: Event) -> Any:
        """JSON marks saying which parts of the pattern the event satisfies; None if none."""
        raise NotImplementedError

    def apply(self, core: dict, event: Event, marks: Any, key: str) -> list[Action]:
        """Apply one released event, in event-time order."""
        raise NotImplementedError

    def next_deadline(self, core: dict) -> float | None:
        """The earliest event time at which something in core expires."""
        raise NotImplementedError

    def expire(self, core: dict, at: float, key: str) -> list[Action]:
        """The deadline `at` has passed: drop (and maybe fire) what expires at or before it."""
        raise NotImplementedError

    def describe_core(self, core: dict, now: float) -> dict[str, Any]:
        raise NotImplementedError

    # --- the Matcher interface ---------------------------------------------------------

    def on_event(self, state: dict | None, event: Event, watermark: float) -> Outcome:
        key = key_for(self.pattern, event)
        if key is None:
            return Outcome(state, [], unkeyed=True)
        self.stats.seen[self.pattern.id] += 1
        st = _copy(state) if state else {"key": key, "wm": watermark, "seq": 0, "buf": [],
                                          "core": {}}
        wm = st["wm"] = max(watermark, event.ts, st["wm"])
        marks = self.classify(event)
        late = False
        if marks is not None:
            if event.ts + self.pattern.allowed_lateness < wm:
                late = True
            else:
                st["seq"] += 1
                st["buf"].append({"seq": st["seq"], "m": marks, "e": event_to_snapshot(event)})
                st["buf"].sort(key=lambda item: (item["e"]["ts"], item["seq"]))
        actions = self._advance(st, wm)
        return Outcome(_packed(st), actions, late=late)

    def on_time(self, state: dict | None, watermark: float, owned: bool = False) -> Outcome:
        """Run what the watermark has reached; `owned`: the caller hands over `state` (it was
        just read from the table), so it is changed in place instead of copied."""
        if not state:
            return Outcome(None, [])
        st = state if owned else _copy(state)
        wm = st["wm"] = max(watermark, st["wm"])
        actions = self._advance(st, wm)
        return Outcome(_packed(st), actions)

    def deadline(self, state: dict | None) -> float | None:
        if not state:
            return None
        lateness = self.pattern.allowed_lateness
        times = []
        if state["buf"]:
            times.append(state["buf"][0]["e"]["ts"] + lateness)
        due = self.next_deadline(state["core"])
        if due is not None:
            times.append(math.nextafter(due + lateness, math.inf))
        return min(times) if times else None

    def describe(self, state: dict | None, watermark: float) -> dict[str, Any]:
        """The key's state for the web view: buffered events, deadlines, the kind's progress."""
        out: dict[str, Any] = {"pattern_id": self.pattern.id, "kind": self.kind}
        if not state:
            return {**out, "key": None, "empty": True}
        wm = max(watermark, state["wm"])
        due = self.deadline(state)
        out.update(
            key=state["key"],
            empty=False,
            watermark=_iso(wm),
            applied_up_to=_iso(wm - self.pattern.allowed_lateness),
            next_deadline=_iso(due) if due is not None else None,
            buffered=[event_ref(item["e"]) for item in state["buf"]],
        )
        out.update(self.describe_core(state["core"], wm - self.pattern.allowed_lateness))
        return out

    # --- helpers for the kinds ---------------------------------------------------------

    def matches(self, spec: EventSpec, event: Event) -> bool:
        """Type, filters and conditions; a condition that fails to evaluate counts as no."""
        return spec.type_matches(event.event_type) and spec_accepts(
            self.pattern, spec, event, self.stats)

    def action(self, triggers: Sequence[Event], key: str, variant: str = "",
               extra: dict[str, Any] | None = None, action: str | None = None,
               capability: str | None = None, at: float | None = None) -> Action:
        return build_action(
            pattern_id=self.pattern.id,
            action=action or self.pattern.action,
            capability=capability or self.pattern.capability,
            priority=self.pattern.priority,
            triggers=triggers,
            key=key,
            variant=variant,
            extra=extra,
            timestamp=iso_from_ts(at) if at is not None else None,
        )

    def _advance(self, st: dict, wm: float) -> list[Action]:
        """Apply buffered events and fire deadlines, in event-time order, up to the watermark."""
        lateness = self.pattern.allowed_lateness
        buf, core, key = st["buf"], st["core"], st["key"]
        actions: list[Action] = []
        while True:
            head = buf[0] if buf and buf[0]["e"]["ts"] + lateness <= wm else None
            due = self.next_deadline(core)
            if head is not None and (due is None or head["e"]["ts"] <= due):
                buf.pop(0)
                actions += self.apply(core, event_from_snapshot(head["e"]), head["m"], key)
            elif due is not None and (head is not None or due + lateness < wm):
                actions += self.expire(core, due, key)
            else:
                if not buf:
                    st["seq"] = 0  # arrival numbers only order what is buffered
                return actions


def _copy(state: dict) -> dict:
    """A deep copy, so the caller's snapshot is never changed (and it must be JSON)."""
    return orjson.loads(orjson.dumps(state))


def _packed(st: dict) -> dict | None:
    return st if st["buf"] or st["core"] else None


def _iso(ts: float) -> str | None:
    return iso_from_ts(ts) if math.isfinite(ts) else None
