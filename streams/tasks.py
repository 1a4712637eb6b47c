"""Task progress on the stream: `task.progress` events re-keyed by task id into a table.

Workers publish progress on the events topic keyed by correlation id, like their other
events. `match_events` hands each new one to `forward_progress`, which re-sends it to the
internal tasks topic keyed by task id (the repartition step); `track_tasks` folds it into
the `task-progress` table on the partition of the task id, and `/tasks/{task_id}/` is
answered by the worker that owns that partition.
"""

from __future__ import annotations

import logging
import time

import faust
from faust.exceptions import SameNode
from faust.web.exceptions import ServiceUnavailable

from agents.progress import STATES, TASK_PROGRESS
from choreo.app import Runtime, raw_topic
from choreo.envelope import Event, InvalidEvent
from streams.records import check_time, isolated, read_event, refuse
from tables.expiring import ExpiringTable
from tables.pattern_state import partition_for
from tables.tasks import add_progress, task_progress_table

log = logging.getLogger(__name__)


def is_progress(event: Event) -> bool:
    p = event.payload
    return (event.event_type == TASK_PROGRESS and isinstance(p.get("task_id"), str)
            and bool(p["task_id"]) and p.get("state") in STATES)


def register_tasks(runtime: Runtime) -> ExpiringTable:
    app = runtime.app
    topics = runtime.choreography.topics
    tasks_topic = raw_topic(app, topics.tasks_topic)
    table = task_progress_table(app, runtime.choreography.defaults.correlation_ttl,
                                runtime.settings.partitions)

    async def forward_progress(event: Event, raw: bytes) -> None:
        if is_progress(event):
            await tasks_topic.send(key=event.payload["task_id"].encode(), value=raw)

    runtime.event_taps.append(forward_progress)

    async def ensure_tasks_topic() -> None:
        from choreo.topics import ensure_topics

        await ensure_topics(runtime.settings.bootstrap_servers, [topics.tasks_topic],
                            runtime.settings.partitions,
                            client=runtime.settings.kafka_options())

    runtime.startup_hooks.append(ensure_tasks_topic)

    async def track_task(record: faust.EventT) -> None:
        message = record.message
        try:
            event = read_event(runtime, record.value)
            check_time(runtime, event, time.time())
        except InvalidEvent as exc:  # only if someone else wrote to the internal topic
            await refuse(runtime, record, exc.reason, exc.detail, "tasks")
            return
        if not is_progress(event):
            return
        table.advance(message.partition, event.ts)
        task_id = event.payload["task_id"]
        snapshot = add_progress(table.get(task_id), event)
        if snapshot is not None:
            table.put(task_id, event.ts, message.partition, snapshot)

    async def track_tasks(stream: faust.StreamT) -> None:
        async for record in stream.events():
            await isolated(runtime, record, "tasks", lambda record=record: track_task(record))

    app.agent(tasks_topic, name="track_tasks")(track_tasks)

    @app.page("/tasks/{task_id}/")
    async def task_view(web, request, task_id):  # noqa: ANN001 - Faust view signature
        try:
            return await app.router.route_topic_req(tasks_topic, task_id.encode(), web,
                                                    request)
        except SameNode:
            pass
        except ServiceUnavailable:
            return web.json({"error": "no worker owns this task's partition yet"}, status=503)
        except (TimeoutError, OSError) as exc:
            return web.json({"error": f"the worker owning this task does not answer: {exc}"},
                            status=503)
        snapshot = table.get(task_id)
        if snapshot is None:
            return web.json({"task_id": task_id, "found": False}, status=404)
        return web.json({**snapshot, "found": True,
                         "partition": partition_for(task_id, runtime.settings.partitions)})

    return table
