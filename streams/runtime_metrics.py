"""Metrics read from the running worker rather than counted as events pass: consumer lag per
partition, entries per table, and RocksDB's memory."""

from __future__ import annotations

import asyncio
import logging
import time
import tracemalloc
from typing import Any, Protocol

from choreo import rocksdb_memory
from choreo.app import Runtime
from choreo.config import Choreography
from choreo.graph_svg import build_graph
from choreo.matchers.base import KeyedMatcher
from choreo.matchers.correlation import TRACKER_ID
from choreo.metrics import (
    CONSUMER_LAG,
    LABEL_BOUNDS,
    PATTERN_KEYS,
    ROCKSDB_MEMORY,
    TABLE_ENTRIES,
)
from tables.pattern_state import PatternStateTable

log = logging.getLogger(__name__)



class KeyedEngineView(Protocol):
    """What the table gauges read of the keyed engine (streams/keyed.py `KeyedEngine`, which
    imports this module)."""

    store: PatternStateTable
    matchers: dict[str, KeyedMatcher]


TABLE_COUNT_SECONDS = 5.0
# Walking a table holds the GIL: a table that takes long to count is counted less often, so
# counting costs at most 1/COUNT_SHARE of the worker's time (a million entries: about every
# minute instead of every 5 s).
COUNT_SHARE = 50


def consumer_lag(app: Any) -> dict[tuple[str, int], int]:
    """Per assigned (topic, partition) of the agents: highwater - next offset to process.

    The next offset to process is the higher of the last committed offset and one past the
    highest offset the agents have acknowledged (processed) since; Faust keeps both. The
    highwater is the one the last fetch response carried. Changelog partitions, which the
    worker reads only while restoring, are left out.
    """
    consumer = getattr(app, "consumer", None)
    if consumer is None:
        return {}
    out = {}
    try:
        assigned = consumer.assignment()
    except Exception:  # noqa: BLE001 - not started or rebalancing: nothing to say
        return {}
    for tp in assigned:
        if tp.topic.endswith("-changelog"):
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # noqa: BLE001
            highwater = None
        if highwater is None:
            continue
        acked = consumer._acked.get(tp)  # noqa: SLF001 - Faust's processed offsets
        done = consumer._committed_offset.get(tp) or 0  # noqa: SLF001
        if acked:
            done = max(done, max(acked) + 1)
        out[(tp.topic, tp.partition)] = max(0, highwater - done)
    return out


def update_lag(runtime: Runtime) -> None:
    """Set the lag gauges to this moment's assignment (called on each scrape)."""
    lag = consumer_lag(runtime.app)
    CONSUMER_LAG.clear()
    for (topic, partition), n in lag.items():
        CONSUMER_LAG.labels(topic, str(partition)).set(n)


def _count(table: Any) -> int:
    return sum(1 for _ in table.keys())


async def count_tables(runtime: Runtime, engine: KeyedEngineView | None,
                       not_before: dict[str, float] | None = None) -> None:
    """Set the table gauges. Counting walks the local stores, so it runs in a thread; the
    pattern-state table keeps its own counts and is not walked. `not_before` (table name to
    monotonic time) skips a table until its time comes, and is updated from each walk's cost."""
    not_before = {} if not_before is None else not_before
    for kind, held in rocksdb_memory.usage().items():
        ROCKSDB_MEMORY.labels(kind).set(held)
    for name, table in list(runtime.app.tables.items()):
        if engine is not None and table is engine.store.table:
            live = engine.store.live
            TABLE_ENTRIES.labels(name).set(sum(live.values()))
            for pattern_id in (*engine.matchers, TRACKER_ID):
                PATTERN_KEYS.labels(pattern_id).set(live.get(pattern_id, 0))
            continue
        began = time.monotonic()
        if began < not_before.get(name, began):
            continue
        try:
            TABLE_ENTRIES.labels(name).set(await asyncio.to_thread(_count, table))
        except RuntimeError as exc:  # a memory store changed while counted: next time
            log.debug("table %s not counted: %s", name, exc)
        not_before[name] = began + COUNT_SHARE * (time.monotonic() - began)


def declare_label_values(choreography: Choreography) -> None:
    """The label values the file declares: event types its patterns listen to and its
    workers produce (globs left out), and its workflows; see choreo/metrics.py."""
    types = []
    for node_id in build_graph(choreography).nodes:
        kind, name = node_id.split(":", 1)
        if kind in ("event", "result") and not any(ch in name for ch in "*?["):
            types.append(name)
    LABEL_BOUNDS["event_type"].declare(types)
    LABEL_BOUNDS["workflow"].declare(w.name for w in choreography.workflows)


def register_runtime_metrics(runtime: Runtime, engine: KeyedEngineView | None) -> None:
    """Count table entries every few seconds (the lag is read on each scrape); bound the
    metrics' label values by the choreography."""
    declare_label_values(runtime.choreography)

    not_before: dict[str, float] = {}

    @runtime.app.timer(TABLE_COUNT_SECONDS, name="count_table_entries")
    async def count_table_entries() -> None:
        await count_tables(runtime, engine, not_before)


def memory_sites(limit: int = 25) -> dict[str, Any]:
    """Where the live Python memory was allocated (tracemalloc), biggest first."""
    if not tracemalloc.is_tracing():
        return {"tracing": False,
                "hint": "start the worker with PYTHONTRACEMALLOC=10 to see allocation sites"}
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),))
    stats = snapshot.statistics("traceback")
    return {
        "tracing": True,
        "traced_bytes": sum(s.size for s in stats),
        "sites": [{"bytes": s.size, "blocks": s.count,
                   "traceback": [f"{f.filename}:{f.lineno}" for f in s.traceback]}
                  for s in stats[:limit]],
    }


def register_memory_view(runtime: Runtime) -> None:
    """`/debug/memory/`: RocksDB's budget use and, under PYTHONTRACEMALLOC, Python's sites."""

    @runtime.app.page("/debug/memory/")
    async def memory_view(web, request):  # noqa: ANN001 - Faust view signature
        body = await asyncio.to_thread(memory_sites)
        body["rocksdb"] = rocksdb_memory.usage()
        return web.json(body)
