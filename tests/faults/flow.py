"""A choreography whose expected actions follow from its input, and the checks on them.

Every event of a flow fires the event pattern `each` (one `record` action to `audit`), and
each flow's `flow.a` then `flow.b` completes the sequence `pair` (one `complete` action to
`orders`), kept under `payload.flow` through the rekeyed topic. That key is the correlation id,
so each flow's events reach the same rekeyed partition as their events partition, in order.
Grouping by the payload also keeps the workers' `action.*` events (wall-clock timestamps, same
correlation) off the sequence's clock: with `allowed_lateness = "0s"` the flows' crafted
event times would otherwise be late behind them. A run of F flows is 2F events and must
give exactly 2F + F distinct action ids.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from choreo.envelope import iso_from_ts, new_event
from choreo.kafka_io import collect, key_for, producer

CONFIG = """
[topics]
prefix = ""

[defaults]
allowed_lateness = "0s"
idle_timeout = "1h"
correlation_ttl = "1h"

[[patterns]]
id = "each"
kind = "event"
on = "flow.*"
action = "record"
capability = "audit"

[[patterns]]
id = "pair"
kind = "sequence"
steps = ["flow.a", "flow.b"]
max_interval = "1h"
group_by = "payload.flow"
action = "complete"
capability = "orders"

[workers]
max_retries = 0
"""

HANDLERS = "tests.faults.handlers:HANDLERS"
# A worker killed with -9 holds its partitions until the group's session times out; a
# restarted worker waits that long to get them back.
FAST_FAILOVER = {"CHOREO_SESSION_TIMEOUT": "10"}


def flow_events(flows: int, label: str, t0: float | None = None, gap: int = 40) -> list[dict]:
    """`flow.a` of flow i is followed, `gap` events later, by `flow.b`: 2 * flows events."""
    t0 = time.time() - 600 if t0 is None else t0
    order: list[tuple[str, int]] = []
    for i in range(flows + gap):
        if i < flows:
            order.append(("flow.a", i))
        if i >= gap:
            order.append(("flow.b", i - gap))
    return [new_event(kind, {"n": n, "flow": f"{label}-{n}"}, source="faults",
                      correlation_id=f"{label}-{n}",
                      timestamp=iso_from_ts(t0 + k * 0.001)).as_dict()
            for k, (kind, n) in enumerate(order)]


@dataclass
class PacedProducer:
    """Sends events at `rate` per second from a thread; records which the broker acked."""

    bootstrap: str
    topic: str
    events: list[dict]
    rate: float
    acked: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    finished_at: float | None = None
    error: BaseException | None = None

    def start(self) -> PacedProducer:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error

    def alive(self) -> bool:
        return self.thread.is_alive()

    async def _run(self) -> None:
        import logging

        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refused while a broker is down
        try:
            prod = producer(self.bootstrap, request_timeout_ms=10_000)
            await prod.start()
            try:
                await self._send_all(prod)
            finally:
                await prod.stop()
        except BaseException as exc:  # noqa: BLE001 - handed to the test by join()
            self.error = exc
        self.finished_at = time.monotonic()

    async def _send_all(self, prod) -> None:  # noqa: ANN001
        chunk = max(1, int(self.rate / 10))
        started = time.monotonic()
        for first in range(0, len(self.events), chunk):
            batch = self.events[first:first + chunk]
            pending = []
            for event in batch:
                try:
                    fut = await prod.send(self.topic, value=orjson.dumps(event),
                                          key=key_for(event))
                except Exception:  # noqa: BLE001 - not acknowledged, so not expected
                    self.failed.add(event["event_id"])
                    continue
                pending.append((event["event_id"], fut))
            for event_id, fut in pending:
                try:
                    await fut
                    self.acked.add(event_id)
                except Exception:  # noqa: BLE001
                    self.failed.add(event_id)
            due = started + (first + len(batch)) / self.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))


@dataclass
class Tally:
    """What reached the capability topics, against what the input makes expected."""

    expected: int
    distinct: int
    raw: int
    missing: list[str]
    split: list[str]  # logical actions that went out under more than one id

    @property
    def raw_duplicates(self) -> int:
        return self.raw - self.distinct


def tally(bootstrap: str, topic_of, events: list[dict]) -> Tally:  # noqa: ANN001
    """Compare the actions on `audit` and `orders` with those the events call for."""
    records = asyncio.run(collect(bootstrap, [topic_of("audit"), topic_of("orders")],
                                  idle=1.5, timeout=120))
    ids: Counter[str] = Counter()
    logical: dict[tuple[str, str], set[str]] = {}
    for record in records:
        action = orjson.loads(record.value)
        ids[action["event_id"]] += 1
        payload = action["payload"]
        meta = action["metadata"]
        what = (payload["trigger"]["event_ids"][0] if payload["pattern_id"] == "each"
                else meta.get("pattern_key") or meta["correlation_id"])
        logical.setdefault((payload["pattern_id"], what), set()).add(action["event_id"])
    want = {("each", e["event_id"]) for e in events}
    types: dict[str, set[str]] = {}
    for e in events:
        types.setdefault(e["metadata"]["correlation_id"], set()).add(e["event_type"])
    want |= {("pair", corr) for corr, seen in types.items() if seen == {"flow.a", "flow.b"}}
    missing = sorted(f"{p}:{w}" for p, w in want - logical.keys())
    split = sorted(f"{p}:{w}" for (p, w), found in logical.items() if len(found) > 1)
    return Tally(len(want), len(ids), sum(ids.values()), missing, split)


def on_topic(bootstrap: str, topic: str, label: str) -> list[dict]:
    """The flow events of this run that are on the events topic, in offset order."""
    records = asyncio.run(collect(bootstrap, [topic], idle=1.5, timeout=120))
    found = [orjson.loads(r.value) for r in sorted(records, key=lambda r: r.offset)]
    return [e for e in found if e.get("source") == "faults"
            and str(e["metadata"].get("correlation_id", "")).startswith(label + "-")]


def handled(log: Path) -> tuple[Counter[str], Counter[str]]:
    """(starts, completions) per action id from the handlers' log."""
    starts: Counter[str] = Counter()
    done: Counter[str] = Counter()
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                (starts if parts[0] == "start" else done)[parts[1]] += 1
    return starts, done
