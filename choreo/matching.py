"""Route events to the patterns that listen to their type, and fire event patterns."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from choreo.actions import Action, build_action, by_priority
from choreo.conditions import ConditionRuntimeError
from choreo.envelope import Event
from choreo.patterns import EventPattern, EventSpec, Pattern

log = logging.getLogger(__name__)


class PatternIndex:
    """Which patterns listen to an event type: exact names in a dict, globs once per type."""

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns = tuple(patterns)
        self._exact: dict[str, list[Pattern]] = {}
        self._globs: list[tuple[EventSpec, Pattern]] = []
        for pattern in self.patterns:
            for spec in pattern.specs:
                if spec.is_glob:
                    self._globs.append((spec, pattern))
                else:
                    bucket = self._exact.setdefault(spec.on, [])
                    if pattern not in bucket:
                        bucket.append(pattern)
        self._cache: dict[str, tuple[Pattern, ...]] = {}

    def for_type(self, event_type: str) -> tuple[Pattern, ...]:
        """The patterns interested in this type, in declaration order."""
        found = self._cache.get(event_type)
        if found is None:
            hits = list(self._exact.get(event_type, ()))
            for spec, pattern in self._globs:
                if pattern not in hits and spec.type_matches(event_type):
                    hits.append(pattern)
            order = {id(p): i for i, p in enumerate(self.patterns)}
            found = tuple(sorted(hits, key=lambda p: order[id(p)]))
            if len(self._cache) < 100_000:
                self._cache[event_type] = found
        return found


@dataclass
class PatternStats:
    """Per-pattern counts this process has seen, for the web views and metrics."""

    seen: Counter = field(default_factory=Counter)
    fired: Counter = field(default_factory=Counter)
    timed_out: Counter = field(default_factory=Counter)
    condition_errors: Counter = field(default_factory=Counter)


def spec_accepts(pattern: Pattern, spec: EventSpec, event: Event, stats: PatternStats) -> bool:
    """Does the event satisfy the spec? A condition that cannot be evaluated counts as no."""
    try:
        return spec.accepts(event)
    except ConditionRuntimeError as exc:
        stats.condition_errors[pattern.id] += 1
        log.debug("pattern %s: condition failed on event %s: %s", pattern.id, event.event_id, exc)
        return False


def fire_event_pattern(pattern: EventPattern, event: Event, stats: PatternStats) -> Action | None:
    """An event pattern fires once for every event that satisfies it."""
    stats.seen[pattern.id] += 1
    if not spec_accepts(pattern, pattern.on, event, stats):
        return None
    stats.fired[pattern.id] += 1
    return build_action(
        pattern_id=pattern.id,
        action=pattern.action,
        capability=pattern.capability,
        priority=pattern.priority,
        triggers=(event,),
    )


class EventMatcher:
    """Matches single events against the event patterns; stateless apart from counts."""

    def __init__(self, patterns: Iterable[Pattern], stats: PatternStats | None = None) -> None:
        self.index = PatternIndex(p for p in patterns if isinstance(p, EventPattern))
        self.stats = stats or PatternStats()

    def match(self, event: Event) -> list[Action]:
        """The actions this event fires, highest priority first."""
        actions = []
        for pattern in self.index.for_type(event.event_type):
            action = fire_event_pattern(pattern, event, self.stats)  # type: ignore[arg-type]
            if action is not None:
                actions.append(action)
        return by_priority(actions)
