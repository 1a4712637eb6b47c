"""Threshold, temporal, sequence and absence patterns on a real broker, in crafted event time.

Nothing here sleeps for a window: events carry timestamps chosen by the test, and a later
event on the same partition (same correlation id, a type no pattern listens to) moves the
partition's watermark past a deadline. Each test starts a day of event time after the one
before, so one test's events are never late for the next.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
import urllib.error
import uuid

import orjson
import pytest

from choreo.dead_letter import read_dead_letter_headers
from choreo.envelope import iso_from_ts, new_event
from choreo.kafka_io import envelopes, send_events
from choreo.settings import Settings
from tests.integration.conftest import Worker, wait_until

CONFIG = """
[topics]
prefix = ""

[defaults]
allowed_lateness = "0s"
idle_timeout = "1h"      # deadlines move only with event time here, except where a test says
correlation_ttl = "6h"

[[patterns]]
id = "card-failures"
kind = "threshold"
on = "payment_failed"
count = 3
window = "10m"
group_by = "payload.customer_id"
action = "flag_customer"
capability = "risk"

[[patterns]]
id = "bursts"
kind = "threshold"
on = "page_viewed"
count = 2
window = "1m"
window_kind = "tumbling"
action = "note_burst"
capability = "analytics"

[[patterns]]
id = "ready-to-ship"
kind = "temporal"
all_of = ["inventory_reserved", "payment_captured", "address_verified"]
window = "5m"
action = "ship"
capability = "shipping"

[[patterns]]
id = "checkout"
kind = "sequence"
steps = ["checkout_started", "order_placed",
         { on = "payment_captured", when = "payload.amount > 0" }]
max_interval = "10m"
allowed_lateness = "1m"
action = "confirm_order"
capability = "orders"
timeout_action = "escalate_stalled_checkout"
timeout_capability = "support"

[[patterns]]
id = "abandoned-cart"
kind = "absence"
after = "cart_updated"
expect = "order_placed"
within = "30m"
action = "send_cart_reminder"
capability = "notifications"
"""

DAY = 86_400.0
_days = itertools.count()


@pytest.fixture(scope="module")
def worker(make_worker) -> Worker:  # noqa: ANN001
    return make_worker(CONFIG)


@pytest.fixture
def t0() -> float:
    """This test's event-time origin: a fresh day, weeks in the past, after earlier tests'."""
    return time.time() - 60 * DAY + next(_days) * DAY


def ev(event_type: str, at: float, corr: str, **payload) -> dict:  # noqa: ANN003
    return new_event(event_type, payload, source="test", correlation_id=corr,
                     timestamp=iso_from_ts(at)).as_dict()


def feed(worker: Worker, *events: dict) -> None:
    asyncio.run(send_events(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                            events))


def actions(worker: Worker, capability: str) -> list[dict]:
    return envelopes(worker.read(worker.choreography.topics.capability_topic(capability),
                                 idle=0.5))


def fired(worker: Worker, capability: str, pattern_id: str, key: str) -> list[dict]:
    """The pattern's actions for a key, in event-time order (they may sit on any partition)."""
    found = [a for a in actions(worker, capability) if a["payload"]["pattern_id"] == pattern_id
             and (a["metadata"].get("pattern_key") or a["metadata"].get("correlation_id")) == key]
    return sorted(found, key=lambda a: a["timestamp"])


def get_json(worker: Worker, path: str) -> dict:
    try:
        return json.loads(worker.get(path))
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, **json.loads(exc.read() or b"{}")}


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def failures_held(worker: Worker, customer: str) -> int:
    state = get_json(worker, f"/patterns/card-failures/state/{customer}/")
    return len(state.get("recent", []))


def test_threshold_fires_once_per_crossing_and_rearms(worker: Worker, t0: float):
    customer = new_id("cust")
    # Each failure is its own order (correlation id), so counting them per customer takes
    # the repartition: the events sit on their orders' partitions, the state on the
    # customer's. They are fed one at a time: re-sent from different partitions, events fed
    # together may reach the customer's partition in any order, and lateness here is 0s.
    fails = [ev("payment_failed", t0 + s, new_id("ord"), customer_id=customer)
             for s in (0, 60, 120, 180, 1200, 1230, 1260)]
    for n, failure in enumerate(fails[:4]):
        feed(worker, failure)
        wait_until(lambda n=n: failures_held(worker, customer) == min(n + 1, 3), timeout=30)
    # The third failure crossed the threshold; the fourth, inside the window, did not.
    first = fired(worker, "risk", "card-failures", customer)
    assert [a["payload"]["trigger"]["event_ids"] for a in first] == [[fails[2]["event_id"]]]
    # Twenty minutes later the window has emptied: three more failures cross again.
    for failure in fails[4:]:
        feed(worker, failure)
        wait_until(lambda f=failure: f["timestamp"] in get_json(
            worker, f"/patterns/card-failures/state/{customer}/").get("recent", []),
            timeout=30)
    both = wait_until(lambda: (f := fired(worker, "risk", "card-failures", customer))
                      and len(f) >= 2 and f, timeout=30)
    assert [a["payload"]["trigger"]["event_ids"] for a in both] == [
        [fails[2]["event_id"]], [fails[6]["event_id"]]]
    assert both[0]["metadata"]["pattern_key"] == customer
    assert worker.metric("choreo_unkeyed_events_total", pattern_id="card-failures") == 0


def test_tumbling_threshold_fires_once_per_window(worker: Worker, t0: float):
    corr = new_id("visit")
    start = (t0 // 60 + 1) * 60  # a minute boundary
    views = [ev("page_viewed", start + s, corr) for s in (1, 20, 40, 61, 100, 130)]
    feed(worker, *views)
    # Windows [0,60) has 3 views, [60,120) has 2, [120,180) has 1: two actions.
    got = wait_until(lambda: (f := fired(worker, "analytics", "bursts", corr)) and len(f) >= 2
                     and f, timeout=30)
    time.sleep(2)
    got = fired(worker, "analytics", "bursts", corr)
    assert [a["payload"]["trigger"]["event_ids"][0] for a in got] == [
        views[1]["event_id"], views[4]["event_id"]]


def test_temporal_fires_in_any_order_within_the_window(worker: Worker, t0: float):
    in_order, shuffled, too_slow = new_id("o"), new_id("o"), new_id("o")
    # Lateness is 0s and the three flows may share a partition: each flow gets a later
    # stretch of event time than the one fed before it.
    t1, t2 = t0 + 1000, t0 + 2000
    feed(worker,
         ev("payment_captured", t0 + 10, shuffled, amount=5),
         ev("address_verified", t0 + 20, shuffled),
         ev("inventory_reserved", t0 + 30, shuffled),
         ev("inventory_reserved", t1 + 10, in_order),
         ev("payment_captured", t1 + 20, in_order, amount=5),
         ev("address_verified", t1 + 30, in_order),
         ev("inventory_reserved", t2, too_slow),
         ev("payment_captured", t2 + 100, too_slow, amount=5),
         ev("address_verified", t2 + 400, too_slow))  # 400 s after the first: over 5m
    wait_until(lambda: fired(worker, "shipping", "ready-to-ship", in_order)
               and fired(worker, "shipping", "ready-to-ship", shuffled), timeout=30)
    [action] = fired(worker, "shipping", "ready-to-ship", shuffled)
    assert sorted(action["payload"]["trigger"]["event_types"]) == [
        "address_verified", "inventory_reserved", "payment_captured"]
    assert fired(worker, "shipping", "ready-to-ship", too_slow) == []


def test_sequence_completes_and_times_out_with_timeout_action(worker: Worker, t0: float):
    done, stalled = new_id("chk"), new_id("chk")
    steps = [ev("checkout_started", t0, done), ev("order_placed", t0 + 60, done),
             ev("payment_captured", t0 + 120, done, amount=30)]
    # Out of order within the pattern's one-minute lateness: handled as if in order. Events
    # wait in a reorder buffer until the watermark is a minute past them, which the clock
    # event (a type no pattern listens to) brings about.
    feed(worker, steps[1], steps[0], steps[2], ev("clock", t0 + 181, done))
    t1 = t0 + 1000  # after the first flow's events, in case both share a partition
    feed(worker, ev("checkout_started", t1, stalled), ev("order_placed", t1 + 60, stalled),
         ev("clock", t1 + 121, stalled))
    [ok] = wait_until(lambda: fired(worker, "orders", "checkout", done), timeout=30)
    assert ok["payload"]["trigger"]["event_ids"] == [e["event_id"] for e in steps]
    # The second flow's events may still be on their way when the first one's action is
    # out (other partition, or its order_placed still in the reorder buffer): wait for them.
    state = wait_until(lambda: (s := get_json(worker, f"/patterns/checkout/state/{stalled}/"))
                       .get("matched_steps") and len(s["matched_steps"]) >= 2 and s, timeout=30)
    assert [s["on"] for s in state["matched_steps"]] == ["checkout_started", "order_placed"]
    assert state["missing_steps"] == ["payment_captured"]
    assert state["step_deadline"] == iso_from_ts(t1 + 60 + 600)
    assert fired(worker, "support", "checkout", stalled) == []
    # Event time moves on (same correlation, so the same partition): the step is overdue
    # once the watermark is past the deadline plus the lateness.
    feed(worker, ev("clock", t1 + 60 + 600 + 61, stalled))
    [timeout] = wait_until(lambda: fired(worker, "support", "checkout", stalled), timeout=30)
    assert timeout["payload"]["action"] == "escalate_stalled_checkout"
    assert timeout["payload"]["missing_step"] == "payment_captured"
    assert timeout["timestamp"] == iso_from_ts(t1 + 660)  # the deadline, not the clock event
    assert fired(worker, "orders", "checkout", stalled) == []
    assert get_json(worker, f"/patterns/checkout/state/{stalled}/")["empty"] is True


def test_absence_fires_only_without_the_expected_event(worker: Worker, t0: float):
    abandoned, bought = new_id("cart"), new_id("cart")
    feed(worker, ev("cart_updated", t0, abandoned), ev("cart_updated", t0, bought),
         ev("order_placed", t0 + 600, bought))
    state = wait_until(lambda: (s := get_json(worker, f"/patterns/abandoned-cart/state/"
                                                      f"{abandoned}/")).get("pending") and s)
    assert state["expect_by"] == iso_from_ts(t0 + 1800)
    feed(worker, ev("clock", t0 + 1900, abandoned), ev("clock", t0 + 1900, bought))
    [reminder] = wait_until(lambda: fired(worker, "notifications", "abandoned-cart", abandoned),
                            timeout=30)
    assert reminder["payload"]["expected"] == "order_placed"
    time.sleep(2)
    assert fired(worker, "notifications", "abandoned-cart", bought) == []


def test_an_event_later_than_the_lateness_goes_to_the_dead_letter_topic(worker: Worker,
                                                                          t0: float):
    corr = new_id("late")
    feed(worker, ev("cart_updated", t0 + 3600, corr))
    wait_until(lambda: get_json(worker, f"/patterns/abandoned-cart/state/{corr}/")
               .get("pending"))
    late = ev("cart_updated", t0, corr)  # an hour behind the watermark, lateness 0s
    feed(worker, late)
    dlq = worker.choreography.topics.dead_letter_topic

    def dead():
        return [r for r in worker.read(dlq, idle=0.5) if r.key == corr.encode()]

    [record] = wait_until(dead, timeout=30)
    assert orjson.loads(record.value) == late
    info = read_dead_letter_headers(record.headers)
    assert info["reason"] == "late" and "abandoned-cart" in info["detail"]
    assert worker.metric("choreo_late_events_total", pattern_id="abandoned-cart") >= 1


def test_correlation_summary(worker: Worker, t0: float):
    corr = new_id("flow")
    feed(worker, ev("checkout_started", t0, corr), ev("order_placed", t0 + 30, corr),
         ev("payment_captured", t0 + 90, corr, amount=10), ev("clock", t0 + 180, corr))
    summary = wait_until(lambda: (s := get_json(worker, f"/correlations/{corr}/"))
                         .get("actions") and s, timeout=30)
    assert summary["event_count"] == 4
    assert summary["event_types"] == {"checkout_started": 1, "clock": 1, "order_placed": 1,
                                      "payment_captured": 1}
    assert summary["sources"] == ["test"]
    assert summary["first_timestamp"] == iso_from_ts(t0)
    assert summary["last_timestamp"] == iso_from_ts(t0 + 180)
    assert summary["duration_seconds"] == 180 and summary["average_interval_seconds"] == 60
    assert [a["action"] for a in summary["actions"]] == ["confirm_order"]
    assert get_json(worker, f"/correlations/{new_id('nobody')}/")["status"] == 404


def test_kill_9_mid_sequence_recovers_and_fires_once(make_worker):  # noqa: ANN001
    worker = make_worker(CONFIG)
    t0 = time.time() - 3600
    corr = new_id("crash")
    # The clock event moves the watermark a minute (the lateness) past A and B.
    feed(worker, ev("checkout_started", t0, corr), ev("order_placed", t0 + 10, corr),
         ev("clock", t0 + 80, corr))
    wait_until(lambda: len(get_json(worker, f"/patterns/checkout/state/{corr}/")
                           .get("matched_steps", [])) == 2, timeout=30)
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    worker.start()
    state = get_json(worker, f"/patterns/checkout/state/{corr}/")
    assert [s["on"] for s in state["matched_steps"]] == ["checkout_started", "order_placed"]
    feed(worker, ev("payment_captured", t0 + 100, corr, amount=1), ev("clock", t0 + 170, corr))
    wait_until(lambda: fired(worker, "orders", "checkout", corr), timeout=30)
    time.sleep(3)
    assert len(fired(worker, "orders", "checkout", corr)) == 1


QUIET_CONFIG = """
[topics]
prefix = ""

[defaults]
idle_timeout = "1h"
correlation_ttl = "2m"
dedup_horizon = "2m"

[[patterns]]
id = "views"
kind = "threshold"
on = "page_viewed"
count = 5
window = "1m"
action = "note"
capability = "analytics"

[[patterns]]
id = "ready"
kind = "temporal"
all_of = ["inventory_reserved", "payment_captured"]
window = "1m"
action = "ship"
capability = "shipping"

[[patterns]]
id = "checkout"
kind = "sequence"
steps = ["checkout_started", "order_placed", "payment_captured"]
max_interval = "1m"
action = "confirm"
capability = "orders"

[[patterns]]
id = "abandoned"
kind = "absence"
after = "cart_updated"
expect = "order_placed"
within = "1m"
action = "remind"
capability = "notifications"
"""


def test_state_returns_to_baseline_once_keys_go_quiet(make_worker):  # noqa: ANN001
    """Thousands of half-finished flows, then event time moves on: the table empties."""
    from choreo.kafka_io import send_all
    from tables.pattern_state import partition_for

    worker = make_worker(QUIET_CONFIG)
    partitions = Settings.from_env().partitions
    n = 2000
    t0 = time.time() - 7 * DAY
    flows = []
    for i in range(n):
        corr = f"quiet-{i}"
        at = t0 + i * 0.01
        # Each flow leaves something in every pattern (none completes) and a summary.
        flows += [ev("page_viewed", at, corr), ev("inventory_reserved", at, corr),
                  ev("checkout_started", at, corr), ev("cart_updated", at, corr)]
    started = time.monotonic()
    feed(worker, *flows)
    in_flight = 5 * n  # four patterns and the correlation summary per key
    wait_until(lambda: worker.metric("choreo_pattern_state_entries") == in_flight, timeout=120)
    loaded = time.monotonic() - started
    # An event without a correlation id on each partition moves its watermark an hour on:
    # it is kept by no keyed pattern, so afterwards the table should hold nothing at all.
    later = iso_from_ts(t0 + 3600)
    clocks = []
    for partition in range(partitions):
        event_id = next(f"clock-{partition}-{k}" for k in itertools.count()
                        if partition_for(f"clock-{partition}-{k}", partitions)
                        == partition)
        clock = {"event_id": event_id, "event_type": "clock", "timestamp": later,
                 "source": "test", "payload": {}, "metadata": {}}
        clocks.append((event_id.encode(), orjson.dumps(clock)))
    asyncio.run(send_all(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                         clocks))
    quiet = time.monotonic()
    wait_until(lambda: worker.metric("choreo_pattern_state_entries") == 0, timeout=60)
    body = json.loads(worker.get("/patterns/"))
    assert all(p.get("keys_in_flight", 0) == 0 for p in body["patterns"])
    print(f"\nstate: {n} keys -> {in_flight} entries in {loaded:.1f}s; back to 0 entries "
          f"{time.monotonic() - quiet:.1f}s after event time moved on")
