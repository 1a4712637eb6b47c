"""Worker failure handling on a real broker: retries, capability dead letters, breaker, redrive."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import orjson
import pytest

from choreo.actions import build_action
from choreo.dead_letter import read_dead_letter_headers
from choreo.envelope import new_event
from choreo.kafka_io import send_all, send_events
from tests.integration.conftest import REPO, Worker, wait_until
from tests.integration.flaky_handlers import CHOREOGRAPHY


@pytest.fixture(scope="module")
def worker(make_worker) -> Worker:  # noqa: ANN001
    return make_worker(CHOREOGRAPHY,
                       env={"CHOREO_HANDLERS": "tests.integration.flaky_handlers:HANDLERS"})


def send(worker: Worker, event_type: str, data: dict) -> str:
    correlation = f"{event_type}-{uuid.uuid4().hex[:8]}"
    event = {"event_id": str(uuid.uuid4()), "event_type": event_type,
             "timestamp": "2026-11-21T10:00:00Z", "source": "test",
             "payload": data, "metadata": {"correlation_id": correlation}}
    asyncio.run(send_events(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                            [event]))
    return correlation


def flow(worker: Worker, correlation: str) -> list[dict]:
    return [e for e in worker.events() if e["metadata"].get("correlation_id") == correlation]


def kinds(worker: Worker, correlation: str) -> list[str]:
    return [e["event_type"] for e in flow(worker, correlation)]


def dead_letters(worker: Worker, capability: str) -> list:
    return worker.read(worker.choreography.topics.capability_dead_letter_topic(capability))


def redrive(worker: Worker, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHOREO_BROKER": worker.broker.url,
           "CHOREO_CONFIG": str(worker.config_path), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "choreo.cli", "redrive", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_handler_that_fails_twice_is_retried_and_completes_once(worker: Worker):
    before = worker.metric("choreo_worker_retries_total", capability="flaky")
    correlation = send(worker, "test.retry", {"fail_times": 2})
    wait_until(lambda: "action.completed" in kinds(worker, correlation), timeout=60)
    events = flow(worker, correlation)
    assert [e["event_type"] for e in events] == [
        "test.retry", "action.started", "flaky.done", "action.completed"]
    assert events[2]["payload"]["attempts"] == 3
    assert events[3]["payload"]["attempts"] == 3
    assert worker.metric("choreo_worker_retries_total", capability="flaky") - before == 2
    assert not [r for r in dead_letters(worker, "flaky")
                if orjson.loads(r.value)["metadata"]["correlation_id"] == correlation]


def test_an_action_that_always_fails_is_dead_lettered_and_redriven_once(worker: Worker,
                                                                         tmp_path):
    fixed = tmp_path / "fixed"
    correlation = send(worker, "test.until_fixed", {"fixed_when": str(fixed)})
    wait_until(lambda: "action.failed" in kinds(worker, correlation), timeout=60)
    failed = flow(worker, correlation)[-1]
    assert failed["payload"]["error"] == ("handler fail_until_fixed (tests.integration."
                                          "flaky_handlers.fail_until_fixed) raised "
                                          "RuntimeError: downstream is down")
    assert failed["payload"]["attempts"] == 4
    [record] = [r for r in dead_letters(worker, "flaky")
                if orjson.loads(r.value)["metadata"]["correlation_id"] == correlation]
    topics = worker.choreography.topics
    [action] = [r for r in worker.read(topics.capability_topic("flaky"))
                if orjson.loads(r.value)["metadata"]["correlation_id"] == correlation]
    assert (record.key, record.value) == (action.key, action.value), "original bytes and key"
    info = read_dead_letter_headers(record.headers)
    assert info["reason"] == "handler_error" and info["attempts"] == "4"
    assert (info["topic"], int(info["offset"])) == (action.topic, action.offset)

    dry = redrive(worker, "--capability", "flaky", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would re-drive 1 record(s)" in dry.stderr
    fixed.write_text("deployed the fix")
    first = redrive(worker, "--capability", "flaky")
    assert first.returncode == 0, first.stderr
    assert "re-drove 1 record(s)" in first.stderr
    wait_until(lambda: "action.completed" in kinds(worker, correlation), timeout=60)
    second = redrive(worker, "--capability", "flaky")
    assert "re-drove 0 record(s)" in second.stderr, second.stderr
    actions = [r for r in worker.read(topics.capability_topic("flaky"))
               if orjson.loads(r.value)["metadata"]["correlation_id"] == correlation]
    assert len(actions) == 2, "the original and one re-driven copy, with the same bytes"
    assert actions[0].value == actions[1].value
    assert kinds(worker, correlation) == [
        "test.until_fixed", "action.started", "action.failed",
        "action.started", "flaky.done", "action.completed"]


def test_the_breaker_opens_and_closes_with_its_events_metric_and_view(worker: Worker, tmp_path):
    topics = worker.choreography.topics

    def changes() -> list[tuple[str, str]]:
        return [(e["payload"]["from"], e["payload"]["to"]) for e in worker.events()
                if e["event_type"] == "circuit_breaker.state.changed"
                and e["payload"]["capability"] == "fragile"]

    down = send(worker, "test.fragile_down", {"fixed_when": str(tmp_path / "never")})
    wait_until(lambda: "action.failed" in kinds(worker, down), timeout=60)
    assert changes() == [("closed", "open")]
    view = orjson.loads(worker.get("/capabilities/"))
    fragile = next(c for c in view["capabilities"] if c["capability"] == "fragile")
    assert fragile["circuit_breaker"]["state"] == "open"
    assert fragile["policy"]["breaker_cooldown"] == 2.0
    assert fragile["dead_letter_topic"] == topics.capability_dead_letter_topic("fragile")
    assert worker.metric("choreo_circuit_breaker_state", capability="fragile", state="open") == 1

    ok = send(worker, "test.fragile_ok", {})
    wait_until(lambda: "action.completed" in kinds(worker, ok), timeout=60)
    assert changes() == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert worker.metric("choreo_circuit_breaker_state", capability="fragile", state="closed") == 1
    assert orjson.loads(worker.get("/capabilities/"))["capabilities"][1][
        "circuit_breaker"]["state"] == "closed"


def test_a_handler_returning_the_wrong_type_fails_its_action_and_the_fix_runs(worker: Worker,
                                                                              tmp_path):
    fixed = tmp_path / "fixed"
    broken = send(worker, "test.wrong_type", {"fixed_when": str(fixed)})
    wait_until(lambda: "action.failed" in kinds(worker, broken), timeout=60)
    failed = flow(worker, broken)[-1]["payload"]
    assert failed["reason"] == "bad_result" and failed["attempts"] == 4
    assert failed["error"] == ("handler dicts_until_fixed (tests.integration.flaky_handlers."
                               "dicts_until_fixed) returned list of dict, expected a list of "
                               "Result")
    [record] = [r for r in dead_letters(worker, "flaky")
                if orjson.loads(r.value)["metadata"]["correlation_id"] == broken]
    assert read_dead_letter_headers(record.headers)["reason"] == "bad_result"
    fixed.write_text("deployed the fix")
    after = send(worker, "test.wrong_type", {"fixed_when": str(fixed)})
    wait_until(lambda: "action.completed" in kinds(worker, after), timeout=60)
    assert kinds(worker, after) == ["test.wrong_type", "action.started", "flaky.done",
                                    "action.completed"]


def test_bad_records_between_two_good_actions_on_a_capability_topic(worker: Worker):
    """Garbage, and actions nested 300 levels deep (orjson reads 1,024, writes 254; the
    file allows 64): each dead-lettered to the capability's dead-letter topic with its
    bytes and reason, and the good actions on either side run."""
    topics = worker.choreography.topics
    run = uuid.uuid4().hex[:8]

    def action(name: str, data: dict) -> bytes:
        trigger = new_event("test.retry", data, source="test", correlation_id=f"{name}-{run}")
        return build_action(pattern_id="retry", action="fail_then_succeed", capability="flaky",
                            priority=1, triggers=[trigger]).event.to_bytes()

    deep = b"[" * 300 + b"]" * 300
    in_pattern = action("deep-pattern", {}).replace(b'"pattern_id":"retry"',
                                                   b'"pattern_id":' + deep)
    in_data = action("deep-data", {"n": 1}).replace(b'"n":1', b'"n":' + deep)
    garbage = b"\x00\xff" + run.encode()
    records = [(b"good-1", action("good-1", {})), (b"deep-pattern", in_pattern),
               (b"garbage", garbage), (b"deep-data", in_data), (b"good-2", action("good-2", {}))]
    asyncio.run(send_all(worker.broker.bootstrap, topics.capability_topic("flaky"), records))
    wait_until(lambda: {f"good-1-{run}", f"good-2-{run}"} <= {
        e["metadata"].get("correlation_id") for e in worker.events()
        if e["event_type"] in ("action.completed", "action.failed")}, timeout=60)
    assert kinds(worker, f"good-1-{run}") == ["action.started", "flaky.done",
                                              "action.completed"]
    assert kinds(worker, f"good-2-{run}") == ["action.started", "flaky.done",
                                              "action.completed"]
    assert kinds(worker, f"deep-data-{run}") == [], "refused before it is handled"
    dead = wait_until(lambda: (found := {r.key: r for r in dead_letters(worker, "flaky")})
                      .keys() >= {b"deep-pattern", b"deep-data", b"garbage"} and found,
                      timeout=60)
    for key, value, reason in [(b"deep-pattern", in_pattern, "too_deep"),
                               (b"deep-data", in_data, "too_deep"),
                               (b"garbage", garbage, "not_json")]:
        assert dead[key].value == value, key
        info = read_dead_letter_headers(dead[key].headers)
        assert info["reason"] == reason and info["stage"] == "worker.flaky", (key, info)
    assert worker.process.poll() is None, "the worker never stopped"
