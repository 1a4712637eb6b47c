"""The web page: `/ui/` on the worker's web port.

The choreography as a graph with live counts (`/ui/graph.svg`, drawn here), a search by
correlation id showing the flow as a timeline with causal links and the partial matches in
flight with their deadlines (`/ui/flow/{id}/`, answered by the worker owning the key), and the
dead-letter topic's recent records with their reasons (`/ui/dead-letters/`). The page itself
is one HTML file with its script and styles inline: nothing is fetched from elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from choreo import kafka_clients
from choreo.app import Runtime
from choreo.dead_letter import read_dead_letter_headers
from choreo.graph_svg import build_graph, render_svg
from choreo.kafka_io import tail_with
from choreo.matchers.correlation import TRACKER_ID
from choreo.metrics import ACTIONS_SENT, EVENTS_IN, WORKER_ACTIONS
from choreo.static_check import emits, overlaps
from streams.keyed import KeyedEngine
from streams.views import answer_for_key
from tables.pattern_state import partition_for

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("ui.html")
DEAD_LETTER_CACHE_SECONDS = 2.0


def _samples(metric: Any, label: str) -> dict[str, float]:
    """Sum of a counter's `_total` samples by one label."""
    out: dict[str, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = sample.labels.get(label, "")
                out[key] = out.get(key, 0.0) + sample.value
    return out


def graph_counts(runtime: Runtime) -> dict[str, float]:
    """Counts of this worker for each node of the graph."""
    choreography = runtime.choreography
    events = _samples(EVENTS_IN, "event_type")
    handled = _samples(WORKER_ACTIONS, "capability")
    sent: dict[tuple[str, str], float] = {}
    for family in ACTIONS_SENT.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["pattern_id"], sample.labels["capability"])
                sent[key] = sent.get(key, 0.0) + sample.value
    counts: dict[str, float] = {}
    for node_id in build_graph(choreography).nodes:
        kind, name = node_id.split(":", 1)
        if kind in ("event", "result"):
            counts[node_id] = sum(n for t, n in events.items() if overlaps(name, t))
        elif kind == "pattern":
            counts[node_id] = runtime.stats.fired[name]
        elif kind == "action":
            action, _, capability = name.rpartition("@")
            counts[node_id] = sum(
                sent.get((p.id, capability), 0.0) for p in choreography.patterns
                if any(e.action == action and e.capability == capability for e in emits(p)))
        elif kind == "capability":
            counts[node_id] = handled.get(name, 0.0)
    return counts


def flow(runtime: Runtime, engine: KeyedEngine, correlation_id: str) -> dict[str, Any]:
    """A correlation's events and actions, and its keys' partial matches in flight."""
    partition = partition_for(correlation_id, runtime.settings.partitions)
    slot = engine.store.load(TRACKER_ID, correlation_id)
    state = slot.state if slot else None
    watermark = engine.store.watermark(f"e{partition}")
    partial = []
    for pattern_id, matcher in engine.matchers.items():
        if engine.group_of(pattern_id) is not None:
            continue  # keyed by another field than the correlation id
        entry = engine.store.load(pattern_id, correlation_id)
        if entry is not None and entry.state:
            partial.append(matcher.describe(entry.state, watermark))
    return {"correlation_id": correlation_id, "found": state is not None or bool(partial),
            "summary": engine.tracker.describe(state, watermark),
            "events": engine.tracker.events(state),
            "actions": (state or {}).get("actions", []),
            "partial_matches": partial, "partition": partition, "now": time.time()}


class GraphPicture:
    """`/ui/graph.svg`: drawn in a thread (it walks the choreography and the metrics, which
    took the event loop 1-1.5 s a request), one drawing at a time for all requests, and
    drawn again only when the counts have changed."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.lock = asyncio.Lock()
        self.counts: dict[str, float] | None = None
        self.svg = b""

    def draw(self) -> bytes:
        """Runs in a worker thread."""
        counts = graph_counts(self.runtime)
        if counts != self.counts:
            self.svg = render_svg(self.runtime.choreography, counts).encode()
            self.counts = counts
        return self.svg

    async def get(self) -> bytes:
        async with self.lock:
            return await asyncio.to_thread(self.draw)


class DeadLetterReader:
    """`/ui/dead-letters/`: one consumer (of no group) for every request, kept open between
    reads. A request that comes while a read is under way waits for it and gets its result;
    a result is served for DEAD_LETTER_CACHE_SECONDS."""

    def __init__(self, runtime: Runtime, per_partition: int = 20, limit: int = 50) -> None:
        self.runtime = runtime
        self.topic = runtime.choreography.topics.dead_letter_topic
        self.per_partition, self.limit = per_partition, limit
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.at = 0.0
        self.body: dict[str, Any] | None = None

    async def get(self) -> dict[str, Any]:
        async with self.lock:
            if self.body is None or time.monotonic() - self.at > DEAD_LETTER_CACHE_SECONDS:
                self.body = await self.read()
                self.at = time.monotonic()
            return self.body

    async def read(self) -> dict[str, Any]:
        if self.consumer is None:
            settings = self.runtime.settings
            consumer = kafka_clients.consumer(settings.bootstrap_servers, settings=settings,
                                              enable_auto_commit=False, group_id=None)
            await consumer.start()
            self.consumer = consumer
        try:
            records = await tail_with(self.consumer, self.topic, self.per_partition)
        except Exception:
            await self.close()  # a fresh consumer next time
            raise
        return {"topic": self.topic, "records": [
            dead_letter_view(self.runtime, r) for r in records[:self.limit]]}

    async def close(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception:  # noqa: BLE001 - it is being dropped anyway
                log.debug("dead-letter reader: stopping the consumer failed", exc_info=True)


def register_ui(runtime: Runtime, engine: KeyedEngine | None
                ) -> tuple[GraphPicture, DeadLetterReader]:
    """`/ui/` and what it reads; returns the graph's picture and the dead-letter reader
    (closed when the app stops). `engine` is None where this process runs no engine."""
    app = runtime.app
    picture = GraphPicture(runtime)
    reader = DeadLetterReader(runtime)

    @app.on_before_shutdown.connect
    async def close_dead_letter_reader(sender: Any, **_kwargs: Any) -> None:
        await reader.close()

    @app.page("/ui/")
    async def page(web, request):  # noqa: ANN001 - Faust view signature
        return web.html(PAGE.read_text())

    @app.page("/ui/graph.svg")
    async def graph(web, request):  # noqa: ANN001
        return web.bytes(await picture.get(), content_type="image/svg+xml")

    @app.page("/ui/flow/{correlation_id}/")
    async def flow_view(web, request, correlation_id):  # noqa: ANN001
        return await answer_for_key(runtime, engine, correlation_id, web, request,
                                    lambda e: flow(runtime, e, correlation_id))

    @app.page("/ui/dead-letters/")
    async def dead_letters(web, request):  # noqa: ANN001
        return web.json(await reader.get())

    return picture, reader


def dead_letter_view(runtime: Runtime, record: Any) -> dict[str, Any]:
    """A dead-letter record for the page: its headers, key and the start of its value, with
    the `[security] mask` fields masked (again: it may predate the mask, or come from a
    process without it) and their values scrubbed from the detail."""
    info = read_dead_letter_headers(record.headers)
    value, _headers, info["detail"] = runtime.masked_record(record.value,
                                                            info.get("detail", ""))
    return {**info, "dlq_partition": record.partition, "dlq_offset": record.offset,
            "key": (record.key or b"").decode("utf-8", "replace"),
            "value": (value or b"")[:200].decode("utf-8", "replace")}
