"""A worker restarted with an edited choreography file while keys are in flight.

One worker runs config A; events leave state in flight for every pattern; it stops and
starts again with config B, which renames one pattern (`renamed_from`), removes one,
changes the kind of one and the windows of two. The worker must come up and stay up, drop
what B has no place for (logged, counted), carry the renamed pattern's flows over, and go
on matching. Event time is crafted, as in test_windowed_patterns.py: nothing moves a
deadline but the events the tests send, in ascending event time, in file order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest

from choreo.config import parse_choreography
from tests.integration.conftest import REPO, Worker, wait_until
from tests.integration.test_windowed_patterns import ev, feed, fired, get_json

HEAD = """
[topics]
prefix = ""

[defaults]
allowed_lateness = "0s"
idle_timeout = "1h"
correlation_ttl = "6h"
"""

KEPT = """
[[patterns]]
id = "card-failures"
kind = "threshold"
on = "payment_failed"
count = 3
window = "{card_window}"
group_by = "payload.customer_id"
action = "flag_customer"
capability = "risk"

[[patterns]]
id = "bursts"
kind = "threshold"
on = "page_viewed"
count = 2
window = "{burst_window}"
window_kind = "tumbling"
action = "note_burst"
capability = "analytics"
"""

CHECKOUT = """
[[patterns]]
id = "{id}"
{renamed}
kind = "sequence"
steps = ["checkout_started", "order_placed", "payment_captured"]
max_interval = "10m"
action = "confirm_order"
capability = "orders"
timeout_action = "escalate_stalled_checkout"
timeout_capability = "support"
"""

RETURNS = """
[[patterns]]
id = "returns"
kind = "sequence"
steps = ["return_requested", "return_received"]
max_interval = "10m"
action = "refund"
capability = "orders"
"""

CART_ABSENCE = """
[[patterns]]
id = "cart"
kind = "absence"
after = "cart_updated"
expect = "order_placed"
within = "30m"
action = "send_cart_reminder"
capability = "notifications"
"""

CART_THRESHOLD = """
[[patterns]]
id = "cart"
kind = "threshold"
on = "cart_updated"
count = 2
window = "10m"
action = "send_cart_reminder"
capability = "notifications"
"""

CONFIG_A = (HEAD + KEPT.format(card_window="10m", burst_window="1m")
            + CHECKOUT.format(id="checkout", renamed="") + RETURNS + CART_ABSENCE)
CONFIG_B = (HEAD + KEPT.format(card_window="1h", burst_window="2m")
            + CHECKOUT.format(id="checkout-v2", renamed='renamed_from = "checkout"')
            + CART_THRESHOLD)


def key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


@dataclass
class Evolved:
    worker: Worker
    t0: float
    events: dict[str, dict]
    keys: dict[str, str]
    check: subprocess.CompletedProcess  # `choreo check B --state` before the restart


def write_config(worker: Worker, text: str) -> None:
    text = text.replace('prefix = ""', f'prefix = "{worker.name}."', 1)
    worker.config_path.write_text(text)
    worker.choreography = parse_choreography(text)


def check_state(worker: Worker, app_id: str | None = None) -> subprocess.CompletedProcess:
    """`choreo check FILE --state` against the worker's deployment, as a user runs it."""
    env = {**os.environ, "CHOREO_BROKER": worker.broker.url,
           "CHOREO_APP_ID": app_id or worker.name, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "choreo.cli", "check",
                           str(worker.config_path), "--state"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def log_of(worker: Worker) -> str:
    return (worker.data_dir.parent / f"{worker.name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def evolved(make_worker) -> Evolved:  # noqa: ANN001
    worker = make_worker(CONFIG_A)
    t0 = (time.time() - 30 * 86_400.0) // 120 * 120  # on a 2-minute boundary
    keys = {name: key(name)
            for name in ("order", "stalled", "return", "cart", "customer", "visit")}
    events = {
        "viewed": ev("page_viewed", t0 + 1, keys["visit"]),
        "started": ev("checkout_started", t0 + 10, keys["order"]),
        "placed": ev("order_placed", t0 + 20, keys["order"]),
        "stalled": ev("checkout_started", t0 + 25, keys["stalled"]),
        "requested": ev("return_requested", t0 + 30, keys["return"]),
        "cart": ev("cart_updated", t0 + 40, keys["cart"]),
    }
    feed(worker, *events.values())
    for n, at in enumerate((t0 + 50, t0 + 60)):  # re-keyed by customer: one at a time
        feed(worker, ev("payment_failed", at, key("o"), customer_id=keys["customer"]))
        wait_until(lambda n=n: len(get_json(
            worker, f"/patterns/card-failures/state/{keys['customer']}/").get("recent", []))
            == n + 1, timeout=30)
    in_flight = {
        f"/patterns/checkout/state/{keys['order']}/": lambda s: len(s["matched_steps"]) == 2,
        f"/patterns/checkout/state/{keys['stalled']}/": lambda s: len(s["matched_steps"]) == 1,
        f"/patterns/returns/state/{keys['return']}/": lambda s: len(s["matched_steps"]) == 1,
        f"/patterns/cart/state/{keys['cart']}/": lambda s: s["pending"] is not None,
        f"/patterns/bursts/state/{keys['visit']}/": lambda s: len(s["windows"]) == 1,
    }
    for path, check in in_flight.items():
        wait_until(lambda p=path, c=check: (s := get_json(worker, p)) and not s.get("empty",
                   True) and c(s), timeout=30)
    worker.stop()
    write_config(worker, CONFIG_B)
    check = check_state(worker)
    worker.start()
    # The first tick after the restart judges the stored state against the new file.
    wait_until(lambda: worker.metric("choreo_pattern_state_dropped_total",
                                     reason="window_changed") >= 1
               and worker.metric("choreo_pattern_state_dropped_total",
                                 reason="kind_changed") >= 1
               and worker.metric("choreo_pattern_state_dropped_total", reason="removed") >= 1,
               timeout=60)
    return Evolved(worker, t0, events, keys, check)


def test_check_state_says_what_the_restart_would_do(evolved: Evolved):
    out = evolved.check.stdout
    assert evolved.check.returncode == 1, evolved.check.stderr
    assert "kept: 'card-failures' 1\n" in out
    assert "dropped: 'bursts' 1 (window_changed)\n" in out
    assert "dropped: 'cart' 1 (kind_changed: now threshold)\n" in out
    assert "dropped: 'returns' 1 (removed)\n" in out
    assert "carried over by renamed_from: 'checkout' -> 'checkout-v2' 2\n" in out
    assert "kept: 7 correlation summaries" in out  # 5 keys, 2 payments' orders
    assert out.rstrip().endswith("state check: 3 entries would be dropped")


def test_check_state_of_an_app_id_with_no_state_says_so(evolved: Evolved):
    done = check_state(evolved.worker, app_id="no-such-app")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert ("no topic no-such-app-pattern-state-changelog" in done.stderr
            and "is CHOREO_APP_ID right?" in done.stderr)


def test_the_renamed_pattern_completes_the_flow_started_under_the_old_id(evolved: Evolved):
    worker, t0, keys = evolved.worker, evolved.t0, evolved.keys
    paid = ev("payment_captured", t0 + 100, keys["order"])
    fresh = key("order")
    new_flow = [ev("checkout_started", t0 + 110, fresh), ev("order_placed", t0 + 120, fresh),
                ev("payment_captured", t0 + 130, fresh)]
    feed(worker, paid, *new_flow)
    [carried] = wait_until(lambda: fired(worker, "orders", "checkout-v2", keys["order"]),
                           timeout=30)
    assert carried["payload"]["trigger"]["event_ids"] == [
        evolved.events["started"]["event_id"], evolved.events["placed"]["event_id"],
        paid["event_id"]]
    [new] = wait_until(lambda: fired(worker, "orders", "checkout-v2", fresh), timeout=30)
    assert new["payload"]["trigger"]["event_ids"] == [e["event_id"] for e in new_flow]
    assert fired(worker, "orders", "checkout", keys["order"]) == []
    assert get_json(worker, f"/patterns/checkout-v2/state/{keys['order']}/")["empty"] is True


def test_a_removed_patterns_state_is_dropped_and_the_worker_stays_up(evolved: Evolved):
    worker = evolved.worker
    assert worker.metric("choreo_pattern_state_dropped_total", reason="removed") == 1
    gone = get_json(worker, f"/patterns/returns/state/{evolved.keys['return']}/")
    assert gone["status"] == 404 and gone["error"] == "no pattern 'returns'"
    log = log_of(worker)
    assert "KeyError" not in log and "Traceback" not in log
    assert "'returns' 1 (removed)" in log
    assert worker.process is not None and worker.process.poll() is None
    assert get_json(worker, "/health/")["status"] == "ready"


def test_a_pattern_whose_kind_changed_starts_afresh(evolved: Evolved):
    worker, t0, cart = evolved.worker, evolved.t0, evolved.keys["cart"]
    assert worker.metric("choreo_pattern_state_dropped_total", reason="kind_changed") == 1
    assert get_json(worker, f"/patterns/cart/state/{cart}/")["empty"] is True
    updates = [ev("cart_updated", t0 + 200, cart), ev("cart_updated", t0 + 210, cart)]
    feed(worker, updates[0])
    wait_until(lambda: len(get_json(worker, f"/patterns/cart/state/{cart}/")
                           .get("recent", [])) == 1, timeout=30)
    feed(worker, updates[1])
    [action] = wait_until(lambda: fired(worker, "notifications", "cart", cart), timeout=30)
    assert action["payload"]["trigger"]["event_ids"] == [updates[1]["event_id"]]
    assert action["payload"]["count"] == 2


def test_a_carried_over_deadline_fires_under_the_new_id(evolved: Evolved):
    worker, t0, stalled = evolved.worker, evolved.t0, evolved.keys["stalled"]
    # An event of no pattern's type on the same key moves its partition's watermark past
    # the step deadline (started at t0 + 25, max_interval 10m).
    feed(worker, ev("page_closed", t0 + 1000, stalled))
    [timeout] = wait_until(lambda: fired(worker, "support", "checkout-v2", stalled),
                           timeout=30)
    assert timeout["payload"]["action"] == "escalate_stalled_checkout"
    assert timeout["payload"]["trigger"]["event_ids"] == [evolved.events["stalled"]["event_id"]]
    assert timeout["payload"]["missing_step"] == "order_placed"


def test_a_sliding_windows_new_length_applies_to_the_failures_held(evolved: Evolved):
    worker, t0, customer = evolved.worker, evolved.t0, evolved.keys["customer"]
    state = get_json(worker, f"/patterns/card-failures/state/{customer}/")
    assert len(state["recent"]) == 2 and state["window"] == 3600
    # 30 minutes after the first two: outside the old 10m window, inside the new hour.
    third = ev("payment_failed", t0 + 1800, key("o"), customer_id=customer)
    feed(worker, third)
    [action] = wait_until(lambda: fired(worker, "risk", "card-failures", customer), timeout=30)
    assert action["payload"]["trigger"]["event_ids"] == [third["event_id"]]


def test_a_tumbling_windows_counters_are_dropped_when_its_length_changes(evolved: Evolved):
    worker, t0, visit = evolved.worker, evolved.t0, evolved.keys["visit"]
    assert worker.metric("choreo_pattern_state_dropped_total", reason="window_changed") == 1
    path = f"/patterns/bursts/state/{visit}/"
    assert get_json(worker, path)["empty"] is True  # a 1m window's count is no 2m window's
    feed(worker, ev("page_viewed", t0 + 1810, visit))
    state = wait_until(lambda: (s := get_json(worker, path)) and not s["empty"] and s,
                       timeout=30)
    [window] = state["windows"]
    start = (t0 + 1810) // 120 * 120
    assert (window["count"], window["fired"]) == (1, False)
    assert window["start"].startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(start)))
    assert fired(worker, "analytics", "bursts", visit) == []
