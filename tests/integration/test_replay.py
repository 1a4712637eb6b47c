"""`faust -A topology replay`: rebuild equals live after a real run; what-if diffs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from choreo.envelope import iso_from_ts, new_event
from choreo.kafka_io import send_all, send_events
from choreo.replay_io import committed_offsets, read_table_changelog, topic_bounds
from choreo.samples import sample_orders, with_short_windows
from choreo.settings import BUNDLED_CONFIG
from choreo.trail import build_trail, render
from tests.integration.conftest import REPO, Worker, wait_until
from tests.integration.test_ecommerce_flow import records_for

# A threshold keyed by another field than the correlation id: its events go through the
# re-keyed topic, and most of its keys stay in flight (state the rebuild must match).
BROWSING = """
[[patterns]]
id = "browsing"
kind = "threshold"
on = "page_viewed"
count = 5
window = "1h"
group_by = "payload.user"
action = "suggest_products"
capability = "customer_engagement"
"""


@pytest.fixture(scope="module")
def worker(make_worker) -> Worker:  # noqa: ANN001
    return make_worker(with_short_windows(BUNDLED_CONFIG.read_text()) + BROWSING)


def page_views(label: str) -> list[dict]:
    """Users u0..u3 view 2, 3, 4 and 6 pages, each view its own correlation id.

    Their event times differ: a key's events with equal times read from several partitions
    are applied in the order the re-keyed topic got them, which a what-if run (re-keying
    itself) cannot know.
    """
    t0 = time.time()
    return [new_event("page_viewed", {"user": f"{label}-u{u}", "page": n}, source="shop.web",
                      correlation_id=f"{label}-visit-{u}-{n}",
                      timestamp=iso_from_ts(t0 + 0.01 * (10 * u + n))).as_dict()
            for u, views in enumerate((2, 3, 4, 6)) for n in range(views)]


@pytest.fixture(scope="module")
def ran(worker: Worker) -> dict[str, str]:
    """The five sample flows, run to the end; returns description -> correlation id."""
    suffix = "-" + uuid.uuid4().hex[:6]
    samples = sample_orders(suffix)
    asyncio.run(send_events(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                            [envelope for _, envelope, _ in samples] + page_views(suffix)))
    ids = {d: e["metadata"]["correlation_id"] for d, e, _ in samples}
    wait_until(lambda: all(render(build_trail(records_for(worker, ids[d]))) == expected
                           for d, _, expected in samples), timeout=90)
    settle(worker)
    return ids


def settle(worker: Worker) -> None:
    """Wait until the engine has committed everything on its input topics."""
    topics = worker.choreography.topics

    def caught_up() -> bool:
        for topic in (topics.events_topic, topics.rekeyed_topic):
            bounds = asyncio.run(topic_bounds(worker.broker.bootstrap, topic))
            done = asyncio.run(committed_offsets(worker.broker.bootstrap, worker.name, topic))
            if bounds is None or any(done.get(p, 0) < end for p, end in bounds.end.items()
                                     if end):
                return False
        return True

    wait_until(caught_up, timeout=60)


def replay(worker: Worker, *args: str) -> tuple[int, dict]:
    env = {**os.environ, "CHOREO_BROKER": worker.broker.url, "CHOREO_APP_ID": worker.name,
           "CHOREO_CONFIG": str(worker.config_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "faust", "-A", "topology", "replay", "--json",
                           "--no-progress", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.stdout, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def test_rebuild_equals_the_live_state_after_a_real_run(worker: Worker, ran: dict[str, str]):
    code, report = replay(worker, "--fail-on-diff")
    state = report["state"]
    assert state["equal"], json.dumps(state["different"][:3], indent=1)
    assert code == 0
    assert state["live_entries"] == state["rebuilt_entries"] > 0
    # Three browsing users below the count are in flight; the fourth fired (and is too).
    live = asyncio.run(read_table_changelog(worker.broker.bootstrap,
                                            f"{worker.name}-pattern-state-changelog"))
    assert sum(k.startswith(b"browsing\x1f") for k in live) == 4
    assert report["records_replayed"] == sum(
        b - a for r in ("range", "rekeyed_range") for a, b in report[r].values())
    # The replayed engine would have re-sent what the live one did.
    assert report["rekeyed_sent"] == sum(b for _, b in report["rekeyed_range"].values())
    # One correlation: only its entries are compared.
    code, one = replay(worker, "--correlation-id", ran["declined payment"])
    assert one["state"]["equal"] and 0 < one["state"]["live_entries"] < state["live_entries"]


def test_what_if_with_the_live_file_changes_nothing(worker: Worker, ran: dict[str, str]):
    code, report = replay(worker, "--what-if", str(worker.config_path), "--fail-on-diff")
    diff = report["diff"]
    assert (diff["added"], diff["removed"], diff["changed"]) == ([], [], []), diff
    assert diff["same"] == report["emitted"] > 20
    assert code == 0


def test_what_if_diffs_a_raised_threshold_a_new_pattern_and_a_changed_priority(
        worker: Worker, ran: dict[str, str], tmp_path: Path):
    text = worker.config_path.read_text()
    changed = (text.replace('count = 3\nwindow = "10m"', 'count = 5\nwindow = "10m"', 1)
               .replace('action = "check_inventory"\ncapability = "inventory_management"\n'
                        'priority = 8', 'action = "check_inventory"\ncapability = '
                        '"inventory_management"\npriority = 10', 1)
               + '\n[[patterns]]\nid = "refund-cancelled"\nkind = "event"\n'
                 'on = "order_cancelled"\naction = "refund_order"\n'
                 'capability = "order_management"\n')
    assert 'count = 5\nwindow = "10m"' in changed and "priority = 10" in changed
    path = tmp_path / "what-if.toml"
    path.write_text(changed)
    declined = ran["declined payment"]
    code, report = replay(worker, "--what-if", str(path), "--fail-on-diff")
    assert code == 1
    diff = report["diff"]
    added = [(a["payload"]["action"], a["metadata"]["correlation_id"]) for a in diff["added"]]
    removed = [(a["payload"]["action"], a["metadata"]["correlation_id"])
               for a in diff["removed"]]
    assert added == [("refund_order", declined)]
    assert removed == [("flag_customer", declined)]
    assert {c["replayed"]["metadata"]["correlation_id"] for c in diff["changed"]} == set(
        ran[d] for d in ("happy path", "high value", "out of stock", "declined payment"))
    assert all(c["fields"] == ["payload.priority"] for c in diff["changed"])
    env = {**os.environ, "CHOREO_BROKER": worker.broker.url, "CHOREO_APP_ID": worker.name,
           "CHOREO_CONFIG": str(worker.config_path), "PYTHONPATH": str(REPO)}
    text = subprocess.run([sys.executable, "-m", "choreo.cli", "replay", "--no-progress",
                           "--what-if", str(path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180).stdout
    print(text)
    assert "1 added, 1 removed, 4 changed" in text and "payload.priority: 8 -> 10" in text
    # One correlation, and the same diff for it only.
    code, one = replay(worker, "--what-if", str(path), "--correlation-id", declined)
    assert [a["payload"]["action"] for a in one["diff"]["added"]] == ["refund_order"]
    assert len(one["diff"]["changed"]) == 1


def test_replay_sends_nothing_unless_asked_and_emit_sends_where_told(
        worker: Worker, ran: dict[str, str]):
    topics = worker.choreography.topics
    names = [topics.capability_topic(c) for c in worker.choreography.capabilities]

    def ends() -> dict[str, int]:
        return {n: sum(b.end.values()) for n in names
                if (b := asyncio.run(topic_bounds(worker.broker.bootstrap, n)))}

    before = ends()
    replay(worker, "--what-if", str(worker.config_path))
    assert ends() == before
    target = f"{worker.name}.replayed"
    _code, report = replay(worker, "--correlation-id", ran["happy path"], "--emit", target)
    assert ends() == before
    assert report["emitted_to"] == {target: report["actions"]}
    sent = worker.read(target)
    assert len(sent) == report["actions"] > 0
    assert all(dict(r.headers)["choreo.replay"] == f"{worker.name}-replay".encode()
               for r in sent)


def test_the_text_report_and_a_tampered_changelog(worker: Worker, ran: dict[str, str]):
    env = {**os.environ, "CHOREO_BROKER": worker.broker.url, "CHOREO_APP_ID": worker.name,
           "CHOREO_CONFIG": str(worker.config_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "choreo.cli", "replay", "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pattern state: live" in proc.stdout and ": EQUAL" in proc.stdout
    # An entry the log does not explain is found (and then deleted again).
    changelog = f"{worker.name}-pattern-state-changelog"
    key = b"order-to-shipment\x1fno-such-order"
    value = b'{"p":0,"o":{"e":1},"s":{"key":"no-such-order","wm":0,"seq":0,"buf":[],"core":{}}}'
    asyncio.run(send_all(worker.broker.bootstrap, changelog, [(key, value)]))
    try:
        code, report = replay(worker, "--fail-on-diff")
        assert code == 1
        assert report["state"]["only_live"] == [["order-to-shipment", "no-such-order"]]
    finally:
        asyncio.run(send_all(worker.broker.bootstrap, changelog, [(key, None)]))
