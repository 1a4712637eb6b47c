"""Fault 1: kill -9 the engine worker again and again while events stream in.

The engine runs alone (CHOREO_WORKERS=none) on RocksDB and is killed at random moments,
mid-batch included, while a producer paces events in. Afterwards every expected action must
be on its capability topic, each logical action under one id only. Then a capability worker
reads those topics: its handlers must run exactly once per action id, however many raw
duplicates the kills left there.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.faults.flow import (
    CONFIG,
    FAST_FAILOVER,
    HANDLERS,
    PacedProducer,
    flow_events,
    handled,
    tally,
)
from tests.integration.conftest import Worker, wait_until


def kill9(worker: Worker) -> None:
    assert worker.process is not None
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()


def run_engine_kills(make_worker, tmp_path, flows: int, kills: int, rate: float,  # noqa: ANN001
                     seed: int) -> dict:
    rng = random.Random(seed)
    prefix = f"kill-{rng.getrandbits(32):08x}"
    engine = make_worker(CONFIG, prefix=prefix, env={"CHOREO_WORKERS": "none", **FAST_FAILOVER})
    topics = engine.choreography.topics
    events = flow_events(flows, prefix)
    feed = PacedProducer(engine.broker.bootstrap, topics.events_topic, events, rate).start()
    run_for = len(events) / rate
    # Kill moments spread over the feed: each after a random stretch of processing.
    restarts = []
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, max(0.5, 1.5 * run_for / kills)))
        kill9(engine)
        began = time.monotonic()
        engine.start()
        restarts.append(time.monotonic() - began)
    feed.join()
    assert not feed.failed
    began = time.monotonic()
    found = wait_until(lambda: (t := tally(engine.broker.bootstrap, topics.capability_topic,
                                           events)) and not t.missing and t, timeout=300,
                       every=3)
    drained = time.monotonic() - began
    print(f"\nFAULT 1 engine phase: {found}, restarts {[round(r, 1) for r in restarts]} s")
    assert found.split == [], f"logical actions under several ids: {found.split[:5]}"
    assert found.distinct == found.expected
    engine.stop()
    # The capability workers now handle what the kills left on the topics.
    log = tmp_path / f"{prefix}-handled.log"
    workers = make_worker(CONFIG, prefix=prefix, env={
        "CHOREO_WORKERS": "audit,orders", "CHOREO_HANDLERS": HANDLERS,
        "CHOREO_FAULTS_LOG": str(log), **FAST_FAILOVER})
    wait_until(lambda: len(handled(log)[1]) >= found.expected, timeout=300, every=2)
    time.sleep(3)
    starts, done = handled(log)
    twice = [a for a, n in starts.items() if n > 1]
    assert twice == [], f"{len(twice)} actions handled more than once"
    assert len(done) == found.expected
    # Counts the kills' duplicates and also those of the worker process's own engine, which
    # derives every action again from the events topic under its own app id.
    dropped = workers.metric("choreo_duplicates_total", stage="worker")
    workers.stop()
    figures = {"events": len(events), "kills": kills, "expected_actions": found.expected,
               "raw_actions": found.raw, "raw_duplicates": found.raw_duplicates,
               "dropped_by_workers": dropped, "handled_twice": len(twice),
               "restart_s": [round(r, 1) for r in restarts],
               "drain_after_feed_s": round(drained, 1)}
    print("\nFAULT 1 figures:", figures)
    return figures


@pytest.mark.soak  # about 70 s on 2 cores (each restart waits out the 10 s session timeout)
@pytest.mark.timeout(600)
def test_engine_killed_twice_loses_no_action(make_worker, tmp_path):  # noqa: ANN001
    figures = run_engine_kills(make_worker, tmp_path, flows=600, kills=2, rate=400, seed=1)
    assert figures["handled_twice"] == 0


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_engine_killed_ten_times_in_20000_events(make_worker, tmp_path):  # noqa: ANN001
    flows = int(os.environ.get("CHOREO_FAULT_FLOWS", "10000"))
    figures = run_engine_kills(make_worker, tmp_path, flows=flows, kills=10, rate=150,
                               seed=int(os.environ.get("CHOREO_FAULT_SEED", "5")))
    assert figures["events"] >= 20_000 or flows != 10000
    assert figures["handled_twice"] == 0
