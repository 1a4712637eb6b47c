"""Drive a matcher with a list of events under a clock the test controls.

`drive` plays the Faust agent's part without Kafka: it keeps one snapshot per key (stored
as JSON, as a table would), raises the partition watermark to each event's time, calls
`on_event`, then, like a timer, `on_time` for every key whose deadline has come.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from choreo.actions import Action
from choreo.envelope import Event, iso_from_ts, new_event
from choreo.matchers.base import KeyedMatcher, Outcome, key_for

T0 = 1_700_000_000.0  # event time zero in tests: 2023-11-14T22:13:20Z


def make_event(event_type: str, at: float, key: str | None = "k1", *,
               event_id: str | None = None, source: str = "test",
               metadata: dict[str, Any] | None = None, **payload: Any) -> Event:
    """An event at T0 + at seconds, correlated by `key`."""
    return new_event(event_type, payload, source=source, correlation_id=key,
                     event_id=event_id, timestamp=iso_from_ts(T0 + at), metadata=metadata)


@dataclass
class Run:
    actions: list[Action] = field(default_factory=list)
    late: list[str] = field(default_factory=list)  # ids of events reported late
    unkeyed: list[str] = field(default_factory=list)
    states: dict[str, dict] = field(default_factory=dict)  # what the table holds
    watermark: float = -math.inf

    @property
    def fired(self) -> list[tuple[str, list[str]]]:
        """(action name, trigger event ids) for every action, in order."""
        return [(a.name, a.event.payload["trigger"]["event_ids"]) for a in self.actions]

    @property
    def ids(self) -> list[str]:
        return [a.event.event_id for a in self.actions]


def drive(matcher: KeyedMatcher, events: Iterable[Event], *, until: float | None = None,
          timers: bool = True, run: Run | None = None) -> Run:
    """Feed events in arrival order; then, if `until` (seconds after T0), run time up to it."""
    run = run or Run()
    for event in events:
        run.watermark = max(run.watermark, event.ts)
        key = key_for(matcher.pattern, event)
        if key is None:
            run.unkeyed.append(event.event_id)
            continue
        outcome = matcher.on_event(run.states.get(key), event, run.watermark)
        if outcome.late:
            run.late.append(event.event_id)
        _store(run, key, outcome)
        if timers:
            tick(matcher, run, run.watermark)
    if until is not None:
        run.watermark = max(run.watermark, T0 + until)
        tick(matcher, run, run.watermark, every_key=True)
    return run


def tick(matcher: KeyedMatcher, run: Run, watermark: float, every_key: bool = False) -> None:
    """Call on_time for the keys whose deadline has come (or every key)."""
    for key in sorted(run.states):
        due = matcher.deadline(run.states[key])
        if every_key or (due is not None and due <= watermark):
            _store(run, key, matcher.on_time(run.states[key], watermark))


def _store(run: Run, key: str, outcome: Outcome) -> None:
    run.actions.extend(outcome.actions)
    if outcome.state is None:
        run.states.pop(key, None)
        return
    stored = json.loads(json.dumps(outcome.state, allow_nan=False))
    if stored != outcome.state:
        raise AssertionError(f"state for {key!r} does not survive JSON: {outcome.state!r}")
    run.states[key] = stored
