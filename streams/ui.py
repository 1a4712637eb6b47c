"""The web page: `/ui/` on the worker's web port.

The choreography as a graph with live counts (`/ui/graph.svg`, drawn here), a search by
correlation id showing the flow as a timeline with causal links and the partial matches in
flight with their deadlines (`/ui/flow/{id}/`, answered by the worker owning the key), and the
dead-letter topic's recent records with their reasons (`/ui/dead-letters/`). The page itself
is one HTML file with its script and styles inline: nothing is fetched from elsewhere.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from choreo.app import Runtime
from choreo.dead_letter import read_dead_letter_headers
from choreo.graph_svg import build_graph, render_svg
from choreo.kafka_io import tail
from choreo.matchers.correlation import TRACKER_ID
from choreo.metrics import ACTIONS_SENT, EVENTS_IN, WORKER_ACTIONS
from choreo.static_check import emits, overlaps
from streams.views import answer_for_key
from tables.pattern_state import partition_for

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


def flow(runtime: Runtime, correlation_id: str) -> dict[str, Any]:
    """A correlation's events and actions, and its keys' partial matches in flight."""
    engine = runtime.keyed  # type: ignore[attr-defined]
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


def register_ui(runtime: Runtime) -> None:
    app = runtime.app
    cache: dict[str, Any] = {"at": 0.0, "body": None}

    @app.page("/ui/")
    async def page(web, request):  # noqa: ANN001 - Faust view signature
        return web.html(PAGE.read_text())

    @app.page("/ui/graph.svg")
    async def graph(web, request):  # noqa: ANN001
        svg = render_svg(runtime.choreography, graph_counts(runtime))
        return web.bytes(svg.encode(), content_type="image/svg+xml")

    @app.page("/ui/flow/{correlation_id}/")
    async def flow_view(web, request, correlation_id):  # noqa: ANN001
        return await answer_for_key(runtime, correlation_id, web, request,
                                    lambda: flow(runtime, correlation_id))

    @app.page("/ui/dead-letters/")
    async def dead_letters(web, request):  # noqa: ANN001
        if cache["body"] is None or time.monotonic() - cache["at"] > DEAD_LETTER_CACHE_SECONDS:
            topic = runtime.choreography.topics.dead_letter_topic
            records = await tail(runtime.settings.bootstrap_servers, topic, per_partition=20)
            cache["body"] = {"topic": topic, "records": [
                dead_letter_view(runtime, r) for r in records[:50]]}
            cache["at"] = time.monotonic()
        return web.json(cache["body"])


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
