"""Replay: stored records run through the live engine's own code, offline.

Nothing here decides anything about events. `Replayer` builds a `Runtime` around an app that
only captures what is sent, a `KeyedEngine` over a `PatternStateTable` held in a dict, and
de-duplication tables in dicts, then hands each record to `process_batch` (the
`match_events` agent's body, one record per batch), each captured re-keyed record to
`process_rekeyed_batch`, and calls
`KeyedEngine.tick` (the deadline timer's body). Whatever the live engine does with a record,
the replay does, because it is the same code; only Kafka is left out.

Time: the live engine's watermark moves with the wall clock once a partition is idle, and its
timer runs once a second. The replay's wall clock is each record's Kafka timestamp (when it
was appended, which is about when the live engine read it), and the timer runs whenever that
clock has moved on by a second; `finish` moves it to the end of the replay (now, by default).

Re-keyed records: the live engine re-sends events keyed by a `group_by` field to the
re-keyed topic, and applies them in the order that topic holds them, which interleaves the
events partitions as they happened to be processed. A rebuild reads that topic too
(`feed_rekeyed`) and applies its records as the live engine did, in its order and at its
offsets; what the replayed engine would re-send is then only counted. Otherwise (a what-if
run of another file, which may key differently) re-sent records are applied at once, in the
order the replay sends them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from choreo.app import Runtime, raw_topic
from choreo.config import Choreography
from choreo.kafka_io import Record
from choreo.settings import Settings
from streams.keyed import TICK_SECONDS, KeyedEngine, process_rekeyed_batch
from streams.match_events import process_batch
from tables.dedup import sweep_every
from tables.expiring import ExpiringTable
from tables.pattern_state import PatternStateTable


@dataclass(frozen=True)
class Sent:
    """A record the engine asked to send."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]]


class CaptureTopic:
    """A topic whose sends are kept in a list instead of reaching Kafka."""

    def __init__(self, name: str, sink: list[Sent]) -> None:
        self.name = name
        self.sink = sink

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, key: bytes | None = None, value: bytes | None = None,
                   partition: int | None = None, headers: Any = None, **_: Any) -> Any:
        self.sink.append(Sent(self.name, key, value, partition, list(headers or [])))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class CaptureProducer:
    """Stands in for the producer `Runtime.produce` hands records to."""

    def __init__(self, sink: list[Sent]) -> None:
        self.sink = sink

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None, _timestamp: Any, headers: Any) -> Any:
        return await CaptureTopic(topic, self.sink).send(key, value, partition, headers)


class CaptureApp:
    """Stands in for the Faust app: the topics it makes, and its producer, only capture."""

    def __init__(self, app_id: str) -> None:
        self.id = app_id
        self.sent: list[Sent] = []
        self.producer = CaptureProducer(self.sent)

    def topic(self, name: str, **_: Any) -> CaptureTopic:
        return CaptureTopic(name, self.sent)


class ReplayEngine(KeyedEngine):
    """The keyed engine owning every partition, always ready (no group, no recovery), running
    every deadline that is due at each tick (no time budget: replay time is not wall time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tick_budget = None

    def active_partitions(self) -> set[int]:
        return set(range(self.partitions))

    def ready(self) -> bool:
        return True


@dataclass
class SimClock:
    """The replay's wall clock; never goes back."""

    now: float = -math.inf

    def __call__(self) -> float:
        return self.now

    def set(self, wall: float) -> None:
        self.now = max(self.now, wall)


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: float | None = None  # seconds, as Faust's Message (signature checks read it)


@dataclass
class _Record:
    """What the agents read of a Faust event: its message and value."""

    message: _Message
    value: bytes | None


@dataclass
class Output:
    """What a replay sent, sorted by kind."""

    actions: list[tuple[str, dict]] = field(default_factory=list)  # (topic, envelope)
    dead_letters: Counter = field(default_factory=Counter)  # reason -> count
    alerts: list[dict] = field(default_factory=list)


class Replayer:
    """Feeds records to the engine's code; collects its actions and holds its state."""

    def __init__(self, choreography: Choreography, settings: Settings,
                 rekeyed_from_log: bool = False) -> None:
        self.rekeyed_from_log = rekeyed_from_log
        self.rekeyed_sent = 0  # re-keyed records the replay would have sent (from the log)
        self.clock = SimClock()
        self.app = CaptureApp(settings.app_id)
        topics = choreography.topics
        app: Any = self.app
        self.runtime = Runtime(
            app=app, settings=settings, choreography=choreography,
            events_topic=raw_topic(app, topics.events_topic),
            dead_letter_topic=raw_topic(app, topics.dead_letter_topic),
            rekeyed_topic=raw_topic(app, topics.rekeyed_topic),
            alerts_topic=raw_topic(app, topics.alerts_topic),
        )
        defaults = choreography.defaults
        self.store = PatternStateTable({}, settings.partitions,  # type: ignore[arg-type]
                                       defaults.idle_timeout, clock=self.clock)
        self.engine = ReplayEngine(self.runtime, store=self.store)
        self.seen = ExpiringTable({}, horizon=defaults.dedup_horizon,  # type: ignore[arg-type]
                                  every=sweep_every(defaults.dedup_horizon))
        self.seen_rekeyed = ExpiringTable({}, horizon=defaults.dedup_horizon,  # type: ignore[arg-type]
                                          every=sweep_every(defaults.dedup_horizon))
        self.capability_topics = {t.get_topic_name() for t in
                                  self.runtime.capability_topics.values()}
        self.rekeyed_offsets: Counter = Counter()
        self.output = Output()
        self.records = 0
        self._last_tick = -math.inf

    @property
    def table(self) -> dict[bytes, bytes]:
        """The rebuilt pattern-state table: key -> value, as the live table stores them."""
        return self.store.table  # type: ignore[return-value]

    async def feed(self, record: Record) -> None:
        """One record of the events topic, as the live `match_events` agent handles it."""
        self.records += 1
        await self._advance(record.timestamp_ms / 1000)
        message = _Message(record.topic, record.partition, record.offset, record.key,
                           list(record.headers), record.timestamp_ms / 1000)
        await process_batch(self.runtime, self.seen, [_Record(message, record.value)],
                            self.engine, rates=None)
        await self._drain()

    async def feed_rekeyed(self, record: Record) -> None:
        """One record of the live re-keyed topic (with `rekeyed_from_log`)."""
        self.records += 1
        await self._advance(record.timestamp_ms / 1000)
        message = _Message(record.topic, record.partition, record.offset, record.key,
                           list(record.headers), record.timestamp_ms / 1000)
        await process_rekeyed_batch(self.runtime, self.engine, self.seen_rekeyed,
                                    [_Record(message, record.value)])
        await self._drain()

    async def finish(self, wall: float | None = None) -> Output:
        """Move the wall clock to `wall` (default now) and run the deadlines due by then."""
        self.clock.set(time.time() if wall is None else wall)
        await self.engine.tick()
        await self._drain()
        return self.output

    async def _advance(self, wall: float) -> None:
        self.clock.set(wall)
        if self.clock.now - self._last_tick >= TICK_SECONDS:
            self._last_tick = self.clock.now
            await self.engine.tick()
            await self._drain()

    async def _drain(self) -> None:
        """Sort what was sent; re-keyed records are read back, as the live agent reads them."""
        rekeyed = self.runtime.rekeyed_topic.get_topic_name()
        dead_letter = self.runtime.dead_letter_topic.get_topic_name()
        alerts = self.runtime.alerts_topic.get_topic_name()
        while self.app.sent:
            sent = self.app.sent.pop(0)
            if sent.topic == rekeyed and self.rekeyed_from_log:
                self.rekeyed_sent += 1
            elif sent.topic == rekeyed:
                partition = sent.partition or 0
                offset = self.rekeyed_offsets[partition]
                self.rekeyed_offsets[partition] += 1
                message = _Message(sent.topic, partition, offset, sent.key, sent.headers)
                await process_rekeyed_batch(self.runtime, self.engine, self.seen_rekeyed,
                                            [_Record(message, sent.value)])
            elif sent.topic == dead_letter:
                reason = dict(sent.headers).get("choreo.dlq.reason", b"?").decode()
                self.output.dead_letters[reason] += 1
            elif sent.topic == alerts:
                self.output.alerts.append(orjson.loads(sent.value or b"null"))
            elif sent.topic in self.capability_topics:
                self.output.actions.append((sent.topic, orjson.loads(sent.value or b"null")))
