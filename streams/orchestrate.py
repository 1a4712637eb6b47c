"""The orchestrator: runs workflow instances from the events topic, state in a table.

The `run_workflows` agent reads the events topic next to `match_events`. For each event it
finds the instance it concerns (choreo/workflows/machine.py `target_of`): a `workflow.start`
or `workflow.cancel` names it, a worker's event carries it as correlation id, a sub-instance's
end names its parent. Under one lock it loads the instance's state, runs the state machine,
sends the commands (actions and cancels to capability topics, workflow events to the events
topic) and waits for the broker's acknowledgement, and only then writes the new state. A
crash before the write reads the event again and sends the same commands under the same ids,
which the workers drop; a crash after it finds the state advanced and the event no longer
matching anything in flight.

Time enters as events too. A timer finds the instances whose next deadline (a step's
timeout, a retry's backoff, forgetting an ended instance) has passed and sends a
`workflow.tick` for each to the events topic, keyed by the instance. The tick is applied like
any event, in order with the workers' answers on the instance's partition, so a crash and a
replay take the same decisions in the same order.

An event of a workflow's `trigger` type becomes a `workflow.start` for that workflow (instance
id `<workflow>-<correlation id>`), and a start or cancel read on another partition than its
instance's is sent on to that partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import orjson

from choreo.actions import (
    Action,
    RecordRefused,
    changelog_limit,
    encode_record,
    record_limit,
)
from choreo.app import Runtime
from choreo.dead_letter import Origin
from choreo.envelope import Event, InvalidEvent, iso_from_ts, new_event
from choreo.metrics import (
    TIMER_ERRORS,
    WORKFLOW_ACTIVE,
    WORKFLOW_EXECUTIONS,
    WORKFLOW_SECONDS,
    WORKFLOW_STEPS,
)
from choreo.signing import HEADERS as SIGNATURE_HEADERS
from choreo.workflows.definitions import Workflow
from choreo.workflows.machine import (
    CANCEL,
    REJECTED,
    RUNNING,
    SOURCE,
    START,
    TICK,
    Command,
    Orchestration,
    Outcome,
    StartError,
    make_id,
    start_request,
    target_of,
    trigger_start,
)
from streams.keyed import TIMER_ERROR
from streams.records import EXCEPTION_HEADER, INFRASTRUCTURE, check_time, isolated, read_event
from tables.pattern_state import partition_for
from tables.workflows import TABLE as WORKFLOW_TABLE
from tables.workflows import WorkflowTable

log = logging.getLogger(__name__)
TICK_SECONDS = 1.0
RETICK_SECONDS = 2.0  # a tick that changed nothing is sent again after this long
MAX_REFITS = 8  # rounds of failing actions that do not fit (a compensation may not either)


class Orchestrator:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.workflows: dict[str, Workflow] = {w.name: w
                                               for w in runtime.choreography.workflows}
        self.machine = Orchestration(self.workflows.values())
        self.partitions = runtime.settings.partitions
        self.store = WorkflowTable.create(runtime.app, self.partitions,
                                          Orchestration.deadline)
        # A state must fit in a changelog record: what the producer sends, and the broker.
        self.store.limit = changelog_limit(runtime.app)
        self.lock = asyncio.Lock()
        self.triggers: dict[str, list[Workflow]] = {}
        for workflow in self.workflows.values():
            for event_type in workflow.triggers:
                self.triggers.setdefault(event_type, []).append(workflow)
        self.ticked: dict[str, float] = {}

    # --- the stream ---------------------------------------------------------------------

    async def process(self, record: faust.EventT) -> None:
        message = record.message
        try:
            event = read_event(self.runtime, record.value)
        except InvalidEvent:
            return  # match_events dead-letters it
        guard = self.runtime.guard
        if guard.active and guard.check(event, message.headers, message.timestamp,
                                        topic=message.topic, key=message.key,
                                        value=record.value):
            return  # unsigned, forged or unauthorized: match_events dead-letters it
        try:
            check_time(self.runtime, event, time.time())
        except InvalidEvent:
            return  # stamped in the far future: match_events dead-letters it
        for workflow in self.triggers.get(event.event_type, ()):
            start = trigger_start(event, workflow)
            await self.send([Command(start, start.correlation_id or start.event_id)])
        target = target_of(event)
        if target is None:
            return
        partition = message.partition
        if partition_for(target, self.partitions) != partition:
            if event.event_type in (START, CANCEL) and event.source != SOURCE:
                await self.forward(target, record.value, message.headers)
            return
        if self.store.stale:
            self.rebuild()
        if event.event_type != START and target not in self.store.index:
            return  # not an instance of ours (a choreography's event, or forgotten)
        await self.apply(target, partition, event)

    async def apply(self, target: str, partition: int, event: Event) -> None:
        async with self.lock:
            state = self.store.load(target)
            now = time.time()
            if event.event_type == START:
                if state is not None:
                    return  # started already (a replay, or a second start)
                try:
                    request = start_request(event, self.workflows)
                except StartError as exc:
                    await self.reject(target, event, str(exc))
                    return
                outcome = self.machine.start(request, now)
            elif state is None:
                return
            elif event.event_type == TICK:
                try:
                    outcome = self.fit(self.machine.on_event(state, event, now), now)
                    self.check_state(target, partition, outcome)
                except INFRASTRUCTURE:
                    raise
                except Exception as exc:  # noqa: BLE001 - this instance's failure alone
                    await self.timer_error(target, partition, exc)
                    return
            else:
                outcome = self.machine.on_event(state, event, now)
            if not outcome.changed:
                return
            outcome = self.fit(outcome, now)
            # Before any command goes: a state too large for its changelog record refuses
            # the event (StateTooLarge: dead-lettered as state_too_large), state unchanged.
            self.check_state(target, partition, outcome)
            await self.send(outcome.commands)
            self.store.save(target, partition, outcome.state)
            self.count(state, outcome.state)

    async def send(self, commands: list[Command]) -> None:
        """Send commands in order and wait until the broker has every one.

        Step actions take the engine's path (`Runtime.action_target`: the capability topic,
        or an agent's inbox when the capability routes explicitly); cancels go to the
        capability topic, workflow events to the events topic. A command that does not fit
        (`encode_record`) is not sent: it is dead-lettered without its payload (`refuse`).
        """
        pending = []
        for command in commands:
            try:
                topic, key, value, headers = self.encode(command)
            except RecordRefused as exc:
                await self.refuse(command, exc)
                continue
            if command.event.event_type == "action.requested":
                info = command.event.payload["workflow"]
                WORKFLOW_STEPS.labels(info["name"], "compensation" if info["compensation"]
                                      else "step").inc()
            pending.append(await self.runtime.produce(topic, key, value, headers))
        if pending:
            await asyncio.gather(*pending)

    def encode(self, command: Command) -> tuple[Any, bytes, bytes, list | None]:
        """A command's topic, key, bytes and headers (signed); RecordRefused if it does not
        fit the record limit."""
        event = command.event
        route: list[tuple[str, bytes]] = []
        if command.capability is None:
            topic = self.runtime.events_topic
        elif event.event_type == "action.requested":
            topic, route = self.runtime.action_target(Action(command.capability, 1, event))
        else:
            topic = self.runtime.capability_topic(command.capability)
        key = command.key.encode()

        def headers_for(value: bytes) -> list[tuple[str, bytes]] | None:
            return [*(self.runtime.sign(topic, key, value) or []), *(route or [])] or None

        value, headers = encode_record(event, key, self.record_limit(), headers_for)
        return topic, key, value, headers

    def check_state(self, target: str, partition: int, outcome: Outcome) -> None:
        if outcome.changed and outcome.state is not None:
            self.store.encode(target, partition, outcome.state)

    def record_limit(self) -> int:
        return record_limit(self.runtime.choreography.defaults.max_event_bytes,
                            self.runtime.app)

    def fit(self, outcome: Outcome, now: float) -> Outcome:
        """The outcome with every step action that does not fit the record limit failed:
        the machine is told `action.failed` (reason `refused`, not retried), so the step
        fails, or compensates, with the reason in its history and error; what it does
        instead is fitted in turn."""
        for _ in range(MAX_REFITS):
            if outcome.state is None:
                return outcome
            refused = []
            for command in outcome.commands:
                if command.event.event_type != "action.requested":
                    continue
                try:
                    self.encode(command)
                except RecordRefused as exc:
                    refused.append((command, exc))
            if not refused:
                return outcome
            state, kept = outcome.state, [c for c in outcome.commands
                                          if all(c is not r for r, _ in refused)]
            for command, exc in refused:
                log.warning("workflow %s: action %s not sent: %s", command.key,
                            command.event.payload.get("action"), exc)
                failed = new_event(
                    "action.failed",
                    {"action_id": command.event.event_id, "reason": "refused",
                     "error": f"the action record cannot be sent: {exc.reason}: {exc.detail}"},
                    source=SOURCE, correlation_id=command.key,
                    causation_id=command.event.event_id,
                    timestamp=iso_from_ts(now))
                after = self.machine.on_event(state, failed, now)
                state = after.state
                kept += after.commands
                if state is None:
                    break
            outcome = Outcome(state, kept, True)
        return outcome

    async def refuse(self, command: Command, exc: RecordRefused) -> None:
        """Dead-letter a command that cannot be sent: its envelope without the payload
        (which is what made it too large), with the reason `workflow_<reason>`."""
        event = command.event
        log.warning("workflow command %s (%s) not sent: %s", event.event_id, event.event_type,
                    exc)
        stub = {**event.as_dict(), "payload": {"instance_id": command.key}}
        await self.runtime.dead_letter(
            orjson.dumps(stub), command.key.encode(), f"workflow_{exc.reason}",
            f"{event.event_type} for {command.key[:200]}, sent here without its payload: "
            f"{exc.detail}", Origin(self.runtime.events_topic.get_topic_name(), -1, -1),
            stage="workflow")

    async def forward(self, target: str, raw: bytes, headers: Any) -> None:
        """A start or cancel keyed otherwise goes on to its instance's partition, with its
        headers; verified already, it is signed again for its new key (a signature covers
        the Kafka key) when this process signs."""
        topic, key = self.runtime.events_topic, target.encode()
        headers = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        signed = self.runtime.sign(topic, key, raw)
        if signed:
            headers = [h for h in headers if h[0] not in SIGNATURE_HEADERS] + signed
        fut = await topic.send(key=key, value=raw, headers=headers,
                               partition=partition_for(target, self.partitions))
        await fut

    async def reject(self, target: str, event: Event, reason: str) -> None:
        log.warning("workflow.start %s refused: %s", event.event_id, reason)
        rejected = new_event(REJECTED, {"instance_id": target, "reason": reason,
                                        "workflow": event.payload.get("workflow")},
                             source=SOURCE, correlation_id=target, causation_id=event.event_id,
                             event_id=make_id("rejected", event.event_id))
        WORKFLOW_EXECUTIONS.labels(str(event.payload.get("workflow")), "rejected").inc()
        await self.send([Command(rejected, target)])

    def count(self, before: dict | None, after: dict | None) -> None:
        if after is None:
            return
        workflow = after["workflow"]
        if before is None:
            WORKFLOW_EXECUTIONS.labels(workflow, "started").inc()
        was = before["status"] if before else "running"
        if was in RUNNING and after["status"] not in RUNNING:
            WORKFLOW_EXECUTIONS.labels(workflow, after["status"]).inc()
            WORKFLOW_SECONDS.labels(workflow, after["status"]).observe(
                max(0.0, after["ended_at"] - after["started_at"]))
        self.gauge()

    def gauge(self) -> None:
        counts = self.store.counts()
        for name in self.workflows:
            WORKFLOW_ACTIVE.labels(name).set(sum(counts[(name, s)] for s in RUNNING))

    # --- time ---------------------------------------------------------------------------

    def active_partitions(self) -> set[int]:
        name = self.runtime.events_topic.get_topic_name()
        return {tp.partition for tp in self.runtime.app.assignor.assigned_actives()
                if tp.topic == name}

    def ready(self) -> bool:
        app = self.runtime.app
        return not app.rebalancing and app.tables.recovery.completed.is_set()

    async def timer_error(self, instance_id: str, partition: int, exc: BaseException) -> None:
        """A deadline the machine cannot run on an instance (a corrupt or old-format state, a
        bug): the instance is parked, off the timer until an event changes it, instead of
        failing at every tick; its stored state is dead-lettered (`timer_error`).

        Parked rather than dropped: an instance is what users look up and cancel; it stays
        in the table and its views, and a restart tries its deadline once more.
        """
        name = f"{type(exc).__name__}: {exc}"
        log.error("workflow timer: the deadline of instance %r failed (%s); the instance is "
                  "parked off the timer and its state dead-lettered", instance_id, name,
                  exc_info=exc)
        TIMER_ERRORS.labels(WORKFLOW_TABLE).inc()
        raw = self.store.park(instance_id)
        await self.runtime.dead_letter(
            raw, instance_id.encode(), TIMER_ERROR,
            f"workflow instance {instance_id[:200]}: the deadline failed: {name}"[:1000],
            Origin(WORKFLOW_TABLE, partition, -1), stage="timer",
            extra=[(EXCEPTION_HEADER, type(exc).__name__.encode())])

    def rebuild(self) -> None:
        held = self.store.rebuild(self.active_partitions(),
                                  lambda i: partition_for(i, self.partitions))
        self.ticked.clear()
        self.gauge()
        log.info("workflow instances: %d on this worker", held)

    async def tick(self) -> int:
        """Send a `workflow.tick` for every instance whose deadline has passed."""
        if not self.ready():
            return 0
        if self.store.stale:
            self.rebuild()
        for instance_id, exc in self.store.take_unreadable():
            await self.timer_error(instance_id, partition_for(instance_id, self.partitions),
                                   exc)
        now = time.time()
        ticks = []
        for instance_id in self.store.due(now):
            if self.ticked.get(instance_id, 0.0) > now - RETICK_SECONDS:
                continue
            self.ticked[instance_id] = now
            ticks.append(Command(new_event(TICK, {"instance_id": instance_id, "now": now},
                                           source=SOURCE, correlation_id=instance_id,
                                           timestamp=iso_from_ts(now)), instance_id))
        for gone in [i for i in self.ticked if i not in self.store.index]:
            del self.ticked[gone]
        await self.send(ticks)
        return len(ticks)

    # --- views --------------------------------------------------------------------------

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        state = self.store.load(instance_id)
        partition = partition_for(instance_id, self.partitions)
        if state is None:
            return {"instance_id": instance_id, "found": False, "partition": partition}
        return {"found": True, **instance_view(state), "partition": partition,
                "next_deadline": _iso(Orchestration.deadline(state))}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso_from_ts(ts)


def instance_view(state: dict) -> dict[str, Any]:
    """An instance's state, history and timings, with times as ISO 8601."""
    ended = state["ended_at"]
    timings = {}
    for step, timing in state["timings"].items():
        started, finished = timing.get("started_at"), timing.get("ended_at")
        timings[step] = {**timing, "started_at": _iso(started), "ended_at": _iso(finished),
                         "duration_seconds": (round(finished - started, 3)
                                              if started is not None and finished is not None
                                              else None)}
    in_flight = [{"task": t["key"], "step": t["step"], "kind": t["kind"],
                  "action": t["action"], "capability": t["capability"],
                  "action_id": t["action_id"], "attempt": t["attempt"], "status": t["status"],
                  "deadline": _iso(t.get("deadline")), "retry_at": _iso(t.get("retry_at"))}
                 for t in state["tasks"].values() if t["status"] in ("sent", "retry")]
    return {
        "instance_id": state["instance_id"], "workflow": state["workflow"],
        "status": state["status"], "depth": state["depth"], "parent": state["parent"],
        "started_at": _iso(state["started_at"]), "ended_at": _iso(ended),
        "duration_seconds": round(ended - state["started_at"], 3) if ended else None,
        "current_step": state["index"], "input": state["input"], "results": state["results"],
        "output": state["output"], "error": state["error"],
        "compensation": state["compensation"], "in_flight": in_flight,
        "children": list(state["children"].values()), "timings": timings,
        "history": [{**h, "at": _iso(h["at"])} for h in state["history"]],
        "forget_after": _iso(state["retain_until"]),
    }


def register_orchestrator(runtime: Runtime) -> Orchestrator | None:
    """Add the orchestrator agent and its timer when the file declares workflows."""
    if not runtime.choreography.workflows:
        return None
    orchestrator = Orchestrator(runtime)
    app = runtime.app

    async def run_workflows(stream: faust.StreamT) -> None:
        async for record in stream.events():
            await isolated(runtime, record, "workflow",
                           lambda record=record: orchestrator.process(record))

    app.agent(runtime.events_topic, name="run_workflows")(run_workflows)

    @app.timer(TICK_SECONDS, name="fire_workflow_deadlines")
    async def fire_workflow_deadlines() -> None:
        await orchestrator.tick()

    def mark_stale(*_args: object, **_kwargs: object) -> None:
        orchestrator.store.stale = True

    app.on_partitions_assigned.connect(mark_stale)
    app.on_partitions_revoked.connect(mark_stale)
    return orchestrator
