"""`make demo`: start Kafka and a worker, feed sample orders, print their trails, stop.

Everything it starts it stops again, on success and on failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from choreo.config import load_choreography  # noqa: E402
from choreo.dead_letter import read_dead_letter_headers  # noqa: E402
from choreo.envelope import new_event  # noqa: E402
from choreo.kafka_io import collect, envelopes, send_all, send_events  # noqa: E402
from choreo.samples import sample_orders, with_short_windows  # noqa: E402
from choreo.settings import BUNDLED_CONFIG  # noqa: E402
from choreo.trail import build_trail, render  # noqa: E402

PORT = int(os.environ.get("CHOREO_DEMO_KAFKA_PORT", "9092"))
WEB_PORT = int(os.environ.get("CHOREO_DEMO_WEB_PORT", "6066"))
BOOTSTRAP = f"127.0.0.1:{PORT}"
KAFKA_ENV = {**os.environ, "KAFKA_DIR": str(REPO / ".kafka" / "demo"), "KAFKA_PORT": str(PORT)}
WORK = REPO / ".kafka" / "demo-worker"
CONFIG = WORK / "ecommerce-short-windows.toml"
WORKFLOWS = BUNDLED_CONFIG.parent / "workflows.toml"
LOAN = {"applicant_id": "app-5001", "amount": 25000, "annual_income": 80000,
        "credit_score": 735}


def say(text: str = "") -> None:
    print(text, flush=True)


def kafka(*args: str) -> None:
    subprocess.run([str(REPO / "scripts" / "kafka-local"), *args], env=KAFKA_ENV, check=True)


def start_worker() -> subprocess.Popen:
    shutil.rmtree(WORK, ignore_errors=True)  # state of an earlier run belongs to a purged broker
    WORK.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(with_short_windows(BUNDLED_CONFIG.read_text()) + loan_workflow())
    env = {**os.environ, "CHOREO_BROKER": f"kafka://{BOOTSTRAP}", "CHOREO_APP_ID": "choreo-demo",
           "CHOREO_DATA_DIR": str(WORK / "data"), "CHOREO_WEB_PORT": str(WEB_PORT),
           "CHOREO_CONFIG": str(CONFIG), "PYTHONPATH": str(REPO)}
    log = open(WORK / "worker.log", "wb")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "faust", "-A", "topology", "worker",
                             "-l", "info"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def loan_workflow() -> str:
    """The bundled loan-approval saga, to run next to the e-commerce choreography."""
    text = WORKFLOWS.read_text()
    return "\n" + text[text.index("# A saga:"):text.index("# Research, writing")]


def instance(instance_id: str) -> dict | None:
    try:
        return orjson.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{WEB_PORT}/workflows/{instance_id}/", timeout=5).read())
    except OSError:
        return None


async def run_loans(topic: str) -> int:
    """Start two loan sagas (one by its trigger event, one by workflow.start) and print them."""
    say("\n== a workflow next to the choreography: the loan-approval saga")
    say("   app-5001 by its trigger event loan_application_submitted; loan-5002 by a "
        "workflow.start whose input injects a failure at the approval step")
    await send_events(BOOTSTRAP, topic, [
        new_event("loan_application_submitted", LOAN, source="bank.web",
                  correlation_id="app-5001").as_dict(),
        new_event("workflow.start", {"workflow": "loan_approval", "instance_id": "loan-5002",
                                     "input": {**LOAN, "applicant_id": "app-5002",
                                               "fail_at": "approval"}},
                  source="bank.web", correlation_id="loan-5002").as_dict()])
    wanted = {"loan_approval-app-5001": "completed", "loan-5002": "compensated"}
    deadline = time.monotonic() + 60
    views: dict[str, dict | None] = {}
    while time.monotonic() < deadline:
        views = {i: instance(i) for i in wanted}
        if all(v and v["status"] not in ("running", "compensating") for v in views.values()):
            break
        await asyncio.sleep(0.5)
    failures = 0
    for instance_id, expected in wanted.items():
        view = views.get(instance_id) or {"status": "not found", "timings": {}}
        ok = view["status"] == expected
        failures += not ok
        say(f"\n   {instance_id}: {view['status']} in {view.get('duration_seconds')}s "
            f"{'as expected' if ok else 'EXPECTED ' + expected}")
        for step, timing in view["timings"].items():
            undo = f", compensation {timing['compensation']}" if "compensation" in timing else ""
            error = f" ({timing['error']})" if timing.get("error") else ""
            say(f"     {step:<16} {timing['status']:<10} {timing['duration_seconds']}s, "
                f"{timing.get('attempts', 0)} attempt(s){undo}{error}")
        if view.get("status") == "completed":
            output = view["output"]
            say(f"     -> loan {output['loan_id']}: approved={output['approved']}, "
                f"rate {output['interest_rate']}%")
        elif view.get("compensation"):
            say(f"     -> undone in reverse order: {', '.join(view['compensation']['done'])}")
    say("   (GET /workflows/{instance_id}/ shows each instance's state, history and "
        "timings; /workflows/ lists them)")
    return failures


def wait_for_web(worker: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited ({worker.returncode}); see {WORK}/worker.log")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/health/", timeout=1)
            return  # 200 once partitions are assigned and tables recovered
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the worker was not ready in {timeout}s")


async def wait_for_flows(topics: list[str], samples: list, timeout: float = 120.0
                         ) -> list[dict]:
    """Every record of the topics once each sample's trail is what it should be (or time's up)."""
    deadline = time.monotonic() + timeout
    while True:
        records = envelopes(await collect(BOOTSTRAP, topics, idle=0.5))
        if all(render(build_trail(trail_of(records, first))) == expected
               for _, first, expected in samples) or time.monotonic() > deadline:
            return records
        await asyncio.sleep(1.0)


def trail_of(records: list[dict], first: dict) -> list[dict]:
    correlation = first["metadata"]["correlation_id"]
    mine = [r for r in records if r["metadata"].get("correlation_id") == correlation]
    return sorted(mine, key=lambda r: r["timestamp"])


async def feed_and_watch() -> int:
    choreography = load_choreography(CONFIG)
    topics = choreography.topics
    samples = sample_orders()
    firsts = [first for _, first, _ in samples]
    say(f"feeding {len(samples)} samples (4 orders and an abandoned checkout), one duplicate "
        "and two malformed records")
    say("  (this run cuts the choreography's windows to seconds: a checkout is abandoned "
        "after 4 s, an order stalls after 8 s)")
    await send_events(BOOTSTRAP, topics.events_topic, [*firsts, firsts[0]])
    await send_all(BOOTSTRAP, topics.events_topic,
                   [(b"bad-1", b"{not json"), (b"bad-2", orjson.dumps({"event_type": "x"}))])
    started = time.monotonic()
    action_topics = [topics.capability_topic(c) for c in choreography.capabilities]
    records = await wait_for_flows([topics.events_topic, *action_topics], samples)
    actions = [r for r in records if r["event_type"] == "action.requested"]
    failures = 0
    for description, first, expected in samples:
        mine = trail_of(records, first)
        lines = render(build_trail(mine))
        ok = lines == expected
        failures += not ok
        n_actions = sum(1 for e in mine if e["event_type"] == "action.requested")
        say(f"\n== {first['metadata']['correlation_id']} ({description}): {len(mine)} records, "
            f"{n_actions} actions {'as expected' if ok else 'DIFFERENT FROM EXPECTED'}")
        for line in lines:
            say("   " + line)
    say("\n== the declined order's correlation summary (GET /correlations/ord-1004/):")
    summary = orjson.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{WEB_PORT}/correlations/ord-1004/").read())
    say(f"   {summary['event_count']} events of {len(summary['event_types'])} types from "
        f"{len(summary['sources'])} sources over {summary['duration_seconds']:.1f}s, "
        f"{len(summary['actions'])} actions: "
        + ", ".join(a["action"] for a in summary["actions"]))
    dead = await collect(BOOTSTRAP, [topics.dead_letter_topic], idle=0.5)
    say(f"\n== dead-letter topic {topics.dead_letter_topic}: {len(dead)} record(s)")
    for record in dead:
        info = read_dead_letter_headers(record.headers)
        say(f"   {info.get('reason')}: {info.get('detail')}  (from {info.get('topic')}:"
            f"{info.get('partition')}@{info.get('offset')}, value {record.value[:30]!r})")
    loan_failures = await run_loans(topics.events_topic)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/metrics").read().decode()
    dups = sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("choreo_duplicates_total"))
    say(f"\n== summary: {len(samples) - failures}/{len(samples)} orders as expected, "
        f"{len(actions)} actions sent, {len(dead)} dead-lettered, {dups:.0f} duplicate(s) "
        f"dropped, flows done in {time.monotonic() - started:.1f}s")
    say(f"   web views were at http://127.0.0.1:{WEB_PORT}/patterns/, "
        "/patterns/{id}/state/{key}/, /correlations/{id}/, /workflows/ and /metrics")
    return 1 if failures or loan_failures or len(dead) != 2 else 0


def main() -> int:
    # Topics the worker just created have no leader for a moment; the clients retry quietly.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    t0 = time.monotonic()
    say(f"starting Kafka on {BOOTSTRAP} (first run downloads it from Maven Central)")
    kafka("stop", "--purge")
    kafka("start")
    worker = None
    try:
        say("starting the worker: faust -A topology worker")
        worker = start_worker()
        wait_for_web(worker)
        code = asyncio.run(feed_and_watch())
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        kafka("stop", "--purge")
    say(f"demo {'passed' if code == 0 else 'FAILED'} in {time.monotonic() - t0:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
