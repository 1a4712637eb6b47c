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


def test_flow_metrics_move_with_the_sample_orders(make_worker):
    """Events in by type, actions sent by pattern, deadlines run, event-to-action latency,
    and the workers' outcomes and durations, each before and after the five sample orders."""
    from choreo.kafka_io import send_events as send
    from choreo.samples import sample_orders, with_short_windows
    from choreo.settings import BUNDLED_CONFIG

    worker: Worker = make_worker(with_short_windows(BUNDLED_CONFIG.read_text()),
                                 prefix=f"flowm-{uuid.uuid4().hex[:6]}")
    names = {
        "orders in": ("choreo_events_in_total", {"event_type": "order_received"}),
        "check_inventory sent": ("choreo_actions_sent_total", {"pattern_id": "order-received"}),
        "reminder deadline": ("choreo_deadlines_run_total", {"pattern_id": "abandoned-checkout"}),
        "reminder sent": ("choreo_actions_sent_total", {"pattern_id": "abandoned-checkout"}),
        "latency samples": ("choreo_event_to_action_seconds_count", {}),
        "inventory handled": ("choreo_worker_actions_total",
                              {"capability": "inventory_management", "outcome": "completed"}),
        "inventory timed": ("choreo_worker_action_seconds_count",
                            {"capability": "inventory_management"}),
    }

    def read() -> dict[str, float]:
        return {k: worker.metric(name, **labels) for k, (name, labels) in names.items()}

    before = read()
    samples = sample_orders("-" + uuid.uuid4().hex[:6])
    orders = sum(1 for _, envelope, _ in samples if envelope["event_type"] == "order_received")
    asyncio.run(send(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                     [envelope for _, envelope, _ in samples]))

    def moved() -> dict[str, float]:
        now = read()
        delta = {k: now[k] - before[k] for k in now}
        return delta if delta["reminder sent"] >= 1 and delta["inventory timed"] >= orders \
            else {}

    delta = wait_until(moved, timeout=90)
    assert delta["orders in"] == orders
    assert delta["check_inventory sent"] == orders
    assert delta["inventory handled"] == orders
    assert delta["inventory timed"] == orders
    assert delta["latency samples"] >= orders
    # The absence window closes for every correlation it watched; one of them, the
    # abandoned cart, sends its reminder.
    assert delta["reminder deadline"] >= 1
    assert delta["reminder sent"] == 1
