"""Web views on the worker's web port: patterns and their counts, and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from choreo.app import Runtime
from choreo.metrics import REGISTRY


def pattern_summaries(runtime: Runtime) -> list[dict[str, Any]]:
    stats = runtime.stats
    return [
        {
            **pattern.describe(),
            "counts": {
                "seen": stats.seen[pattern.id],
                "fired": stats.fired[pattern.id],
                "timed_out": stats.timed_out[pattern.id],
                "condition_errors": stats.condition_errors[pattern.id],
            },
        }
        for pattern in runtime.choreography.patterns
    ]


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


def register_views(runtime: Runtime) -> None:
    app = runtime.app

    @app.page("/health/")
    async def health(web, request):  # noqa: ANN001 - Faust view signature
        body = readiness(runtime)
        return web.json(body, status=200 if body["status"] == "ready" else 503)

    @app.page("/patterns/")
    async def patterns(web, request):  # noqa: ANN001 - Faust view signature
        return web.json({"patterns": pattern_summaries(runtime)})

    @app.page("/metrics")
    async def metrics(web, request):  # noqa: ANN001
        return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])
