"""The flow monitor: slow flows and event-rate spikes, raised as alert events.

Both are judged in event time:

* slow flow: a correlation's terminal event (by default any `*.completed` or `*.failed` type
  other than the workers' own `action.*` lifecycle) arrives more than `slow_flow` after the
  correlation's first event; raised once per correlation;
* rate spike: an event type's rate over the last `spike_window` (5 min) is more than
  `spike_factor` (3) times its rate over the `baseline_window` (60 min) before that, and at
  least `spike_min_per_minute` (10). It is raised when the rate crosses into a spike, and again
  only after it has fallen back. Rates are counted per worker over the partitions it owns,
  so with several workers each sees its own share.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from choreo.durations import positive_duration
from choreo.envelope import Event, event_from_mapping, iso_from_ts, now_iso

MONITOR_SOURCE = "choreo.monitor"
_NAMESPACE = uuid.UUID("0b7d2f8e-3c1a-5e4f-8a9b-7c6d5e4f3a2b")
DEFAULT_TERMINAL = ("*.completed", "*.failed")
LIFECYCLE = ("action.*",)


@dataclass(frozen=True)
class MonitorSettings:
    slow_flow: float | None = None  # seconds; None: no slow-flow alerts
    terminal_events: tuple[str, ...] = DEFAULT_TERMINAL
    spike_window: float = 300.0
    baseline_window: float = 3600.0
    spike_factor: float = 3.0
    spike_min_per_minute: float = 10.0
    rate_spikes: bool = True

    def is_terminal(self, event_type: str) -> bool:
        if any(fnmatchcase(event_type, g) for g in LIFECYCLE) and self.terminal_events == (
                DEFAULT_TERMINAL):
            return False
        return any(fnmatchcase(event_type, g) for g in self.terminal_events)


def parse_monitor(raw: object, fail: Callable[[str, str, str], None]) -> MonitorSettings:
    """Read `[monitor]`; every problem is reported through `fail` with its field."""
    if raw is None:
        return MonitorSettings()
    if not isinstance(raw, dict):
        fail("-", "monitor", "must be a table")
        return MonitorSettings()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"monitor.{key}"
        if key in ("slow_flow", "spike_window", "baseline_window"):
            seconds = positive_duration(value, name, fail)
            if seconds is not None:
                out[key] = seconds
        elif key in ("spike_factor", "spike_min_per_minute"):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                fail("-", name, "must be a number above zero")
                continue
            out[key] = float(value)
        elif key == "terminal_events":
            if (not isinstance(value, list) or not value
                    or not all(isinstance(v, str) and v for v in value)):
                fail("-", name, "must be a non-empty list of event types or globs")
                continue
            out[key] = tuple(value)
        elif key == "rate_spikes":
            if not isinstance(value, bool):
                fail("-", name, "must be true or false")
                continue
            out[key] = value
        else:
            known = sorted(MonitorSettings.__dataclass_fields__)
            fail("-", name, f"unknown field; known: {', '.join(known)}")
    settings = MonitorSettings(**out)
    if settings.baseline_window <= settings.spike_window:
        fail("-", "monitor.baseline_window", "must be longer than spike_window")
    return settings


def alert_event(kind: str, subject: str, at: float, payload: dict[str, Any],
                correlation_id: str | None = None, causation_id: str | None = None) -> Event:
    """An alert envelope; its id is the same for the same kind, subject and episode."""
    metadata: dict[str, Any] = {"version": 1, "emitted_at": now_iso()}
    if correlation_id:
        metadata["correlation_id"] = correlation_id
    if causation_id:
        metadata["causation_id"] = causation_id
    return event_from_mapping({
        "event_id": str(uuid.uuid5(_NAMESPACE, f"{kind}\x1f{subject}\x1f{payload.get('episode')}")),
        "event_type": f"alert.{kind}",
        "timestamp": iso_from_ts(at),
        "source": MONITOR_SOURCE,
        "payload": {"alert": kind, **payload},
        "metadata": metadata,
    })


def slow_flow_alert(settings: MonitorSettings, summary: dict[str, Any] | None,
                    event: Event) -> Event | None:
    """The slow-flow alert this terminal event raises on its correlation, if any.

    `summary` is the correlation tracker's snapshot *before* the event was applied.
    """
    if settings.slow_flow is None or not summary or summary.get("first") is None:
        return None
    if summary.get("slow_alerted") or not settings.is_terminal(event.event_type):
        return None
    first = min(summary["first"], event.ts)
    took = event.ts - first
    if took <= settings.slow_flow:
        return None
    return alert_event("slow_flow", summary["key"], event.ts, {
        "correlation_id": summary["key"], "duration_seconds": round(took, 3),
        "threshold_seconds": settings.slow_flow, "first_timestamp": iso_from_ts(first),
        "terminal_event_type": event.event_type, "episode": 0,
    }, correlation_id=summary["key"], causation_id=event.event_id)


@dataclass
class _Rate:
    first_minute: int  # the oldest minute seen of the type
    buckets: deque[list[int]] = field(default_factory=deque)  # [minute, count], oldest first
    spiking: bool = False
    episodes: int = 0
    last_spiking: int | None = None  # the newest minute at which the type was spiking


@dataclass
class RateMonitor:
    """Per event type, counts per minute of event time, and the spike check."""

    settings: MonitorSettings
    rates: dict[str, _Rate] = field(default_factory=dict)

    def observe(self, event: Event) -> Event | None:
        """Count the event; return a rate-spike alert when its type starts spiking."""
        s = self.settings
        minute = math.floor(event.ts / 60)
        rate = self.rates.get(event.event_type)
        if rate is None:
            if len(self.rates) >= 10_000:
                return None  # types beyond this are not watched (unbounded type names)
            rate = self.rates[event.event_type] = _Rate(first_minute=minute)
        if rate.buckets and minute < rate.buckets[-1][0]:
            # Out of order (partitions interleave): count it where it belongs; the check
            # below still runs, at the newest minute, with the count it completes.
            for index in range(len(rate.buckets) - 1, -1, -1):
                bucket = rate.buckets[index]
                if bucket[0] == minute:
                    bucket[1] += 1
                    break
                if bucket[0] < minute:
                    rate.buckets.insert(index + 1, [minute, 1])
                    break
            else:  # older than every bucket: the history starts earlier than thought
                rate.buckets.appendleft([minute, 1])
            rate.first_minute = min(rate.first_minute, minute)
            minute = rate.buckets[-1][0]
        elif rate.buckets and rate.buckets[-1][0] == minute:
            rate.buckets[-1][1] += 1
        else:
            rate.buckets.append([minute, 1])
        span = int((s.spike_window + s.baseline_window) // 60)
        while rate.buckets and rate.buckets[0][0] <= minute - span:
            rate.buckets.popleft()
        recent_minutes = int(s.spike_window // 60) or 1
        baseline_minutes = int(s.baseline_window // 60) or 1
        if minute - rate.first_minute < recent_minutes + baseline_minutes:
            return None  # not enough history for a baseline yet
        recent = sum(n for m, n in rate.buckets if m > minute - recent_minutes)
        base = sum(n for m, n in rate.buckets
                   if minute - recent_minutes - baseline_minutes < m <= minute - recent_minutes)
        per_minute = recent / recent_minutes
        baseline = base / baseline_minutes
        spiking = per_minute >= s.spike_min_per_minute and per_minute > s.spike_factor * baseline
        was, rate.spiking = rate.spiking, spiking
        if not spiking:
            return None
        last, rate.last_spiking = rate.last_spiking, max(minute, rate.last_spiking or minute)
        # One alert per episode. Partitions read at different speeds can make the check
        # flicker off and on within a spike (old events land in the baseline late); an
        # episode ends only after a whole spike window without spiking.
        if was or (last is not None and minute - last <= recent_minutes):
            return None
        rate.episodes += 1
        return alert_event("rate_spike", event.event_type, event.ts, {
            "event_type": event.event_type, "per_minute": round(per_minute, 2),
            "baseline_per_minute": round(baseline, 2), "factor": s.spike_factor,
            "window_seconds": s.spike_window, "baseline_seconds": s.baseline_window,
            "episode": f"{minute}",
        })
