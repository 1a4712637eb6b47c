"""Web view of the capability workers this process runs: policy and circuit breaker."""

from __future__ import annotations

from typing import Any

from choreo.app import Runtime
from streams.agents import RegistryView


def capability_summaries(runtime: Runtime) -> list[dict[str, Any]]:
    return [worker.describe() for worker in runtime.workers.values()]


def register_worker_views(runtime: Runtime) -> None:
    @runtime.app.page("/capabilities/")
    async def capabilities(web, request):  # noqa: ANN001 - Faust view signature
        return web.json({"capabilities": capability_summaries(runtime)})


def register_agent_views(runtime: Runtime, view: RegistryView | None) -> None:
    """`/agents/`: every agent the registry knows, with its health (any engine worker);
    `view` is None where this process runs no engine."""

    @runtime.app.page("/agents/")
    async def agents(web, request):  # noqa: ANN001 - Faust view signature
        if not runtime.choreography.agents.enabled:
            return web.json({"agents": [], "enabled": False,
                             "hint": "add an [agents] table to the choreography file"})
        if view is None:
            return web.json({"error": "this process runs no engine (CHOREO_ENGINE=off)"},
                            status=404)
        return web.json(view.describe())
