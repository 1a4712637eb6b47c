"""A pool of agents for the routing tests (CHOREO_HANDLERS): each says who handled the task."""

from __future__ import annotations

import asyncio
import os

from agents.progress import report_progress
from agents.worker import Result
from choreo.envelope import Event


async def work(action: Event) -> list[Result]:
    await report_progress("halfway", {"agent": os.environ.get("CHOREO_AGENT_ID", "")})
    await asyncio.sleep(0.001)
    return [Result("pool.done", {**dict(action.payload.get("data") or {}),
                                 "agent": os.environ.get("CHOREO_AGENT_ID", "")})]


HANDLERS = {"pool": {"work": work}}

CHOREOGRAPHY = """
[topics]
prefix = ""

[agents]
heartbeat_interval = "500ms"
missed_heartbeats = 40
task_progress = true

[workers]
timeout = "10s"
max_retries = 1
backoff_base = "50ms"
backoff_max = "100ms"
breaker_threshold = 0

[capabilities.pool]
routing = "weighted"

[[patterns]]
id = "work"
kind = "event"
on = "pool.task"
action = "work"
capability = "pool"
"""
