"""Pattern definitions: frozen data loaded from the choreography file, no matching logic."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from choreo.conditions import Condition
from choreo.content_filter import ContentFilter
from choreo.envelope import Event

KINDS = ("event", "threshold", "temporal", "sequence", "absence")


@dataclass(frozen=True)
class EventSpec:
    """Which events count: a type or glob, plus conditions and content filters (all must hold)."""

    on: str
    conditions: tuple[Condition, ...] = ()
    filters: tuple[ContentFilter, ...] = ()

    @property
    def is_glob(self) -> bool:
        return any(ch in self.on for ch in "*?[")

    def type_matches(self, event_type: str) -> bool:
        return fnmatchcase(event_type, self.on) if self.is_glob else event_type == self.on

    def accepts(self, event: Event) -> bool:
        """True when the event satisfies every filter and condition (type not checked).

        Raises ConditionRuntimeError when a condition cannot be evaluated; callers count it.
        """
        if self.filters:
            data = event.as_dict()
            if not all(f.matches(data) for f in self.filters):
                return False
        if self.conditions:
            ctx = event.context()
            return all(c.evaluate(ctx) for c in self.conditions)
        return True

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"on": self.on}
        if self.conditions:
            out["when"] = [c.source for c in self.conditions]
        if self.filters:
            out["match"] = [dict(f.spec) for f in self.filters]
        return out


@dataclass(frozen=True)
class Pattern:
    """Fields every kind has."""

    id: str
    action: str
    capability: str
    priority: int = 1
    group_by: str | None = None
    allowed_lateness: float = 0.0

    kind = "pattern"

    @property
    def specs(self) -> tuple[EventSpec, ...]:
        """Every event spec this pattern listens to, for indexing by event type."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "action": self.action,
            "capability": self.capability,
            "priority": self.priority,
            "group_by": self.group_by,
            "listens_to": [spec.describe() for spec in self.specs],
        }


@dataclass(frozen=True)
class EventPattern(Pattern):
    """Fires once for every event that satisfies it."""

    on: EventSpec = field(default_factory=lambda: EventSpec("*"))
    kind = "event"

    @property
    def specs(self) -> tuple[EventSpec, ...]:
        return (self.on,)


@dataclass(frozen=True)
class ThresholdPattern(Pattern):
    """Fires when `count` matching events for a key fall within `window`."""

    on: EventSpec = field(default_factory=lambda: EventSpec("*"))
    count: int = 1
    window: float = 60.0
    window_kind: str = "sliding"
    hop: float | None = None
    kind = "threshold"

    @property
    def specs(self) -> tuple[EventSpec, ...]:
        return (self.on,)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "count": self.count,
            "window": self.window,
            "window_kind": self.window_kind,
            "hop": self.hop,
        }


@dataclass(frozen=True)
class TemporalPattern(Pattern):
    """Fires when every listed event has been seen for a key within `window`, in any order."""

    all_of: tuple[EventSpec, ...] = ()
    window: float = 60.0
    kind = "temporal"

    @property
    def specs(self) -> tuple[EventSpec, ...]:
        return self.all_of

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "window": self.window}


@dataclass(frozen=True)
class SequencePattern(Pattern):
    """Fires when the steps happen in order, each within `max_interval` of the one before."""

    steps: tuple[EventSpec, ...] = ()
    max_interval: float = 60.0
    within: float | None = None
    timeout_action: str | None = None
    timeout_capability: str | None = None
    kind = "sequence"

    @property
    def specs(self) -> tuple[EventSpec, ...]:
        return self.steps

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "max_interval": self.max_interval,
            "within": self.within,
            "timeout_action": self.timeout_action,
            "timeout_capability": self.timeout_capability,
        }


@dataclass(frozen=True)
class AbsencePattern(Pattern):
    """Fires when an `after` event is not followed by an `expect` event within `within`."""

    after: EventSpec = field(default_factory=lambda: EventSpec("*"))
    expect: EventSpec = field(default_factory=lambda: EventSpec("*"))
    within: float = 60.0
    kind = "absence"

    @property
    def specs(self) -> tuple[EventSpec, ...]:
        return (self.after, self.expect)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "within": self.within}
