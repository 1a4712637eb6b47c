"""Temporal: every spec in `all_of` seen for a key within `window`, in any order.

Each event fills at most one spec. Every unconsumed occurrence is held until it is older
than `window` (relative to the applied event time). When an event arrives and a match
exists, the match uses that event and, for each spec in `all_of` order, the earliest held
occurrence that fits (the lexicographically first assignment, in arrival order, found by
a small backtracking search, so a match is found whenever one exists). The events used are
consumed; the action's triggers are them in event-time order, the completing event last.
"""

from __future__ import annotations

from typing import Any

from choreo.actions import Action
from choreo.envelope import Event, iso_from_ts
from choreo.matchers.base import (
    KeyedMatcher,
    compact,
    event_from_snapshot,
    event_ref,
    event_to_snapshot,
)
from choreo.patterns import TemporalPattern


def first_assignment(candidates: list[list[int]], must_use: int) -> list[int] | None:
    """The first pick of one distinct candidate per slot, in slot order, that uses must_use."""
    chosen: list[int] = []

    def walk(slot: int) -> bool:
        if slot == len(candidates):
            return must_use in chosen
        if must_use not in chosen and not any(must_use in c for c in candidates[slot:]):
            return False
        for index in candidates[slot]:
            if index not in chosen:
                chosen.append(index)
                if walk(slot + 1):
                    return True
                chosen.pop()
        return False

    return chosen if walk(0) else None


class TemporalMatcher(KeyedMatcher):
    kind = "temporal"
    pattern: TemporalPattern

    def classify(self, event: Event) -> Any:
        marks = [i for i, spec in enumerate(self.pattern.all_of) if self.matches(spec, event)]
        return marks or None

    def apply(self, core: dict, event: Event, marks: Any, key: str) -> list[Action]:
        window = self.pattern.window
        held = core.get("held", [])
        held.append({"m": marks, "e": compact(event_to_snapshot(event))})
        new = len(held) - 1
        candidates = [
            [j for j, item in enumerate(held)
             if i in item["m"] and item["e"]["ts"] + window >= event.ts]
            for i in range(len(self.pattern.all_of))
        ]
        chosen = first_assignment(candidates, new)
        if chosen is None:
            core["held"] = held
            return []
        used = sorted(chosen)
        triggers = [event_from_snapshot(held[j]["e"]) for j in used[:-1]] + [event]
        rest = [item for j, item in enumerate(held) if j not in used]
        if rest:
            core["held"] = rest
        else:
            core.pop("held", None)
        self.stats.fired[self.pattern.id] += 1
        extra = {"window": {"start": triggers[0].timestamp, "end": event.timestamp}}
        return [self.action(triggers, key, extra=extra)]

    def next_deadline(self, core: dict) -> float | None:
        if "held" not in core:
            return None
        return min(item["e"]["ts"] for item in core["held"]) + self.pattern.window

    def expire(self, core: dict, at: float, key: str) -> list[Action]:
        window = self.pattern.window
        core["held"] = [item for item in core["held"] if item["e"]["ts"] + window > at]
        if not core["held"]:
            del core["held"]
        return []

    def describe_core(self, core: dict, now: float) -> dict[str, Any]:
        window = self.pattern.window
        held = core.get("held", [])
        specs = []
        for i, spec in enumerate(self.pattern.all_of):
            seen = [item["e"] for item in held if i in item["m"]]
            specs.append({
                "on": spec.on,
                "seen": [{**event_ref(e), "expires": iso_from_ts(e["ts"] + window)}
                         for e in seen],
            })
        return {"window": window, "all_of": specs,
                "missing": [s["on"] for s in specs if not s["seen"]]}
