"""Poison mix: hostile records among ordinary ones, through the engine, a capability worker and
the orchestrator. Every ordinary event is acted on exactly once, every hostile record lands in
a dead-letter topic with its reason and its original bytes, no agent crashes, lag goes back to 0.

`make test` sends a small mix (about 1,000 records); `make soak` sends 50,000
(CHOREO_POISON_COUNT overrides).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from choreo.dead_letter import read_dead_letter_headers
from choreo.envelope import iso_from_ts, new_event, parse_event
from choreo.kafka_io import collect, key_for, producer
from tests.faults.flow import CONFIG as FLOW_CONFIG
from tests.hostile_input import malformed
from tests.integration.conftest import Worker, wait_until
from tests.integration.test_hostile_input import lag

CONFIG = FLOW_CONFIG.replace("[workers]", """
[[patterns]]
id = "oops"
kind = "event"
on = "bad.return"
action = "broken"
capability = "audit"

[[workflows]]
name = "wf"
trigger = "wf.go"
timeout = "1h"

[[workflows.steps]]
name = "step"
capability = "audit"
action = "record"
params = { n = "$input.n" }

[workers]""", 1)
HANDLERS = "tests.integration.poison_handlers:HANDLERS"
MAX_EVENT_BYTES = 1024 * 1024  # the engine's default
# The kinds of malformed input that stay malformed under the default size limit.
FUZZ_KINDS = {"random_bytes", "truncated_json", "wrong_types", "not_an_object", "deep_nesting",
              "unicode_edges", "tombstone"}


@dataclass
class Hostile:
    topic: str  # "events" or a capability name
    key: bytes
    value: bytes | None
    reason: str | None  # the dead-letter reason, None when any reason will do
    kind: str
    headers: list[tuple[str, bytes]] | None = None


def flow_event(kind: str, label: str, t: float, **payload: object) -> dict:
    return new_event(kind, {"flow": label, **payload}, source="poison", correlation_id=label,
                     timestamp=iso_from_ts(t)).as_dict()


def expected_reason(value: bytes | None) -> str:
    try:
        parse_event(value, MAX_EVENT_BYTES)
    except Exception as exc:  # noqa: BLE001 - InvalidEvent carries the reason
        return getattr(exc, "reason", type(exc).__name__)
    raise AssertionError(f"a hostile record parses: {value[:120]!r}")


def build_mix(count: int, run: str, seed: int) -> tuple[list[dict], list[dict], list[Hostile]]:
    """(ordinary flow events, workflow starts, hostile records), about `count` records in all:
    a tenth hostile, the rest ordinary."""
    rng = random.Random(seed)
    hostile_n = max(40, count // 10)
    flows = max(10, (count - hostile_n) // 2 - count // 40)
    starts = max(5, count // 40)
    t0 = time.time() - 600
    ordinary = []
    for n in range(flows):
        label = f"{run}-f{n}"
        ordinary.append(flow_event("flow.a", label, t0 + n * 0.01))
        ordinary.append(flow_event("flow.b", label, t0 + n * 0.01 + 0.005))
    go = [new_event("wf.go", {"n": n}, source="poison", correlation_id=f"{run}-w{n}",
                    timestamp=iso_from_ts(t0 + n * 0.01)).as_dict() for n in range(starts)]

    hostile: list[Hostile] = []
    fixed = [
        # Parses (orjson reads 1,024 levels) but cannot be written again (254): too deep.
        lambda i: Hostile("events", f"{run}-deep-{i}".encode(), _deep_envelope(run, i, t0),
                          "too_deep", "deep_envelope"),
        # Stamped far in the future: refused, never moves a watermark.
        lambda i: Hostile("events", f"{run}-future-{i}".encode(), orjson.dumps(
            flow_event("flow.a", f"{run}-future-{i}", 4102444800.0 + i)), "future", "future"),
        # Breaks the handler contract: action.failed, then the capability's dead-letter topic.
        lambda i: Hostile("events", f"{run}-bad-{i}".encode(), orjson.dumps(new_event(
            "bad.return", {"i": i}, source="poison", correlation_id=f"{run}-bad-{i}",
            timestamp=iso_from_ts(t0 + i * 0.01)).as_dict()), None, "wrong_return"),
        # Garbage and deep records written straight to a capability topic.
        lambda i: Hostile("audit", f"{run}-capjunk-{i}".encode(), b"{not json", None,
                          "capability_junk"),
        lambda i: Hostile("audit", f"{run}-capdeep-{i}".encode(), _deep_envelope(run, i, t0),
                          None, "capability_deep"),
        lambda i: Hostile("events", f"{run}-empty-{i}".encode(), b"", expected_reason(b""),
                          "empty_value"),
    ]
    for i in range(max(2, hostile_n // 20)):
        for make in fixed:
            hostile.append(make(i))
    # One event just under the size limit: the action copying its payload would not fit in
    # a record, and dead-lettering it needs a record larger than Kafka's default 1 MiB.
    envelope = flow_event("flow.big", f"{run}-big", t0, blob="")
    blob = "x" * (MAX_EVENT_BYTES - 200 - len(orjson.dumps(envelope)))
    big = orjson.dumps(flow_event("flow.big", f"{run}-big", t0, blob=blob))
    assert MAX_EVENT_BYTES - 300 < len(big) < MAX_EVENT_BYTES
    hostile.append(Hostile("events", f"{run}-big".encode(), big, "action_too_large", "big"))
    fuzz_needed = hostile_n - len(hostile)
    for key, value, _reason, kind in malformed(fuzz_needed * 2, seed=seed, run=run):
        if kind in FUZZ_KINDS and fuzz_needed > 0:
            hostile.append(Hostile("events", key, value, expected_reason(value), kind))
            fuzz_needed -= 1
    rng.shuffle(hostile)
    return ordinary, go, hostile


def _deep_envelope(run: str, i: int, t0: float) -> bytes:
    """A valid envelope whose payload is nested 300 levels deep (3.6 KB)."""
    head = orjson.dumps(flow_event("flow.a", f"{run}-deep-{i}", t0))
    depth = 300
    deep = b'{"a":' * depth + b"1" + b"}" * depth
    return head.replace(b'"payload":{', b'"payload":{"deep":' + deep + b",", 1)


async def send_mix(bootstrap: str, topic_of, ordinary: list[dict], go: list[dict],  # noqa: ANN001
                   hostile: list[Hostile], seed: int) -> None:
    """Interleave the hostile records among the ordinary ones, each flow's events in order."""
    rng = random.Random(seed + 1)
    plain = [(topic_of("events"), key_for(e), orjson.dumps(e), None) for e in ordinary + go]
    out = list(plain)
    for h in hostile:
        out.insert(rng.randrange(len(out) + 1), (topic_of(h.topic), h.key, h.value, h.headers))
    prod = producer(bootstrap, max_request_size=4 * 1024 * 1024, compression_type="gzip")
    await prod.start()
    try:
        futures = [await prod.send(t, value=v, key=k, headers=hd) for t, k, v, hd in out]
        for fut in futures:
            await fut
    finally:
        await prod.stop()


def run_mix(make_worker, tmp_path: Path, count: int, seed: int) -> dict:  # noqa: ANN001
    ledger = tmp_path / f"poison-{uuid.uuid4().hex[:6]}.log"
    worker: Worker = make_worker(CONFIG, env={"CHOREO_HANDLERS": HANDLERS,
                                              "CHOREO_POISON_LOG": str(ledger)})
    topics = worker.choreography.topics

    def topic_of(name: str) -> str:
        return topics.events_topic if name == "events" else topics.capability_topic(name)

    ordinary, go, hostile = build_mix(count, worker.name, seed)
    asyncio.run(send_mix(worker.broker.bootstrap, topic_of, ordinary, go, hostile, seed))

    # Every ordinary event's `each`, every flow's `pair`, every workflow's step: handled once.
    flows = len(ordinary) // 2
    want = len(ordinary) + flows + len(go)

    def done() -> Counter[str]:
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        return Counter(line.split()[1] for line in lines)

    try:
        wait_until(lambda: len(done()) >= want, timeout=max(120, count / 20), every=2)
    except AssertionError:
        pass  # the checks below say what is missing
    handled = done()
    actions = asyncio.run(collect(worker.broker.bootstrap,
                                  [topic_of("audit"), topic_of("orders")], idle=2))
    logical: dict[tuple[str, str], set[str]] = {}
    for record in actions:
        try:
            action = orjson.loads(record.value)
            payload = action["payload"]
        except Exception:  # noqa: BLE001 - the junk written straight to the topic
            continue
        if not isinstance(payload, dict) or "pattern_id" not in payload and \
                "workflow" not in payload:
            continue
        if payload.get("pattern_id") == "each":
            what = ("each", payload["trigger"]["event_ids"][0])
        elif payload.get("pattern_id") == "pair":
            what = ("pair", action["metadata"]["correlation_id"])
        elif isinstance(payload.get("workflow"), dict):
            what = ("wf", payload["workflow"]["instance_id"])
        else:
            continue
        logical.setdefault(what, set()).add(action["event_id"])
    expected = ({("each", e["event_id"]) for e in ordinary}
                | {("pair", e["metadata"]["correlation_id"]) for e in ordinary})
    missing = sorted(f"{p}:{w}" for p, w in expected - logical.keys())
    assert not missing, f"{len(missing)} ordinary actions never sent, e.g. {missing[:5]}"
    steps = {what: ids for what, ids in logical.items() if what[0] == "wf"}
    assert len(steps) == len(go), "one step action per workflow"
    split = [what for what, ids in logical.items() if len(ids) > 1]
    assert not split, f"actions sent under more than one id: {split[:5]}"
    wanted_ids = {i for what in expected | steps.keys() for i in logical[what]}
    unhandled = [i for i in wanted_ids if handled[i] == 0]
    twice = [i for i in wanted_ids if handled[i] > 1]
    assert not unhandled, f"{len(unhandled)} actions never handled"
    assert not twice, f"{len(twice)} actions handled twice"

    # Every hostile record in a dead-letter topic, with its reason and original bytes.
    dlq_topics = [topics.dead_letter_topic, topics.capability_dead_letter_topic("audit")]

    def dead() -> dict[bytes, list]:
        found: dict[bytes, list] = {}
        for r in asyncio.run(collect(worker.broker.bootstrap, dlq_topics, idle=2)):
            found.setdefault(r.key or b"", []).append(r)
        return found

    by_key = {h.key: h for h in hostile if h.kind != "wrong_return"}
    try:
        wait_until(lambda: by_key.keys() <= dead().keys(), timeout=120, every=3)
    except AssertionError:
        pass  # said below, with what is missing
    letters = dead()
    missing = Counter(h.kind for key, h in by_key.items() if key not in letters)
    assert not missing, f"hostile records never dead-lettered, by kind: {dict(missing)}"
    reasons: Counter[str] = Counter()
    for key, h in by_key.items():
        records = letters[key]
        assert len(records) == 1, f"{key!r} dead-lettered {len(records)} times"
        info = read_dead_letter_headers(records[0].headers)
        if h.reason is not None:
            assert info["reason"] == h.reason, (h.kind, key, info)
        if h.reason != "action_too_large":
            assert (records[0].value or b"") == (h.value or b""), f"{h.kind}: original bytes"
        reasons[info["reason"]] += 1
    # The broken handler's actions: failed, then in the capability dead-letter topic.
    broken = [h for h in hostile if h.kind == "wrong_return"]
    failed_actions = [r for r in asyncio.run(collect(worker.broker.bootstrap,
                                                     [topics.capability_dead_letter_topic(
                                                         "audit")], idle=2))
                      if b'"broken"' in (r.value or b"")]
    assert len({r.key for r in failed_actions}) == len(broken), "each broken action dead-lettered"

    # No agent crashed; the worker is up and has read everything.
    log_text = (worker.data_dir.parent / f"{worker.name}.log").read_text(errors="replace")
    crashes = [line for line in log_text.splitlines()
               if "Crashed reason=" in line and "CancelledError" not in line]
    assert not crashes, crashes[:3]
    assert worker.process.poll() is None
    for name in ("events", "audit", "orders"):
        wait_until(lambda name=name: asyncio.run(lag(worker.broker.bootstrap, worker.name,
                                                     topic_of(name))) == 0,
                   timeout=120, every=2)
    return {"ordinary": len(ordinary) + len(go), "hostile": len(hostile),
            "reasons": dict(reasons), "actions_handled": len(wanted_ids)}


def test_poison_mix_small(make_worker, tmp_path: Path) -> None:  # noqa: ANN001
    figures = run_mix(make_worker, tmp_path, 1_000, seed=18)
    print(f"\npoison mix: {figures}")
    assert {"too_deep", "future", "action_too_large", "not_json"} <= set(figures["reasons"])


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_poison_mix_50000(make_worker, tmp_path: Path) -> None:  # noqa: ANN001
    count = int(os.environ.get("CHOREO_POISON_COUNT", "50000"))
    figures = run_mix(make_worker, tmp_path, count, seed=20261207)
    print(f"\npoison mix: {figures}")
