"""The flow monitor on a real worker: slow-flow and rate-spike alerts on the alerts topic."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from choreo.envelope import iso_from_ts, new_event
from choreo.kafka_io import envelopes, send_events
from tests.integration.conftest import Worker, wait_until

CONFIG = """
[topics]
prefix = ""

[defaults]
idle_timeout = "1h"

[monitor]
slow_flow = "10m"
terminal_events = ["flow_done"]

[[patterns]]
id = "noted"
kind = "event"
on = "flow_done"
action = "note"
capability = "ops"
"""


@pytest.fixture(scope="module")
def worker(make_worker) -> Worker:  # noqa: ANN001
    return make_worker(CONFIG)


def ev(event_type: str, at: float, corr: str | None) -> dict:
    return new_event(event_type, {}, source="test", correlation_id=corr,
                     timestamp=iso_from_ts(at)).as_dict()


def feed(worker: Worker, events: list[dict]) -> None:
    asyncio.run(send_events(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                            events))


def alerts(worker: Worker) -> list[dict]:
    return envelopes(worker.read(worker.choreography.topics.alerts_topic, idle=0.5))


def test_slow_flow_alert_fires_only_for_the_slow_flow(worker: Worker):
    t0 = time.time() - 30 * 86400
    quick, slow = f"quick-{uuid.uuid4().hex[:6]}", f"slow-{uuid.uuid4().hex[:6]}"
    feed(worker, [ev("flow_started", t0, quick), ev("flow_done", t0 + 300, quick),
                  ev("flow_started", t0 + 400, slow), ev("flow_done", t0 + 400 + 1200, slow)])
    [alert] = wait_until(lambda: [a for a in alerts(worker)
                                  if a["event_type"] == "alert.slow_flow"], timeout=30)
    assert alert["metadata"]["correlation_id"] == slow
    assert alert["payload"]["duration_seconds"] == 1200
    assert alert["payload"]["threshold_seconds"] == 600
    time.sleep(2)
    assert [a["metadata"]["correlation_id"] for a in alerts(worker)
            if a["event_type"] == "alert.slow_flow"] == [slow]
    assert worker.metric("choreo_alerts_total", alert="slow_flow") == 1


def test_rate_spike_alert_fires_when_a_type_runs_at_five_times_its_baseline(worker: Worker):
    t0 = (time.time() - 20 * 86400) // 60 * 60
    calm = [ev("payment_failed", t0 + m * 60 + s, None) for m in range(65) for s in (10, 40)]
    feed(worker, calm)  # 2 a minute for 65 minutes: no alert
    time.sleep(3)
    assert not [a for a in alerts(worker) if a["event_type"] == "alert.rate_spike"]
    burst = [ev("payment_failed", t0 + 65 * 60 + m * 60 + s * 3, None)
             for m in range(5) for s in range(20)]
    feed(worker, burst)  # 20 a minute for 5 minutes
    found = wait_until(lambda: [a for a in alerts(worker)
                                if a["event_type"] == "alert.rate_spike"], timeout=30)
    assert len(found) == 1
    assert found[0]["payload"]["event_type"] == "payment_failed"
    assert found[0]["payload"]["per_minute"] >= 10
    assert found[0]["payload"]["baseline_per_minute"] <= 3
