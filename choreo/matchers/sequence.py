"""Sequence: `steps` in order per key, each within `max_interval` of the one before.

One partial match per key. An event that satisfies the next expected step extends it (at
or before its deadline); any other event is ignored, including a new first-step event while
a partial match is in flight (it neither restarts nor starts a second match). The deadline
is the earlier of last step + `max_interval` and first step + `within`. When it passes,
the partial match is dropped and, if `timeout_action` is set, that action is sent with the
matched events as triggers and the missing step in the payload. After completion or timeout
the next first-step event starts a new match.
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
from choreo.patterns import SequencePattern


class SequenceMatcher(KeyedMatcher):
    kind = "sequence"
    pattern: SequencePattern

    def classify(self, event: Event) -> Any:
        marks = [i for i, spec in enumerate(self.pattern.steps) if self.matches(spec, event)]
        return marks or None

    def apply(self, core: dict, event: Event, marks: Any, key: str) -> list[Action]:
        steps = core.get("steps", [])
        if len(steps) not in marks:
            return []
        if steps:
            steps[-1] = compact(steps[-1])  # only the latest step's payload is ever needed
        steps.append(event_to_snapshot(event))
        if len(steps) < len(self.pattern.steps):
            core["steps"] = steps
            return []
        core.pop("steps", None)
        self.stats.fired[self.pattern.id] += 1
        triggers = [event_from_snapshot(s) for s in steps[:-1]] + [event]
        return [self.action(triggers, key)]

    def next_deadline(self, core: dict) -> float | None:
        return self._deadline(core["steps"])[0] if "steps" in core else None

    def expire(self, core: dict, at: float, key: str) -> list[Action]:
        pattern = self.pattern
        steps = core.pop("steps")
        deadline, reason = self._deadline(steps)
        self.stats.timed_out[pattern.id] += 1
        if not pattern.timeout_action:
            return []
        missing = len(steps)
        extra = {
            "missing_step": pattern.steps[missing].on,
            "missing_step_index": missing,
            "matched_steps": [spec.on for spec in pattern.steps[:missing]],
            "deadline": iso_from_ts(deadline),
            "reason": reason,
        }
        return [self.action([event_from_snapshot(s) for s in steps], key, variant="timeout",
                            extra=extra, action=pattern.timeout_action,
                            capability=pattern.timeout_capability or pattern.capability,
                            at=deadline)]

    def describe_core(self, core: dict, now: float) -> dict[str, Any]:
        steps = core.get("steps", [])
        names = [spec.on for spec in self.pattern.steps]
        out: dict[str, Any] = {
            "matched_steps": [{"step": i, "on": names[i], **event_ref(s)}
                              for i, s in enumerate(steps)],
            "missing_steps": names[len(steps):],
            "step_deadline": None,
            "deadline_reason": None,
        }
        if steps:
            deadline, reason = self._deadline(steps)
            out.update(step_deadline=iso_from_ts(deadline), deadline_reason=reason)
        return out

    def _deadline(self, steps: list[dict]) -> tuple[float, str]:
        """When the next step is due, and which limit sets it."""
        by_interval = steps[-1]["ts"] + self.pattern.max_interval
        if self.pattern.within is not None:
            by_within = steps[0]["ts"] + self.pattern.within
            if by_within < by_interval:
                return by_within, "within"
        return by_interval, "max_interval"
