"""The worker agent: one per capability, handling each action once.

For every action it publishes `action.started`, the handler's result events and then
`action.completed` (or `action.failed`), all with the action's correlation id and
`causation_id` = the action's id. Ids of published events derive from the action id, so a
worker that handles an action again after a crash publishes the same ids, which the engine
drops as duplicates.

A failing attempt (an exception or a timeout) is retried with exponential backoff and
jitter up to the capability's `max_retries`; an action that still fails, or that its handler
refuses, goes to the capability's dead-letter topic with the error in headers, and
`action.failed` is published. A circuit breaker per capability stops attempts while the
handler keeps failing: actions then wait (the worker stops reading that capability's
topic) until the cool-down is over, so none is lost or dead-lettered because of it.

What a handler returns is checked in `run_handler`: anything but a list of `Result` fails the
attempt (`bad_result`, retried like an exception); errors name the handler. Outcome events
are checked to fit before they are sent: a result event too large or not encodable fails
the action (`event_too_large`, `event_unencodable`). Any other exception while handling a
record dead-letters that record (`worker_error`) and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import faust

from agents.progress import TaskProgress, derived_id
from choreo.actions import ACTION_REQUESTED, RecordRefused, encode_record, record_limit
from choreo.app import Runtime, raw_topic
from choreo.dead_letter import HEADER_PREFIX, Origin, exception_headers, isolate
from choreo.envelope import (
    EVENT_TYPE,
    Event,
    InvalidEvent,
    check_event_time,
    new_event,
    parse_event,
)
from choreo.masking import scrub
from choreo.metrics import (
    BREAKER_STATE,
    DUPLICATES,
    WORKER_ACTIONS,
    WORKER_RETRIES,
    WORKER_SECONDS,
)
from choreo.redrive import REDRIVE_HEADER
from choreo.resilience import BreakerState, CircuitBreaker, backoff_delay
from choreo.worker_policy import WorkerPolicy
from tables.dedup import handled_actions_table
from tables.expiring import ExpiringTable

log = logging.getLogger(__name__)
# This process's life: an action it handled itself is never handled again, even when a
# rebalance (a broker restart, a lost heartbeat) makes it read the record at the same offset.
INCARNATION = uuid.uuid4().hex
BREAKER_CHANGED = "circuit_breaker.state.changed"
# An orchestrator's request to drop an action (a workflow step cancelled or timed out).
ACTION_CANCEL = "action.cancel"


@dataclass(frozen=True)
class Result:
    """An event a handler wants published: its type and payload."""

    event_type: str
    payload: Mapping[str, Any]


Handler = Callable[[Event], Awaitable[list[Result]]]


class ActionRefused(Exception):
    """A handler's way to fail an action with a clear reason."""


def _info(action: Event, capability: str) -> dict[str, Any]:
    return {
        "action_id": action.event_id,
        "action": action.payload.get("action"),
        "capability": capability,
        "pattern_id": action.payload.get("pattern_id"),
    }


def _derived(action: Event, capability: str, event_type: str, payload: Mapping[str, Any],
             suffix: str, generation: str = "") -> Event:
    return new_event(event_type, payload, source=f"agent.{capability}",
                     correlation_id=action.correlation_id, causation_id=action.event_id,
                     event_id=derived_id(action.event_id, generation + suffix))


def started_event(action: Event, capability: str, generation: str = "") -> Event:
    """The `action.started` event a worker publishes before running the handler.

    `generation` is empty for an action as the engine sent it, and names the dead-letter
    record for a re-driven one, so that its events are not taken for the first run's.
    """
    return _derived(action, capability, "action.started", _info(action, capability), "started",
                    generation)


def outcome_events(action: Event, capability: str, results: list[Result] | None,
                   error: str | None, duration: float, *, generation: str = "",
                   extra: Mapping[str, Any] | None = None) -> list[Event]:
    """The result events and then `action.completed`, or just `action.failed`."""
    info = {**_info(action, capability), **(extra or {})}
    if error is not None:
        return [_derived(action, capability, "action.failed", {**info, "error": error},
                         "failed", generation)]
    out = [_derived(action, capability, r.event_type, r.payload,
                    f"result/{index}/{r.event_type}", generation)
           for index, r in enumerate(results or [])]
    out.append(_derived(action, capability, "action.completed", {
        **info,
        "results": [r.event_type for r in results or []],
        "duration_ms": round(duration * 1000, 3),
    }, "completed", generation))
    return out


def lifecycle_events(action: Event, capability: str, results: list[Result] | None,
                     error: str | None, duration: float) -> list[Event]:
    """The events a worker publishes for one action, in order: started, results, outcome."""
    return [started_event(action, capability),
            *outcome_events(action, capability, results, error, duration)]



@dataclass(frozen=True)
class Attempt:
    """What one run of a handler gave: results, or an error and whether to retry it."""

    results: list[Result] | None
    error: str | None = None
    reason: str = ""
    retryable: bool = False


ERROR_CHARS = 1000  # an error message is cut here: action.failed must stay small


def handler_name(handler: Any, action: str) -> str:
    """How errors name a handler: the action and the function that handles it."""
    function = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{action} ({getattr(handler, '__module__', '?')}.{function})"


def _type_name(value: object) -> str:
    if isinstance(value, list | tuple):
        inner = sorted({type(v).__name__ for v in value if not isinstance(v, Result)})
        return f"{type(value).__name__} of {', '.join(inner)}"
    return type(value).__name__


def check_results(returned: object) -> list[Result]:
    """The handler contract: a list (or tuple) of `Result(event_type: str, payload: Mapping)`
    with a valid event type; raises TypeError saying what was returned instead."""
    if not isinstance(returned, list | tuple) or not all(
        isinstance(r, Result) for r in returned
    ):
        raise TypeError(f"returned {_type_name(returned)}, expected a list of Result")
    for r in returned:
        if not isinstance(r.event_type, str) or not EVENT_TYPE.match(r.event_type):
            raise TypeError(f"returned Result with event_type {r.event_type!r}, expected "
                            "dot-separated words")
        if not isinstance(r.payload, Mapping):
            raise TypeError(f"returned Result {r.event_type} with a payload of "
                            f"{type(r.payload).__name__}, expected a mapping")
    return list(returned)


async def run_handler(handler: Handler | None, action: Event, timeout: float) -> Attempt:
    """Run a handler once and check what it returned (`check_results`).

    Exceptions, timeouts and results that break the contract are retryable; refusals are
    not. The error names the handler.
    """
    name = action.payload.get("action")
    if handler is None:
        return Attempt(None, f"no handler for action {name!r}", "no_handler")
    who = handler_name(handler, str(name))
    try:
        returned = await asyncio.wait_for(handler(action), timeout)
    except TimeoutError:
        return Attempt(None, f"handler {who} timed out after {timeout}s", "timeout",
                       retryable=True)
    except ActionRefused as exc:
        return Attempt(None, str(exc)[:ERROR_CHARS], "refused")
    except Exception as exc:  # noqa: BLE001 - any handler failure becomes action.failed
        # The class only: the message may quote the action's data (a card number); the
        # error below is scrubbed of the masked fields before anything publishes it.
        log.warning("handler %s failed: %s", who, type(exc).__name__)
        return Attempt(None, f"handler {who} raised {type(exc).__name__}: {exc}"[:ERROR_CHARS],
                       "handler_error", retryable=True)
    try:
        return Attempt(check_results(returned))
    except TypeError as exc:
        log.warning("handler %s broke its contract: %s", who, exc)
        return Attempt(None, f"handler {who} {exc}"[:ERROR_CHARS], "bad_result",
                       retryable=True)


@dataclass
class CapabilityWorker:
    """One capability's handlers, failure policy, circuit breaker and topics."""

    runtime: Runtime
    capability: str
    actions: Mapping[str, Handler]
    policy: WorkerPolicy
    breaker: CircuitBreaker
    dead_letter_topic: faust.TopicT
    handled: ExpiringTable | None = None
    agent_id: str = ""  # this process's id in the agent registry ("" without [agents])
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rand: Callable[[], float] = random.random

    def describe(self) -> dict[str, Any]:
        topics = self.runtime.choreography.topics
        return {"capability": self.capability,
                "topic": topics.capability_topic(self.capability),
                "dead_letter_topic": topics.capability_dead_letter_topic(self.capability),
                "actions": sorted(self.actions),
                "policy": asdict(self.policy),
                "circuit_breaker": self.breaker.describe()}

    async def publish_transitions(self, cause: Event | None) -> None:
        for change in self.breaker.drain():
            BREAKER_STATE.labels(self.capability, change.old.value).set(0)
            BREAKER_STATE.labels(self.capability, change.new.value).set(1)
            log.warning("circuit breaker for %s: %s -> %s (%s)", self.capability,
                        change.old.value, change.new.value, change.reason)
            event = new_event(BREAKER_CHANGED, change.payload(),
                              source=f"agent.{self.capability}",
                              causation_id=cause.event_id if cause else None)
            topic, key, value = (self.runtime.events_topic, self.capability.encode(),
                                 event.to_bytes())
            await topic.send(key=key, value=value, headers=self.runtime.sign(topic, key, value))

    async def attempt_until_done(self, action: Event) -> tuple[Attempt, int]:
        """Attempt the action, waiting for the breaker and backing off; (outcome, attempts)."""
        handler = self.actions.get(action.payload["action"])
        attempts = 0
        while True:
            while (wait := self.breaker.wait_time()) > 0:
                await self.sleep(min(wait, 1.0))
            self.breaker.attempt()
            await self.publish_transitions(action)
            attempts += 1
            outcome = await run_handler(handler, action, self.policy.timeout)
            if outcome.error is None:
                self.breaker.success()
            elif outcome.retryable:
                self.breaker.failure(outcome.error)
            await self.publish_transitions(action)
            if not outcome.retryable or attempts > self.policy.max_retries:
                return outcome, attempts
            WORKER_RETRIES.labels(self.capability).inc()
            await self.sleep(backoff_delay(attempts, self.policy, self.rand))


def register_workers(runtime: Runtime, handlers: Mapping[str, Mapping[str, Handler]],
                     select: str = "*", agent_id: str = "") -> dict[str, CapabilityWorker]:
    """Add a worker agent for each selected capability that has handlers; return them by
    capability. `agent_id` is this process's id in the agent registry, if it joins it."""
    wanted = {c.strip() for c in select.split(",") if c.strip()}
    started: dict[str, CapabilityWorker] = {}
    for capability in runtime.choreography.capabilities:
        if capability not in handlers or "none" in wanted:
            continue
        if "*" not in wanted and capability not in wanted:
            continue
        started[capability] = add_worker(runtime, capability, handlers[capability], agent_id)
    return started


def add_worker(runtime: Runtime, capability: str, actions: Mapping[str, Handler],
               agent_id: str = "") -> CapabilityWorker:
    policy = runtime.choreography.workers.for_capability(capability)
    worker = CapabilityWorker(
        runtime, capability, actions, policy, CircuitBreaker.for_policy(capability, policy),
        raw_topic(runtime.app,
                  runtime.choreography.topics.capability_dead_letter_topic(capability)),
        handled_actions_table(runtime.app, capability,
                              runtime.choreography.defaults.dedup_horizon,
                              runtime.settings.partitions),
        agent_id=agent_id)
    BREAKER_STATE.labels(capability, BreakerState.CLOSED.value).set(1)
    runtime.workers[capability] = worker

    async def handle_actions(stream: faust.StreamT) -> None:
        async for record in stream.events():
            await handle_record(worker, record)

    handle_actions.__name__ = f"handle_{capability}_actions"
    runtime.app.agent(runtime.capability_topic(capability),
                      name=f"handle_{capability}_actions")(handle_actions)
    return worker


def note_cancel(worker: CapabilityWorker, cancel: Event, partition: int, offset: int,
                handled: ExpiringTable | None = None) -> None:
    """Remember a cancelled action id: a copy of it read later is skipped, not handled.

    A cancel comes after its action on the same partition, so it stops the copies a crash
    or a re-send leaves behind; an action already handled keeps its record.
    """
    handled = handled if handled is not None else worker.handled
    assert handled is not None
    handled.advance(partition, cancel.ts)
    action_id = cancel.payload["action_id"]
    if handled.get(action_id) is None:
        handled.put(action_id, cancel.ts, partition, [offset, "cancelled", INCARNATION])
    log.info("action %s (%s) cancelled: %s", action_id, cancel.payload.get("action"),
             cancel.payload.get("reason"))


def task_progress(runtime: Runtime, action: Event, capability: str, generation: str,
                  agent_id: str) -> TaskProgress:
    """The task.progress publisher of one action (agents/progress.py), by `agent_id`."""
    return TaskProgress(runtime, action, capability, generation, agent_id,
                        enabled=runtime.choreography.agents.task_progress)


def _header(headers: Any, name: str) -> str | None:
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for key, value in items:
        if key == name and value is not None:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


async def handle_record(worker: CapabilityWorker, record: Any,
                        handled: ExpiringTable | None = None) -> None:
    """`handle_action_record`, with an unexpected exception dead-lettering the record to
    the capability's dead-letter topic (reason `worker_error`, the exception's class in
    `choreo.dlq.exception`) instead of ending the agent or, reading an inbox, reading the
    record again for ever."""

    async def refuse(exc: Exception) -> None:
        message = record.message
        await worker.runtime.dead_letter(
            record.value, message.key, "worker_error", f"{type(exc).__name__}: {exc}",
            Origin(message.topic, message.partition, message.offset),
            f"worker.{worker.capability}", topic=worker.dead_letter_topic,
            extra=exception_headers(exc))

    await isolate(handle_action_record(worker, record, handled), refuse)


async def handle_action_record(worker: CapabilityWorker, record: Any,
                               handled: ExpiringTable | None = None) -> None:
    """Handle one record of an action topic: a Faust event, or anything with the same
    `value` and `message` (topic, partition, offset, key, headers, timestamp in seconds).

    `handled` is where the action ids handled are kept: the capability's table by default;
    an agent's inbox, read outside Faust, brings its own (agents/inbox.py).
    """
    runtime, capability = worker.runtime, worker.capability
    handled = handled if handled is not None else worker.handled
    assert handled is not None
    message = record.message
    origin = Origin(message.topic, message.partition, message.offset)
    guard = runtime.guard
    # The signature first, over the raw record (topic and key included): a forgery, or an
    # action copied to another topic or key, is refused as such whatever else is wrong.
    refusal = guard.authenticate(message.topic, message.key, record.value, message.headers,
                                 message.timestamp)
    if refusal is not None:
        await runtime.dead_letter(record.value, message.key, refusal.reason, refusal.detail,
                                  origin, stage=f"worker.{capability}",
                                  topic=worker.dead_letter_topic, signed=message.headers)
        return
    try:
        defaults = runtime.choreography.defaults
        action = parse_event(record.value, defaults.max_event_bytes, defaults.max_event_depth)
        # A far-future action would move the handled-actions horizon past every real one.
        check_event_time(action, time.time(), defaults.max_future_skew)
        if action.event_type == ACTION_CANCEL and isinstance(action.payload.get("action_id"),
                                                             str):
            # Checked like an action: a forged cancel must not mark a real action handled.
            refusal = guard.permit_action(action, message.headers, event_types=(ACTION_CANCEL,))
            if refusal is not None:
                await runtime.dead_letter(record.value, message.key, refusal.reason,
                                          refusal.detail, origin, stage=f"worker.{capability}",
                                          topic=worker.dead_letter_topic,
                                          signed=message.headers)
                return
            note_cancel(worker, action, message.partition, message.offset, handled)
            return
        if action.event_type != ACTION_REQUESTED or not isinstance(
            action.payload.get("action"), str
        ):
            raise InvalidEvent("not_an_action", f"{action.event_type} is not an action request")
    except InvalidEvent as exc:  # what is read from a capability topic is dead-lettered there
        await runtime.dead_letter(record.value, message.key, exc.reason, exc.detail, origin,
                                  stage=f"worker.{capability}", topic=worker.dead_letter_topic,
                                  signed=message.headers)
        return
    # Before the de-duplication table: a forged action must not mark a real one handled.
    refusal = guard.permit_action(action, message.headers)
    if refusal is not None:
        await runtime.dead_letter(record.value, message.key, refusal.reason, refusal.detail,
                                  origin, stage=f"worker.{capability}",
                                  topic=worker.dead_letter_topic, signed=message.headers)
        return
    handled.advance(message.partition, action.ts)
    redriven_from = _header(message.headers, REDRIVE_HEADER)
    seen = handled.get(action.event_id)
    if seen is not None:
        first_offset, outcome, *by = seen if isinstance(seen, list) else (seen, "completed")
        again = redriven_from is not None and outcome == "dead_lettered"
        # The same offset read again is handled again only by another process: this one's
        # producer has the outcome events already, a crashed one may have lost them.
        ours = by == [INCARNATION]
        if (first_offset != message.offset or ours) and not again:
            DUPLICATES.labels("worker").inc()
            return
    generation = f"redrive/{redriven_from}/" if redriven_from else ""
    key = action.correlation_id.encode() if action.correlation_id else None
    started_ev = started_event(action, capability, generation)
    value = started_ev.to_bytes()
    await runtime.events_topic.send(key=key, value=value,
                                    headers=runtime.sign(runtime.events_topic, key, value))
    progress = task_progress(runtime, action, capability, generation, worker.agent_id)
    await progress.publish("working")
    started = time.perf_counter()
    token = progress.enter()  # report_progress() in the handler publishes through it
    try:
        outcome, attempts = await worker.attempt_until_done(action)
    finally:
        progress.exit(token)
    duration = time.perf_counter() - started
    WORKER_SECONDS.labels(capability).observe(duration)
    if outcome.error is not None and runtime.guard.masker:
        # A handler's error may quote the action's data: the `[security] mask` fields go
        # before it reaches action.failed, the dead-letter detail or a log line.
        secrets = runtime.guard.masker.secrets(action.as_dict())
        outcome = replace(outcome, error=scrub(outcome.error, secrets))
    extra: dict[str, Any] = {"attempts": attempts}
    out: list[tuple[bytes, list[tuple[str, bytes]] | None]] = []
    if outcome.error is None:
        outcome, out = encode_outcome(worker, action, outcome, duration, generation, key, extra)
    if outcome.error is not None:
        dlq = runtime.choreography.topics.capability_dead_letter_topic(capability)
        extra.update(reason=outcome.reason, dead_letter_topic=dlq)
        out = encode_outcome(worker, action, outcome, duration, generation, key, extra)[1]
        await runtime.dead_letter(record.value, message.key, outcome.reason, outcome.error,
                                  origin, f"worker.{capability}", topic=worker.dead_letter_topic,
                                  extra=[(HEADER_PREFIX + "attempts", str(attempts).encode())],
                                  signed=message.headers)
        log.warning("action %s (%s) dead-lettered to %s after %d attempt(s)",
                    action.event_id, action.payload["action"], dlq, attempts)
    WORKER_ACTIONS.labels(capability, "failed" if outcome.error else "completed").inc()
    for value, headers in out:
        await runtime.events_topic.send(key=key, value=value, headers=headers)
    await progress.publish("failed" if outcome.error else "completed", outcome.error or "")
    handled.put(action.event_id, action.ts, message.partition,
                [message.offset, "dead_lettered" if outcome.error else "completed",
                 INCARNATION])


def encode_outcome(worker: CapabilityWorker, action: Event, outcome: Attempt, duration: float,
                   generation: str, key: bytes | None, extra: Mapping[str, Any]
                   ) -> tuple[Attempt, list[tuple[bytes, list[tuple[str, bytes]] | None]]]:
    """The outcome events as (bytes, headers), each checked to fit (`encode_record`).

    A result event that does not fit, or is not JSON, fails the action instead (reason
    `event_too_large` or `event_unencodable`, not retried: the handler has run).
    """
    runtime, capability = worker.runtime, worker.capability
    limit = record_limit(runtime.choreography.defaults.max_event_bytes, runtime.app)
    out = []
    for event in outcome_events(action, capability, outcome.results, outcome.error, duration,
                                generation=generation, extra=extra):
        try:
            out.append(encode_record(event, key, limit, lambda value: runtime.sign(
                runtime.events_topic, key, value)))
        except RecordRefused as exc:
            if outcome.error is not None:
                raise  # action.failed is small: its error is cut at ERROR_CHARS
            log.warning("action %s (%s): result %s refused: %s", action.event_id,
                        action.payload["action"], event.event_type, exc)
            who = handler_name(worker.actions.get(action.payload["action"]),
                               action.payload["action"])
            return Attempt(None, f"handler {who} returned a {event.event_type} event that "
                           f"cannot be published: {exc.detail}"[:ERROR_CHARS],
                           f"event_{exc.reason}"), []
    return outcome, out
