"""The worker agent: one per capability, handling each action once.

For every action it publishes `action.started`, the handler's result events and then
`action.completed` (or `action.failed`), all with the action's correlation id and
`causation_id` = the action's id. Ids of published events derive from the action id, so a
worker that handles an action again after a crash publishes the same ids, which the engine
drops as duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import faust

from choreo.actions import ACTION_REQUESTED
from choreo.app import Runtime
from choreo.dead_letter import Origin
from choreo.envelope import Event, InvalidEvent, new_event, parse_event
from choreo.metrics import DUPLICATES, WORKER_ACTIONS, WORKER_SECONDS
from tables.dedup import handled_actions_table
from tables.expiring import ExpiringTable

log = logging.getLogger(__name__)
_NAMESPACE = uuid.UUID("0b7f2c1a-3d4e-5f60-8172-93a4b5c6d7e8")
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Result:
    """An event a handler wants published: its type and payload."""

    event_type: str
    payload: Mapping[str, Any]


Handler = Callable[[Event], Awaitable[list[Result]]]


class ActionRefused(Exception):
    """A handler's way to fail an action with a clear reason."""


def derived_id(action_id: str, suffix: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{action_id}/{suffix}"))


def _info(action: Event, capability: str) -> dict[str, Any]:
    return {
        "action_id": action.event_id,
        "action": action.payload.get("action"),
        "capability": capability,
        "pattern_id": action.payload.get("pattern_id"),
    }


def _derived(action: Event, capability: str, event_type: str, payload: Mapping[str, Any],
             suffix: str) -> Event:
    return new_event(event_type, payload, source=f"agent.{capability}",
                     correlation_id=action.correlation_id, causation_id=action.event_id,
                     event_id=derived_id(action.event_id, suffix))


def started_event(action: Event, capability: str) -> Event:
    """The `action.started` event a worker publishes before running the handler."""
    return _derived(action, capability, "action.started", _info(action, capability), "started")


def outcome_events(action: Event, capability: str, results: list[Result] | None,
                   error: str | None, duration: float) -> list[Event]:
    """The result events and then `action.completed`, or just `action.failed`."""
    info = _info(action, capability)
    if error is not None:
        return [_derived(action, capability, "action.failed", {**info, "error": error},
                         "failed")]
    out = [_derived(action, capability, r.event_type, r.payload,
                    f"result/{index}/{r.event_type}") for index, r in enumerate(results or [])]
    out.append(_derived(action, capability, "action.completed", {
        **info,
        "results": [r.event_type for r in results or []],
        "duration_ms": round(duration * 1000, 3),
    }, "completed"))
    return out


def lifecycle_events(action: Event, capability: str, results: list[Result] | None,
                     error: str | None, duration: float) -> list[Event]:
    """The events a worker publishes for one action, in order: started, results, outcome."""
    return [started_event(action, capability),
            *outcome_events(action, capability, results, error, duration)]


async def run_handler(handler: Handler | None, action: Event, timeout: float
                      ) -> tuple[list[Result] | None, str | None]:
    """Run a handler; return its results or an error text."""
    if handler is None:
        return None, f"no handler for action {action.payload.get('action')!r}"
    try:
        return list(await asyncio.wait_for(handler(action), timeout)), None
    except TimeoutError:
        return None, f"timed out after {timeout}s"
    except ActionRefused as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - any handler failure becomes action.failed
        log.exception("handler for %s failed", action.payload.get("action"))
        return None, f"{type(exc).__name__}: {exc}"


def register_workers(runtime: Runtime, handlers: Mapping[str, Mapping[str, Handler]],
                     select: str = "*") -> list[str]:
    """Add a worker agent for each selected capability that has handlers; return them."""
    wanted = {c.strip() for c in select.split(",") if c.strip()}
    started = []
    for capability in runtime.choreography.capabilities:
        if capability not in handlers or "none" in wanted:
            continue
        if "*" not in wanted and capability not in wanted:
            continue
        add_worker(runtime, capability, handlers[capability])
        started.append(capability)
    return started


def add_worker(runtime: Runtime, capability: str, actions: Mapping[str, Handler]) -> None:
    handled = handled_actions_table(runtime.app, capability,
                                    runtime.choreography.defaults.dedup_horizon,
                                    runtime.settings.partitions)

    async def handle_actions(stream: faust.StreamT) -> None:
        async for record in stream.events():
            await handle_record(runtime, capability, actions, handled, record)

    handle_actions.__name__ = f"handle_{capability}_actions"
    runtime.app.agent(runtime.capability_topic(capability),
                      name=f"handle_{capability}_actions")(handle_actions)


async def handle_record(runtime: Runtime, capability: str, actions: Mapping[str, Handler],
                        handled: ExpiringTable, record: faust.EventT) -> None:
    message = record.message
    origin = Origin(message.topic, message.partition, message.offset)
    try:
        action = parse_event(record.value)
        if action.event_type != ACTION_REQUESTED or not isinstance(
            action.payload.get("action"), str
        ):
            raise InvalidEvent("not_an_action", f"{action.event_type} is not an action request")
    except InvalidEvent as exc:
        await runtime.dead_letter(record.value, message.key, exc.reason, exc.detail, origin,
                                  stage=f"worker.{capability}")
        return
    handled.advance(message.partition, action.ts)
    first_offset = handled.get(action.event_id)
    if first_offset is not None and first_offset != message.offset:
        DUPLICATES.labels("worker").inc()
        return
    key = action.correlation_id.encode() if action.correlation_id else None
    await runtime.events_topic.send(key=key, value=started_event(action, capability).to_bytes())
    started = time.perf_counter()
    results, error = await run_handler(actions.get(action.payload["action"]), action,
                                       DEFAULT_TIMEOUT)
    duration = time.perf_counter() - started
    WORKER_SECONDS.labels(capability).observe(duration)
    WORKER_ACTIONS.labels(capability, "failed" if error else "completed").inc()
    for event in outcome_events(action, capability, results, error, duration):
        await runtime.events_topic.send(key=key, value=event.to_bytes())
    handled.put(action.event_id, action.ts, message.partition, message.offset)
