"""Web views of workflows: `/workflows/` and `/workflows/{instance_id}/`."""

from __future__ import annotations

from typing import Any

import aiohttp
from faust.exceptions import SameNode
from faust.web.exceptions import ServiceUnavailable

from choreo.app import Runtime
from choreo.masking import Masker
from streams.orchestrate import Orchestrator
from tables.pattern_state import partition_for


def register_workflow_views(runtime: Runtime, orchestrator: Orchestrator | None) -> None:
    """`/workflows/`; `orchestrator` is None where this process runs none."""
    app = runtime.app

    @app.page("/workflows/")
    async def workflows(web, request):  # noqa: ANN001 - Faust view signature
        body = {"workflows": [w.describe() for w in runtime.choreography.workflows]}
        if orchestrator is not None:
            body["instances"] = orchestrator.store.summaries()
            body["instances_note"] = ("instances on this worker's partitions; "
                                      "/workflows/{instance_id}/ finds any")
        return web.json(body)

    @app.page("/workflows/{instance_id}/")
    async def instance(web, request, instance_id):  # noqa: ANN001
        if orchestrator is None:
            return web.json({"error": "this process runs no orchestrator (no workflows, or "
                                      "CHOREO_ENGINE=off)"}, status=404)
        try:
            return await app.router.route_topic_req(runtime.events_topic,
                                                    instance_id.encode(), web, request)
        except SameNode:
            pass
        except ServiceUnavailable:
            return web.json({"error": "no worker owns this instance's partition yet"},
                            status=503)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return web.json({"error": "the worker owning this instance does not answer"},
                            status=503)
        partition = partition_for(instance_id, runtime.settings.partitions)
        if partition not in orchestrator.active_partitions():
            return web.json({"error": "this instance's partition is moving between workers"},
                            status=503)
        body = masked_instance(runtime.guard.masker, orchestrator.describe_instance(instance_id))
        return web.json(body, status=200 if body["found"] else 404)


# What an instance view shows of payloads: its input (the trigger's payload), the steps'
# results, its output, its children's, and what the history and errors quote of them.
SHOWN = ("input", "results", "output", "error", "children", "history", "compensation",
         "in_flight")


def masked_instance(masker: Masker, body: dict[str, Any]) -> dict[str, Any]:
    """An instance view with the `[security] mask` fields masked: the `payload.` paths in
    `input` (the payload of the event that started it), and every field of those names
    elsewhere, with the input's masked values scrubbed from any text."""
    if not masker:
        return body
    secrets = masker.secrets({"payload": body.get("input")})
    return {k: masker.mask_names(v, secrets) if k in SHOWN else v for k, v in body.items()}
