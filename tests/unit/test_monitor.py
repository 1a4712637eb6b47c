"""The flow monitor's slow-flow and rate-spike rules, in crafted event time."""

from __future__ import annotations

import pytest

from choreo.config import ConfigError, parse_choreography
from choreo.matchers.correlation import CorrelationTracker
from choreo.matchers.testing import T0, make_event
from choreo.monitor import MonitorSettings, RateMonitor, slow_flow_alert


def summary_after(*events):
    tracker = CorrelationTracker(ttl=86400)
    state = None
    for event in events:
        state = tracker.on_event(state, event, event.ts).state
    return state


SLOW = MonitorSettings(slow_flow=600.0, terminal_events=("order_closed", "*.failed"))


def test_a_terminal_event_after_the_threshold_raises_one_slow_flow_alert():
    start = make_event("order_received", 0, "o1")
    done = make_event("order_closed", 601, "o1")

    alert = slow_flow_alert(SLOW, summary_after(start), done)

    assert alert is not None and alert.event_type == "alert.slow_flow"
    assert alert.payload["duration_seconds"] == 601
    assert alert.payload["terminal_event_type"] == "order_closed"
    assert alert.correlation_id == "o1" and alert.metadata["causation_id"] == done.event_id
    again = slow_flow_alert(SLOW, summary_after(start, done), done)
    assert again is not None and again.event_id == alert.event_id  # same id: de-duplicable
    assert slow_flow_alert(SLOW, {**summary_after(start), "slow_alerted": True}, done) is None


@pytest.mark.parametrize(("event_type", "at"), [
    ("order_closed", 599),      # in time
    ("order_shipped", 9999),    # not terminal
])
def test_no_alert_in_time_or_without_a_terminal_event(event_type, at):
    start = make_event("order_received", 0, "o1")
    assert slow_flow_alert(SLOW, summary_after(start), make_event(event_type, at, "o1")) is None


def test_default_terminal_types_leave_out_the_workers_lifecycle():
    settings = MonitorSettings(slow_flow=60.0)
    assert settings.is_terminal("task.completed") and settings.is_terminal("job.failed")
    assert not settings.is_terminal("action.completed")
    assert not settings.is_terminal("action.failed")


def feed_rate(monitor, event_type, per_minute, minutes, start_minute):
    alerts = []
    for m in range(minutes):
        for i in range(per_minute):
            at = (start_minute + m) * 60 + i * (60 / per_minute)
            alert = monitor.observe(make_event(event_type, at - T0 % 60, None))
            if alert:
                alerts.append(alert)
    return alerts


def test_a_rate_three_times_the_baseline_raises_one_alert_per_episode():
    monitor = RateMonitor(MonitorSettings())
    assert feed_rate(monitor, "payment_failed", 4, 65, 0) == []          # baseline 4/min
    alerts = feed_rate(monitor, "payment_failed", 20, 5, 65)             # 5x for 5 minutes
    assert len(alerts) == 1
    payload = alerts[0].payload
    assert payload["event_type"] == "payment_failed" and payload["per_minute"] > 12
    assert feed_rate(monitor, "payment_failed", 4, 30, 70) == []         # back to normal
    assert len(feed_rate(monitor, "payment_failed", 20, 5, 100)) == 1     # a new episode


def test_no_spike_below_the_minimum_rate_or_the_factor_or_without_history():
    quiet = RateMonitor(MonitorSettings())
    feed_rate(quiet, "x", 1, 65, 0)
    assert feed_rate(quiet, "x", 5, 5, 65) == []    # 5x, but under 10 a minute
    steady = RateMonitor(MonitorSettings())
    feed_rate(steady, "y", 10, 65, 0)
    assert feed_rate(steady, "y", 25, 5, 65) == []   # 2.5x the baseline
    fresh = RateMonitor(MonitorSettings())
    assert feed_rate(fresh, "z", 50, 10, 0) == []    # no 60-minute baseline yet


def test_monitor_config_errors_name_the_field():
    text = """
[monitor]
slow_flow = "soon"
spike_factor = 0
terminal_events = []
colour = "red"
spike_window = "2h"
"""
    with pytest.raises(ConfigError) as err:
        parse_choreography(text)
    fields = sorted(issue.field for issue in err.value.issues)
    assert fields == ["monitor.baseline_window", "monitor.colour", "monitor.slow_flow",
                      "monitor.spike_factor", "monitor.terminal_events"]


def test_monitor_config_is_read():
    text = '[monitor]\nslow_flow = "15m"\nterminal_events = ["order_closed"]\n'
    monitor = parse_choreography(text).monitor
    assert monitor.slow_flow == 900.0 and monitor.terminal_events == ("order_closed",)


def test_a_spike_is_seen_when_partitions_interleave():
    """One partition racing ahead must not hide a spike the others complete."""
    monitor = RateMonitor(MonitorSettings())
    feed_rate(monitor, "payment_failed", 4, 65, 0)
    burst = [make_event("payment_failed", (65 + m) * 60 + i * 3 - T0 % 60, None)
             for m in range(5) for i in range(20)]
    ahead, behind = burst[::4], [e for i, e in enumerate(burst) if i % 4]
    alerts = [a for e in [*ahead, *behind] if (a := monitor.observe(e))]
    assert len(alerts) == 1


def test_history_counts_from_the_oldest_event_whatever_the_arrival_order():
    """The first event seen may not be the oldest: four partitions arrive interleaved."""
    import random

    misses = 0
    for seed in range(60):
        rnd = random.Random(seed)
        monitor = RateMonitor(MonitorSettings())
        calm = [make_event("p", m * 60 + s - T0 % 60, None) for m in range(65) for s in (10, 40)]
        burst = [make_event("p", (65 + m) * 60 + s * 3 - T0 % 60, None)
                 for m in range(5) for s in range(20)]
        alerts = 0
        for phase in (calm, burst):
            parts: list[list] = [[] for _ in range(4)]
            for event in phase:
                parts[rnd.randrange(4)].append(event)
            while any(parts):
                part = rnd.choice([p for p in parts if p])
                for _ in range(rnd.randint(1, 30)):
                    if part:
                        alerts += monitor.observe(part.pop(0)) is not None
        misses += alerts == 0
    assert misses == 0



def test_one_alert_per_spike_when_partitions_are_read_in_large_batches():
    """Records go to partitions in runs (the sticky partitioner) and are read in batches of
    up to 200 per partition: old calm-hour records land mid-spike, raise the baseline and
    make the check flicker. It is still one spike: one alert (before the fix, 4 of these
    300 orders gave two)."""
    import random

    calm = [make_event("p", m * 60 + s - T0 % 60, None) for m in range(65) for s in (10, 40)]
    burst = [make_event("p", (65 + m) * 60 + s * 3 - T0 % 60, None)
             for m in range(5) for s in range(20)]
    for seed in range(300):
        rnd = random.Random(seed)
        parts: list[list] = [[] for _ in range(4)]
        for phase in (calm, burst):
            i = 0
            while i < len(phase):
                n = rnd.randint(1, 40)
                parts[rnd.randrange(4)] += phase[i:i + n]
                i += n
        monitor = RateMonitor(MonitorSettings())
        alerts = 0
        while any(parts):
            part = rnd.choice([p for p in parts if p])
            k = rnd.randint(1, 200)
            alerts += sum(monitor.observe(e) is not None for e in part[:k])
            del part[:k]
        assert alerts == 1, f"seed {seed}: {alerts} alerts"
