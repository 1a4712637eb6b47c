"""Faults 2 and 5: the broker killed with -9 and restarted, and a broken network to it.

Both run on a broker of their own (scripts/kafka-local on 39110 and 39120), since one is
killed and the other sits behind a proxy. One worker process runs the engine and the
capability workers; a producer paces events in throughout and notes which the broker
acknowledged.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from tests.faults.brokers import LocalBroker
from tests.faults.flow import (
    CONFIG,
    FAST_FAILOVER,
    HANDLERS,
    PacedProducer,
    flow_events,
    handled,
    on_topic,
    tally,
)
from tests.faults.proxy import FaultProxy
from tests.faults.workers import start_worker
from tests.integration.conftest import Worker, wait_until


def done_count(log: Path) -> int:
    return len(handled(log)[1])


def wait_for_progress(log: Path, timeout: float = 120.0) -> float:
    """Seconds until a handler finishes an action it had not finished before."""
    began, before = time.monotonic(), done_count(log)
    wait_until(lambda: done_count(log) > before, timeout=timeout, every=0.25)
    return time.monotonic() - began


def settle(worker: Worker, feed: PacedProducer, log: Path, label: str) -> dict:
    """After the faults: nothing acknowledged lost, every action out once, handled once."""
    feed.join()
    assert worker.process is not None and worker.process.poll() is None, "the worker died"
    topics = worker.choreography.topics
    present = on_topic(worker.broker.bootstrap, topics.events_topic, label)
    lost = feed.acked - {e["event_id"] for e in present}
    assert not lost, f"{len(lost)} acknowledged events are not on the topic"
    found = wait_until(lambda: (t := tally(worker.broker.bootstrap, topics.capability_topic,
                                           present)) and not t.missing and t,
                       timeout=300, every=3)
    assert found.split == []
    wait_until(lambda: done_count(log) >= found.expected, timeout=300, every=2)
    time.sleep(3)
    starts, done = handled(log)
    twice = sorted(a for a, n in starts.items() if n > 1)
    return {"sent": len(feed.events), "acked": len(feed.acked),
            "not_acked": len(feed.failed), "on_topic": len(present), "lost_acked": len(lost),
            "expected_actions": found.expected, "raw_duplicates": found.raw_duplicates,
            "handled": len(done), "handled_twice": len(twice)}


@pytest.fixture
def own_broker(request) -> LocalBroker:  # noqa: ANN001
    broker = request.param
    broker.stop(purge=True)
    yield broker
    broker.stop(purge=True)


def worker_env(log: Path) -> dict[str, str]:
    return {"CHOREO_WORKERS": "*", "CHOREO_HANDLERS": HANDLERS,
            "CHOREO_FAULTS_LOG": str(log), **FAST_FAILOVER}


@pytest.mark.soak
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("own_broker", [LocalBroker(39110)], indirect=True)
def test_broker_killed_and_restarted_three_times(own_broker: LocalBroker, tmp_path: Path):
    broker = own_broker
    broker.start()
    label = f"brk-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "handled.log"
    worker = start_worker(broker.bootstrap, broker.worker_url, tmp_path, CONFIG, label,
                          worker_env(log))
    events = flow_events(int(os.environ.get("CHOREO_FAULT_BROKER_FLOWS", "3000")), label)
    feed = PacedProducer(broker.bootstrap, worker.choreography.topics.events_topic, events,
                         rate=50).start()
    outages = []
    try:
        for _ in range(3):
            time.sleep(15)
            broker.kill9()
            killed = time.monotonic()
            time.sleep(5)  # down for a while
            answered = broker.start()
            resumed = wait_for_progress(log)
            outages.append({"broker_back_s": round(answered, 1),
                            "resumed_after_back_s": round(resumed, 1),
                            "resumed_after_kill_s": round(time.monotonic() - killed, 1)})
        figures = {**settle(worker, feed, log, label), "outages": outages}
    finally:
        worker.stop()
    print("\nFAULT 2 figures:", figures)
    assert all(o["resumed_after_back_s"] < 60 for o in outages)
    assert figures["handled_twice"] == 0


@pytest.mark.soak
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("own_broker", [LocalBroker(39120, advertised_port=39123,
                                                    direct_port=39122)], indirect=True)
def test_blackhole_and_latency_between_worker_and_broker(own_broker: LocalBroker,
                                                         tmp_path: Path):
    broker = own_broker
    proxy = FaultProxy(39123, broker.port).start()
    broker.start()
    label = f"net-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "handled.log"
    worker = start_worker(broker.bootstrap, broker.worker_url, tmp_path, CONFIG, label,
                          worker_env(log))
    events = flow_events(int(os.environ.get("CHOREO_FAULT_NET_FLOWS", "3000")), label)
    feed = PacedProducer(broker.bootstrap, worker.choreography.topics.events_topic, events,
                         rate=50).start()
    try:
        time.sleep(10)
        spikes = []
        for delay in (0.2, 1.0, 3.0, 0.5):  # latency spikes of 5 s each
            proxy.latency(delay)
            time.sleep(5)
            spikes.append(delay)
        proxy.latency(0.0)
        time.sleep(10)
        proxy.blackhole(True)
        time.sleep(30)
        proxy.blackhole(False)
        resumed = wait_for_progress(log)
        figures = {**settle(worker, feed, log, label), "latency_spikes_s": spikes,
                   "blackhole_s": 30, "resumed_after_heal_s": round(resumed, 1),
                   "proxy_connections": proxy.connections}
    finally:
        worker.stop()
        proxy.stop()
    print("\nFAULT 5 figures:", figures)
    assert figures["handled_twice"] == 0
