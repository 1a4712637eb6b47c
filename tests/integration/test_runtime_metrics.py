"""Consumer lag and table entries on /metrics move when the work does."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from choreo.kafka_io import send_events
from tests.faults.flow import CONFIG, HANDLERS, flow_events
from tests.integration.conftest import Worker, wait_until


def test_lag_rises_while_a_slow_worker_falls_behind_and_returns_to_zero(make_worker,
                                                                         tmp_path: Path):
    label = f"lag-{uuid.uuid4().hex[:6]}"
    worker: Worker = make_worker(CONFIG, prefix=label, env={
        "CHOREO_HANDLERS": HANDLERS, "CHOREO_FAULTS_LOG": str(tmp_path / "handled.log"),
        "CHOREO_FAULTS_DELAY": "0.25"})
    audit = worker.choreography.topics.capability_topic("audit")
    events_topic = worker.choreography.topics.events_topic
    assert worker.metric("choreo_consumer_lag", topic=audit) == 0
    before = {t: worker.metric("choreo_table_entries", table=t)
              for t in ("pattern-state", "seen-events", "handled-actions-audit")}
    # 30 flows that start and never finish: 30 `record` actions at 0.25 s each for the
    # audit worker, 30 sequences in flight.
    asyncio.run(send_events(worker.broker.bootstrap, events_topic,
                            flow_events(30, label, gap=10_000)[:30]))
    peak = wait_until(lambda: worker.metric("choreo_consumer_lag", topic=audit) >= 5,
                      timeout=30, every=0.2)
    assert peak
    wait_until(lambda: worker.metric("choreo_consumer_lag", topic=audit) == 0
               and worker.metric("choreo_consumer_lag", topic=events_topic) == 0, timeout=60)
    # Every event is in seen-events (the flows' 30 and the worker's lifecycle events), every
    # handled action in handled-actions-audit, each flow's sequence and summary in
    # pattern-state; the gauges are counted every 5 s.
    def counted() -> dict[str, float]:
        now = {t: worker.metric("choreo_table_entries", table=t) - before[t] for t in before}
        return now if (now["seen-events"] >= 30 and now["handled-actions-audit"] >= 30
                       and now["pattern-state"] >= 60) else {}

    grown = wait_until(counted, timeout=30)
    assert grown["pattern-state"] == 60
    assert worker.metric("choreo_pattern_keys_in_flight", pattern_id="pair") == 30
    assert worker.metric("choreo_pattern_keys_in_flight", pattern_id="~correlation") == 30
