"""Web views on the worker's web port: patterns and their counts, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp
import orjson
from faust.exceptions import SameNode
from faust.web.exceptions import ServiceUnavailable
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from choreo.app import Runtime
from choreo.matchers.correlation import TRACKER_ID
from choreo.metrics import REGISTRY
from choreo.trail import Node, build_trail, render
from streams.keyed import KeyedEngine
from streams.runtime_metrics import update_lag
from tables.pattern_state import partition_for


def pattern_summaries(runtime: Runtime, engine: KeyedEngine | None) -> list[dict[str, Any]]:
    stats = runtime.stats
    live = engine.store.live if engine is not None else {}
    return [
        {
            **pattern.describe(),
            "counts": {
                "seen": stats.seen[pattern.id],
                "fired": stats.fired[pattern.id],
                "timed_out": stats.timed_out[pattern.id],
                "condition_errors": stats.condition_errors[pattern.id],
            },
            **({"keys_in_flight": live[pattern.id]} if pattern.kind != "event" else {}),
        }
        for pattern in runtime.choreography.patterns
    ]


def key_state(runtime: Runtime, engine: KeyedEngine, pattern_id: str, key: str
              ) -> dict[str, Any]:
    """The in-flight state of one key of a keyed pattern, as its matcher describes it."""
    slot = engine.store.load(pattern_id, key)
    partition = partition_for(key, runtime.settings.partitions)
    clock = f"{'e' if engine.group_of(pattern_id) is None else 'r'}{partition}"
    body = engine.matchers[pattern_id].describe(slot.state if slot else None,
                                                engine.store.watermark(clock))
    return {**body, "key": key, "partition": partition}


def correlation_summary(runtime: Runtime, engine: KeyedEngine, correlation_id: str
                        ) -> dict[str, Any]:
    slot = engine.store.load(TRACKER_ID, correlation_id)
    partition = partition_for(correlation_id, runtime.settings.partitions)
    body = engine.tracker.describe(slot.state if slot else None,
                                   engine.store.watermark(f"e{partition}"))
    return {**body, "correlation_id": correlation_id, "partition": partition}


def correlation_events(engine: KeyedEngine, correlation_id: str) -> dict[str, Any]:
    slot = engine.store.load(TRACKER_ID, correlation_id)
    events = engine.tracker.events(slot.state if slot else None)
    return {"correlation_id": correlation_id, "found": bool(events), "events": events}


def correlation_trail(engine: KeyedEngine, correlation_id: str, lifecycle: bool
                      ) -> dict[str, Any]:
    """The causal tree: events, the actions they fired, and the workers' results below them."""
    slot = engine.store.load(TRACKER_ID, correlation_id)
    state = slot.state if slot else None
    records = [{"event_id": e["event_id"], "event_type": e["event_type"],
                "timestamp": e["timestamp"], "source": e["source"],
                "metadata": {"causation_id": e["causation_id"]},
                "position": [e["partition"], e["offset"]]}
               for e in engine.tracker.events(state)]
    for a in (state or {}).get("actions", []):
        records.append({"event_id": a["action_id"], "event_type": "action.requested",
                        "timestamp": a["at"], "source": "choreo.engine",
                        "payload": {"action": a["action"], "capability": a["capability"],
                                    "pattern_id": a["pattern_id"],
                                    "priority": a.get("priority", 0)},
                        "metadata": {"causation_id": a.get("caused_by")}})
    records.sort(key=lambda r: r["timestamp"])
    roots = build_trail(records, lifecycle=lifecycle)

    def tree(node: Node) -> dict[str, Any]:
        data = node.data
        out = {"label": node.label(), "event_id": data["event_id"],
               "timestamp": data["timestamp"]}
        if node.is_action:
            out["pattern_id"] = data["payload"]["pattern_id"]
        elif data.get("position"):
            out["partition"], out["offset"] = data["position"]
        if node.children:
            out["children"] = [tree(child) for child in node.children]
        return out

    return {"correlation_id": correlation_id, "found": bool(records),
            "lines": render(roots), "trail": [tree(root) for root in roots]}


async def answer_for_key(runtime: Runtime, engine: KeyedEngine | None, key: str,  # noqa: ANN201
                         web, request, build):  # noqa: ANN001
    """Answer here if this worker owns the key's partition, else ask the worker that does;
    `build(engine)` makes the answer."""
    if engine is None:
        return web.json({"error": "this process runs no engine (CHOREO_ENGINE=off)"},
                        status=404)
    try:
        return await runtime.app.router.route_topic_req(runtime.events_topic, key.encode(),
                                                        web, request)
    except SameNode:
        pass
    except ServiceUnavailable:
        return web.json({"error": "no worker owns this key's partition yet"}, status=503)
    except (TimeoutError, aiohttp.ClientError, OSError):
        # The owner died and the group has not given its partitions away yet.
        return web.json({"error": "the worker owning this key's partition does not answer"},
                        status=503)
    if partition_for(key, runtime.settings.partitions) not in engine.active_partitions():
        return web.json({"error": "this key's partition is moving between workers"},
                        status=503)
    body = build(engine)
    return web.json(body, status=200 if body.get("found", True) else 404)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    raise TypeError(f"cannot digest {type(value).__name__}")


def state_digest(runtime: Runtime) -> dict[str, Any]:
    """Entry count and SHA-256 of the sorted entries of each table this worker holds.

    Two workers (or one before and after a restore from the changelogs) that hold the same
    partitions and the same state give the same digests.
    """
    tables = {}
    for name, table in sorted(runtime.app.tables.items()):
        rows = sorted(orjson.dumps([k, v], default=_plain, option=orjson.OPT_SORT_KEYS)
                      for k, v in table.items())
        digest = hashlib.sha256()
        for row in rows:
            digest.update(row + b"\n")
        tables[name] = {"entries": len(rows), "sha256": digest.hexdigest()}
    assigned = runtime.app.consumer.assignment() if runtime.app.consumer else set()
    return {"tables": tables,
            "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)}


async def state_digest_off_loop(runtime: Runtime, attempts: int = 3) -> dict[str, Any] | None:
    """`state_digest` in a worker thread: it reads every entry of every table (0.6-1.6 s a
    call), which would stop the event loop. A memory store changed while read raises
    RuntimeError: read again, and give None if it keeps changing."""
    for _ in range(attempts):
        try:
            return await asyncio.to_thread(state_digest, runtime)
        except RuntimeError:
            continue
    return None


def readiness(runtime: Runtime) -> dict[str, Any]:
    """Ready once the worker has partitions and has finished restoring its tables."""
    app = runtime.app
    assigned = app.consumer.assignment() if app.consumer else set()
    recovered = app.tables.recovery.completed.is_set()
    return {
        "status": "ready" if assigned and recovered else "starting",
        "assigned_partitions": len(assigned),
        "tables_recovered": recovered,
    }


def register_views(runtime: Runtime, engine: KeyedEngine | None) -> None:
    """Health, patterns, keyed state, correlations, digest and metrics; `engine` is None
    where this process runs no engine (CHOREO_ENGINE=off)."""
    app = runtime.app

    @app.page("/health/")
    async def health(web, request):  # noqa: ANN001 - Faust view signature
        body = readiness(runtime)
        return web.json(body, status=200 if body["status"] == "ready" else 503)

    @app.page("/patterns/")
    async def patterns(web, request):  # noqa: ANN001 - Faust view signature
        return web.json({"patterns": pattern_summaries(runtime, engine)})

    @app.page("/patterns/{pattern_id}/state/{key}/")
    async def pattern_state(web, request, pattern_id, key):  # noqa: ANN001
        if engine is not None and pattern_id not in engine.matchers:
            kind = next((p.kind for p in runtime.choreography.patterns if p.id == pattern_id),
                        None)
            reason = (f"pattern {pattern_id!r} is of kind event and keeps no state" if kind
                      else f"no pattern {pattern_id!r}")
            return web.json({"error": reason}, status=404)
        return await answer_for_key(runtime, engine, key, web, request,
                                    lambda e: key_state(runtime, e, pattern_id, key))

    @app.page("/correlations/{correlation_id}/")
    async def correlation(web, request, correlation_id):  # noqa: ANN001
        return await answer_for_key(runtime, engine, correlation_id, web, request,
                                    lambda e: correlation_summary(runtime, e, correlation_id))

    @app.page("/correlations/{correlation_id}/events/")
    async def correlation_event_list(web, request, correlation_id):  # noqa: ANN001
        return await answer_for_key(runtime, engine, correlation_id, web, request,
                                    lambda e: correlation_events(e, correlation_id))

    @app.page("/correlations/{correlation_id}/trail/")
    async def correlation_causal_trail(web, request, correlation_id):  # noqa: ANN001
        lifecycle = request.query.get("lifecycle") in ("1", "true", "yes")
        return await answer_for_key(
            runtime, engine, correlation_id, web, request,
            lambda e: correlation_trail(e, correlation_id, lifecycle))

    @app.page("/state/digest/")
    async def digest(web, request):  # noqa: ANN001 - Faust view signature
        body = await state_digest_off_loop(runtime)
        if body is None:
            return web.json({"error": "the tables kept changing while read; try again"},
                            status=503)
        return web.json(body)

    @app.page("/metrics")
    async def metrics(web, request):  # noqa: ANN001
        update_lag(runtime)
        return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])
