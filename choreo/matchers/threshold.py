"""Threshold: `count` matching events for a key within `window`.

Sliding: the window at time t holds the events with t - window <= ts <= t. The pattern
fires each time that count rises to `count` (it can only rise at an event), so it fires at
an event when exactly count - 1 earlier events lie within `window` before it; it re-arms
once the count has dropped below `count` again as events age out. State: the timestamps
of the last `count` events, dropped when the newest leaves the window.

Tumbling and hopping: fixed windows [k*hop, k*hop + window) aligned to the epoch (hop =
window for tumbling); fires once per window, at the event that brings its count to `count`.
State: a counter per open window, dropped when the window closes.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from choreo.actions import Action
from choreo.envelope import Event, iso_from_ts
from choreo.matchers.base import KeyedMatcher
from choreo.patterns import ThresholdPattern


def window_indexes(ts: float, window: float, hop: float) -> list[int]:
    """The k of every window [k*hop, k*hop + window) that holds ts.

    Worked out in exact fractions of the floats given: with float products, k*hop + window
    can fall short of (k+1)*hop and leave an event in no window at all.
    """
    t, w, h = Fraction(ts), Fraction(window), Fraction(hop)
    return list(range(math.floor((t - w) / h) + 1, math.floor(t / h) + 1))


class ThresholdMatcher(KeyedMatcher):
    kind = "threshold"
    pattern: ThresholdPattern

    def __init__(self, pattern: ThresholdPattern, stats: Any) -> None:
        super().__init__(pattern, stats)
        self.sliding = pattern.window_kind == "sliding"
        self.hop = pattern.hop if pattern.window_kind == "hopping" and pattern.hop else (
            pattern.window)

    def classify(self, event: Event) -> Any:
        return 1 if self.matches(self.pattern.on, event) else None

    def apply(self, core: dict, event: Event, marks: Any, key: str) -> list[Action]:
        if self.sliding:
            return self._apply_sliding(core, event, key)
        return self._apply_fixed(core, event, key)

    def next_deadline(self, core: dict) -> float | None:
        if "recent" in core:
            return core["recent"][-1] + self.pattern.window
        if "windows" in core:
            return min(k * self.hop for k, _ in core["windows"]) + self.pattern.window
        return None

    def expire(self, core: dict, at: float, key: str) -> list[Action]:
        window = self.pattern.window
        if "recent" in core:
            core["recent"] = [t for t in core["recent"] if t + window > at]
            if not core["recent"]:
                del core["recent"]
        if "windows" in core:
            core["windows"] = [[k, n] for k, n in core["windows"] if k * self.hop + window > at]
            if not core["windows"]:
                del core["windows"]
        return []

    def describe_core(self, core: dict, now: float) -> dict[str, Any]:
        pattern = self.pattern
        out: dict[str, Any] = {"window_kind": pattern.window_kind, "count": pattern.count,
                               "window": pattern.window}
        if self.sliding:
            recent = core.get("recent", [])
            out["in_window"] = sum(1 for t in recent if t + pattern.window >= now)
            out["recent"] = [iso_from_ts(t) for t in recent]
        else:
            out["windows"] = [
                {"start": iso_from_ts(k * self.hop),
                 "end": iso_from_ts(k * self.hop + pattern.window),
                 "count": n, "fired": n >= pattern.count}
                for k, n in core.get("windows", [])
            ]
        return out

    def _apply_sliding(self, core: dict, event: Event, key: str) -> list[Action]:
        pattern = self.pattern
        before = [t for t in core.get("recent", []) if t + pattern.window >= event.ts]
        core["recent"] = (before + [event.ts])[-pattern.count:]
        if len(before) != pattern.count - 1:
            return []
        self.stats.fired[pattern.id] += 1
        window = {"kind": "sliding", "start": iso_from_ts(event.ts - pattern.window),
                  "end": event.timestamp}
        return [self.action([event], key, extra={"count": pattern.count, "window": window})]

    def _apply_fixed(self, core: dict, event: Event, key: str) -> list[Action]:
        pattern = self.pattern
        counts = {k: n for k, n in core.get("windows", [])}
        actions = []
        for k in window_indexes(event.ts, pattern.window, self.hop):
            n = counts.get(k, 0)
            if n >= pattern.count:
                continue
            counts[k] = n + 1
            if n + 1 == pattern.count:
                self.stats.fired[pattern.id] += 1
                start = k * self.hop
                window = {"kind": pattern.window_kind, "start": iso_from_ts(start),
                          "end": iso_from_ts(start + pattern.window)}
                actions.append(self.action([event], key, variant=f"window:{k}",
                                           extra={"count": pattern.count, "window": window}))
        if counts:
            core["windows"] = [[k, counts[k]] for k in sorted(counts)]
        return actions
