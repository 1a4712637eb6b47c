"""Absence: an `after` event not followed by an `expect` event within `within`.

One pending `after` per key. An `expect` event at or before the deadline (after.ts +
within) cancels it; an `expect` with nothing pending is ignored. A second `after` while one
is pending restarts the clock: the pending event is replaced by the newer one (so an
abandoned cart is reported `within` after the last cart update). An event that satisfies
both specs first cancels, then starts a new pending window. When the deadline passes the
action fires with the `after` event as its trigger.
"""

from __future__ import annotations

from typing import Any

from choreo.actions import Action
from choreo.envelope import Event, iso_from_ts
from choreo.matchers.base import KeyedMatcher, event_from_snapshot, event_ref, event_to_snapshot
from choreo.patterns import AbsencePattern

AFTER, EXPECT = "after", "expect"


class AbsenceMatcher(KeyedMatcher):
    kind = "absence"
    pattern: AbsencePattern

    def classify(self, event: Event) -> Any:
        marks = []
        if self.matches(self.pattern.after, event):
            marks.append(AFTER)
        if self.matches(self.pattern.expect, event):
            marks.append(EXPECT)
        return marks or None

    def apply(self, core: dict, event: Event, marks: Any, key: str) -> list[Action]:
        if EXPECT in marks:
            core.pop("pending", None)
        if AFTER in marks:
            core["pending"] = event_to_snapshot(event)
        return []

    def next_deadline(self, core: dict) -> float | None:
        return core["pending"]["ts"] + self.pattern.within if "pending" in core else None

    def expire(self, core: dict, at: float, key: str) -> list[Action]:
        pattern = self.pattern
        after = event_from_snapshot(core.pop("pending"))
        self.stats.fired[pattern.id] += 1
        extra = {"expected": pattern.expect.on, "within": pattern.within,
                 "deadline": iso_from_ts(after.ts + pattern.within)}
        return [self.action([after], key, variant="absence", extra=extra,
                            at=after.ts + pattern.within)]

    def describe_core(self, core: dict, now: float) -> dict[str, Any]:
        pending = core.get("pending")
        return {
            "expect": self.pattern.expect.on,
            "pending": event_ref(pending) if pending else None,
            "expect_by": iso_from_ts(pending["ts"] + self.pattern.within) if pending else None,
        }
