"""A workflow instance as a pure state machine: events and ticks in, state and commands out.

`Orchestration.start(request, now)`, `.on_event(state, event, now)` and
`.on_deadline(state, now)` return an `Outcome`: the new state (plain JSON, None once the
instance is forgotten) and the commands to carry out, in order: actions and cancels for
capability topics, and workflow events for the events topic. Nothing here touches Kafka or
a clock; the Faust agent (streams/orchestrate.py) loads the state, sends the commands, waits
for the broker's acknowledgement, and only then stores the state.

Every id is derived from the instance id, the step, the task and the attempt, so the same
input gives the same ids: a command sent again after a crash carries the ids of the first
send, and the workers drop it as a duplicate. An event that is not for a task in flight (a
duplicate, a late answer to a timed-out attempt) leaves the state as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from choreo.conditions import ConditionRuntimeError
from choreo.envelope import ENGINE_SOURCE, Event, iso_from_ts, new_event
from choreo.workflows.definitions import MAX_DEPTH, Call, Step, Workflow
from choreo.workflows.params import resolve

_NAMESPACE = uuid.UUID("5d0c9a1e-2b47-4c1f-9e83-7a6b5c4d3e2f")
SOURCE = "choreo.orchestrator"  # of workflow.* events; actions and cancels are the engine's
START, CANCEL, TICK, STARTED, REJECTED = ("workflow.start", "workflow.cancel", "workflow.tick",
                                          "workflow.started", "workflow.rejected")
END_TYPES = {"completed": "workflow.completed", "failed": "workflow.failed",
             "compensated": "workflow.compensated", "cancelled": "workflow.cancelled",
             "compensation_failed": "workflow.compensation_failed"}
ACTION_CANCEL = "action.cancel"
RUNNING = ("running", "compensating")
NOT_RETRIED = ("refused", "no_handler")  # action.failed reasons that would fail again
HISTORY_LIMIT = 200
MAX_INSTANCE_ID = 200


def make_id(*parts: object) -> str:
    """A deterministic id; a JSON array keeps any choice of parts from colliding."""
    return str(uuid.uuid5(_NAMESPACE, orjson.dumps(parts).decode()))


@dataclass(frozen=True)
class Command:
    """An event to send: to `capability`'s topic, or to the events topic when None."""

    event: Event
    key: str
    capability: str | None = None


@dataclass
class Outcome:
    state: dict[str, Any] | None
    commands: list[Command] = field(default_factory=list)
    changed: bool = False


@dataclass(frozen=True)
class StartRequest:
    workflow: str
    instance_id: str
    input: Any
    cause: str
    parent: dict[str, Any] | None = None
    depth: int = 0


class StartError(ValueError):
    """A `workflow.start` event that cannot start anything; str() says why."""


def start_request(event: Event, workflows: dict[str, Workflow]) -> StartRequest:
    """Read a `workflow.start` event; raise StartError."""
    payload = event.payload
    name = payload.get("workflow")
    if name not in workflows:
        known = ", ".join(sorted(workflows)) or "none"
        raise StartError(f"no workflow named {name!r} (workflows: {known})")
    instance_id = payload.get("instance_id") or event.correlation_id or event.event_id
    if not isinstance(instance_id, str) or not 0 < len(instance_id) <= MAX_INSTANCE_ID:
        raise StartError(f"instance_id must be a string of 1 to {MAX_INSTANCE_ID} characters")
    parent = payload.get("parent")
    if parent is not None and not (isinstance(parent, dict)
                                   and isinstance(parent.get("instance_id"), str)):
        raise StartError("parent must be an object with an instance_id")
    depth = payload.get("depth", 0)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise StartError(f"depth must be a whole number from 0 to {MAX_DEPTH}")
    return StartRequest(name, instance_id, payload.get("input", {}), event.event_id, parent,
                        depth)


def trigger_start(event: Event, workflow: Workflow) -> Event:
    """The `workflow.start` an event of a workflow's trigger type stands for."""
    instance_id = f"{workflow.name}-{event.correlation_id or event.event_id}"
    return new_event(START, {"workflow": workflow.name, "instance_id": instance_id,
                             "input": event.payload},
                     source=SOURCE, correlation_id=instance_id, causation_id=event.event_id,
                     event_id=make_id("trigger", workflow.name, event.source, event.event_id),
                     timestamp=event.timestamp,
                     metadata={"trigger_correlation_id": event.correlation_id}
                     if event.correlation_id else None)


def target_of(event: Event) -> str | None:
    """The instance an event concerns, if it can concern one."""
    payload = event.payload
    if event.event_type in (START, CANCEL, TICK):
        target = payload.get("instance_id") or event.correlation_id
        if event.event_type == START and not target:
            target = event.event_id
        return target if isinstance(target, str) else None
    if event.event_type in END_TYPES.values():
        parent = payload.get("parent")
        return parent.get("instance_id") if isinstance(parent, dict) else None
    if event.source.startswith("agent.") and event.causation_id:
        return event.correlation_id
    return None


class StepFailure(Exception):
    """A step that cannot go on (bad input for it, a condition that fails)."""


class Orchestration:
    """Runs instances of the given workflows."""

    def __init__(self, workflows: Iterable[Workflow]) -> None:
        self.workflows = {w.name: w for w in workflows}

    def start(self, request: StartRequest, now: float) -> Outcome:
        workflow = self.workflows[request.workflow]
        state: dict[str, Any] = {
            "instance_id": request.instance_id, "workflow": workflow.name,
            "status": "running", "input": request.input, "depth": request.depth,
            "parent": request.parent, "cause": request.cause, "started_at": now,
            "ended_at": None, "index": 0, "phase": None, "results": {},
            "previous": request.input, "done": [], "tasks": {}, "children": {},
            "compensation": None, "error": None, "output": None, "retain_until": None,
            "history": [], "timings": {},
        }
        run = _Run(self, state, now)
        run.note("started", input_keys=sorted(request.input)
                 if isinstance(request.input, dict) else None)
        run.emit(STARTED, {"instance_id": request.instance_id, "workflow": workflow.name,
                           "depth": request.depth, "parent": request.parent}, "started")
        run.advance()
        return Outcome(run.state, run.commands, True)

    def on_event(self, state: dict[str, Any], event: Event, now: float) -> Outcome:
        if event.event_type == TICK:
            tick = event.payload.get("now")
            return self.on_deadline(state, tick if isinstance(tick, int | float) else now)
        if state["status"] not in RUNNING:
            return Outcome(state)
        run = _Run(self, _copy(state), now)
        run.on_event(event)
        return run.outcome(state)

    def on_deadline(self, state: dict[str, Any], now: float) -> Outcome:
        if state["status"] not in RUNNING:
            due = state.get("retain_until")
            if due is not None and due <= now:
                return Outcome(None, [], True)
            return Outcome(state)
        run = _Run(self, _copy(state), now)
        run.on_deadline()
        return run.outcome(state)

    @staticmethod
    def deadline(state: dict[str, Any] | None) -> float | None:
        """When `on_deadline` has something to do: a timeout, a retry, or forgetting."""
        if state is None:
            return None
        if state["status"] not in RUNNING:
            return state.get("retain_until")
        times = [t["retry_at"] if t["status"] == "retry" else t["deadline"]
                 for t in state["tasks"].values() if t["status"] in ("sent", "retry")]
        return min(times) if times else None


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = orjson.loads(orjson.dumps(state))
    return copied


def _result_of(task: dict[str, Any]) -> Any:
    """A task's result: its one result event's payload, a list of several, or None."""
    values = list(task["events"].values())
    if not values:
        return None
    return values[0] if len(values) == 1 else values


class _Run:
    """One transition of one instance: mutates its copy of the state, collects commands."""

    def __init__(self, machine: Orchestration, state: dict[str, Any], now: float) -> None:
        self.state = state
        self.now = now
        self.commands: list[Command] = []
        self.workflow = machine.workflows[state["workflow"]]

    def outcome(self, before: dict[str, Any]) -> Outcome:
        return Outcome(self.state, self.commands,
                       bool(self.commands) or self.state != before)

    # --- helpers ------------------------------------------------------------------------

    @property
    def step(self) -> Step:
        index: int = self.state["index"]
        return self.workflow.steps[index]

    def note(self, what: str, step: str | None = None, **detail: Any) -> None:
        entry = {"at": self.now, "what": what, **({"step": step} if step else {}),
                 **{k: v for k, v in detail.items() if v is not None}}
        history = self.state["history"]
        history.append(entry)
        if len(history) > HISTORY_LIMIT:
            del history[1:len(history) - HISTORY_LIMIT + 1]  # keep the first entry

    def scope(self, **extra: Any) -> dict[str, Any]:
        st = self.state
        return {"input": st["input"], "results": st["results"], "previous": st["previous"],
                "depth": st["depth"], **extra}

    def emit(self, event_type: str, payload: dict[str, Any], suffix: str, key: str | None = None,
             correlation: str | None = None) -> None:
        st = self.state
        event = new_event(event_type, payload, source=SOURCE,
                          correlation_id=correlation or st["instance_id"],
                          causation_id=st["cause"], event_id=make_id(st["instance_id"], suffix),
                          timestamp=iso_from_ts(self.now))
        self.commands.append(Command(event, key or st["instance_id"]))

    def action_id(self, task: dict[str, Any]) -> str:
        kind = "compensation" if task["kind"] == "compensation" else "step"
        return make_id(self.state["instance_id"], kind, task["step"], task["key"],
                       task["attempt"])

    def send(self, task: dict[str, Any]) -> None:
        st, workflow = self.state, self.workflow
        task.update(status="sent", sent_at=self.now, deadline=self.now + self.step_of(task)
                    .timeout, events={}, started_at=None)
        info = {"name": workflow.name, "instance_id": st["instance_id"], "step": task["step"],
                "task": task["key"], "attempt": task["attempt"], "depth": st["depth"],
                "compensation": task["kind"] == "compensation"}
        step = self.step_of(task)
        if step.strategy == "recursive" and task["key"] == "solve":
            info.update(max_depth=step.max_depth, may_decompose=st["depth"] < step.max_depth)
        event = new_event(
            "action.requested",
            {"action": task["action"], "capability": task["capability"],
             "pattern_id": f"workflow:{workflow.name}", "priority": 1,
             "trigger": {"event_ids": [st["cause"]], "event_type": START,
                         "event_types": [START]},
             "data": task["data"], "workflow": info},
            source=ENGINE_SOURCE, correlation_id=st["instance_id"], causation_id=st["cause"],
            event_id=task["action_id"], timestamp=iso_from_ts(self.now),
            metadata={"emitted_at": iso_from_ts(self.now)})
        self.commands.append(Command(event, st["instance_id"], task["capability"]))
        timing = self.state["timings"].setdefault(task["step"], {})
        counter = "compensation_attempts" if task["kind"] == "compensation" else "attempts"
        timing[counter] = timing.get(counter, 0) + 1

    def cancel_task(self, task: dict[str, Any], reason: str) -> None:
        """Tell the task's workers to drop the attempt in flight."""
        if task["status"] != "sent":
            return
        event = new_event(ACTION_CANCEL, {"action_id": task["action_id"],
                                          "action": task["action"],
                                          "capability": task["capability"],
                                          "instance_id": self.state["instance_id"],
                                          "step": task["step"], "reason": reason},
                          source=ENGINE_SOURCE, correlation_id=self.state["instance_id"],
                          causation_id=task["action_id"],
                          event_id=make_id(task["action_id"], "cancel"),
                          timestamp=iso_from_ts(self.now))
        self.commands.append(Command(event, self.state["instance_id"], task["capability"]))

    def step_of(self, task: dict[str, Any]) -> Step:
        step = self.workflow.step(task["step"])
        assert step is not None
        return step

    def new_task(self, key: str, call: Call, data: Any, kind: str = "step",
                 step: Step | None = None) -> None:
        step = step or self.step
        task = {"key": key, "step": step.name, "kind": kind, "capability": call.capability,
                "action": call.action, "data": data, "attempt": 1, "status": "sent",
                "events": {}, "result": None, "error": None}
        task["action_id"] = self.action_id(task)
        self.state["tasks"][key] = task
        self.send(task)

    def data(self, call: Call, default: Any, **extra: Any) -> Any:
        if call.params is None:
            return default
        return resolve(call.params, self.scope(**extra))

    # --- moving through the steps -------------------------------------------------------

    def advance(self) -> None:
        """Begin steps until one is in flight or the instance ends."""
        st, steps = self.state, self.workflow.steps
        while st["status"] == "running" and st["phase"] is None:
            if st["index"] >= len(steps):
                self.finish("completed")
                return
            step = self.step
            st["timings"][step.name] = {"started_at": self.now, "ended_at": None,
                                        "status": "running", "attempts": 0}
            self.note("step_started", step.name, strategy=step.strategy)
            try:
                pending, value = self.begin(step)
            except StepFailure as exc:
                self.step_failed(step, str(exc))
                continue
            if not pending:
                self.step_done(step, value)

    def begin(self, step: Step) -> tuple[bool, Any]:
        """Send a step's first tasks; (True, None) if in flight, (False, value) if done."""
        st = self.state
        previous = st["previous"]
        if step.strategy == "sequential":
            assert step.call is not None
            st["phase"] = "call"
            self.new_task("0", step.call, self.data(step.call, previous))
        elif step.strategy == "parallel":
            st["phase"] = "call"
            for index, branch in enumerate(step.branches):
                self.new_task(str(index), branch.call, self.data(branch.call, previous))
        elif step.strategy == "conditional":
            return self.route(step)
        elif step.strategy == "map_reduce":
            assert step.over is not None and step.call is not None
            items = resolve(step.over, self.scope())
            if not isinstance(items, list):
                raise StepFailure(f"over: {step.over.text} is not a list")
            if len(items) > step.max_items:
                raise StepFailure(f"over: {len(items)} items, more than max_items "
                                  f"({step.max_items})")
            if not items:
                return self.after_map(step, [])
            st["phase"] = "map"
            for index, item in enumerate(items):
                self.new_task(str(index), step.call,
                              self.data(step.call, item, item=item, index=index))
        elif step.strategy == "recursive":
            assert step.call is not None
            st["phase"] = "solve"
            self.new_task("solve", step.call, self.data(step.call, previous))
        else:  # workflow
            if st["depth"] >= MAX_DEPTH:
                raise StepFailure(f"instances nest deeper than {MAX_DEPTH}")
            child_input = previous if step.params is None else resolve(step.params,
                                                                       self.scope())
            st["phase"] = "children"
            self.start_children(step, step.workflow or "", [child_input])
        return True, None

    def route(self, step: Step) -> tuple[bool, Any]:
        variables = {"input": self.state["input"], "results": self.state["results"],
                     "previous": self.state["previous"]}
        for branch in step.branches:
            assert branch.when is not None
            try:
                chosen = branch.when.evaluate(variables)
            except ConditionRuntimeError as exc:
                raise StepFailure(f"branch {branch.name!r}: {exc}") from None
            if chosen:
                self.note("branch_chosen", step.name, branch=branch.name)
                self.state["phase"] = "call"
                self.new_task("0", branch.call, self.data(branch.call, self.state["previous"]))
                return True, None
        if step.default is None:
            self.note("no_branch_matched", step.name)
            return False, None
        self.note("branch_chosen", step.name, branch="default")
        self.state["phase"] = "call"
        self.new_task("0", step.default, self.data(step.default, self.state["previous"]))
        return True, None

    def after_map(self, step: Step, mapped: list[Any]) -> tuple[bool, Any]:
        if step.reduce is None:
            return False, mapped
        self.state["phase"] = "reduce"
        self.state["tasks"] = {}
        self.new_task("reduce", step.reduce, self.data(step.reduce, mapped, previous=mapped))
        return True, None

    def start_children(self, step: Step, workflow: str, inputs: list[Any]) -> None:
        st = self.state
        st["children"] = {}
        for index, child_input in enumerate(inputs):
            child = f"{st['instance_id']}:{step.name}:{index}"
            st["children"][str(index)] = {"instance_id": child, "status": "running",
                                          "output": None}
            self.emit(START, {"workflow": workflow, "instance_id": child, "input": child_input,
                              "depth": st["depth"] + 1,
                              "parent": {"instance_id": st["instance_id"], "step": step.name,
                                         "key": str(index)}},
                      f"child/{step.name}/{index}", key=child, correlation=child)
        self.note("children_started", step.name, count=len(inputs), workflow=workflow)

    def step_done(self, step: Step, value: Any) -> None:
        st = self.state
        st["results"][step.name] = value
        st["previous"] = value
        st["done"].append(step.name)
        st["timings"][step.name].update(ended_at=self.now, status="completed")
        self.note("step_completed", step.name)
        st.update(tasks={}, children={}, phase=None, index=st["index"] + 1)

    def step_failed(self, step: Step, reason: str) -> None:
        """Stop the step's work in flight and apply its error policy."""
        st = self.state
        for task in st["tasks"].values():
            self.cancel_task(task, f"step {step.name} failed")
        self.cancel_children(f"step {step.name} failed")
        st["timings"][step.name].update(ended_at=self.now, status="failed", error=reason)
        self.note("step_failed", step.name, reason=reason, on_error=step.on_error)
        st.update(tasks={}, children={}, phase=None)
        if step.on_error == "skip":
            st["results"][step.name] = None
            st["timings"][step.name]["status"] = "skipped"
            st["index"] += 1
            return
        st["error"] = {"step": step.name, "reason": reason}
        if step.on_error == "fail":
            self.finish("failed")
        else:
            self.compensate("compensated")

    def cancel_children(self, reason: str) -> None:
        for key, child in self.state["children"].items():
            if child["status"] == "running":
                self.emit(CANCEL, {"instance_id": child["instance_id"], "reason": reason},
                          f"cancel-child/{self.state['index']}/{key}", key=child["instance_id"],
                          correlation=child["instance_id"])

    # --- compensation -------------------------------------------------------------------

    def compensate(self, final: str) -> None:
        """Undo the completed steps that have a compensation, the latest first."""
        st = self.state
        queue = [name for name in reversed(st["done"])
                 if (s := self.workflow.step(name)) is not None and s.compensation]
        st["status"] = "compensating"
        st["compensation"] = {"queue": queue, "final": final, "failed": [], "done": []}
        self.note("compensating", steps=queue)
        self.next_compensation()

    def next_compensation(self) -> None:
        comp = self.state["compensation"]
        if not comp["queue"]:
            self.finish("compensation_failed" if comp["failed"] else comp["final"])
            return
        step = self.workflow.step(comp["queue"][0])
        assert step is not None and step.compensation is not None
        result = self.state["results"].get(step.name)
        self.state["tasks"] = {}
        self.new_task(f"compensate:{step.name}", step.compensation,
                      self.data(step.compensation, result, result=result),
                      kind="compensation", step=step)

    def compensation_ended(self, task: dict[str, Any], error: str | None) -> None:
        comp = self.state["compensation"]
        name = comp["queue"].pop(0)
        timing = self.state["timings"].setdefault(name, {})
        timing["compensation"] = "failed" if error else "completed"
        if error:
            comp["failed"].append({"step": name, "reason": error})
            self.note("compensation_failed", name, reason=error)
        else:
            comp["done"].append(name)
            self.note("compensated", name)
        self.next_compensation()

    def finish(self, status: str) -> None:
        st, workflow = self.state, self.workflow
        st.update(status=status, ended_at=self.now, retain_until=self.now + workflow.retention,
                  tasks={}, children={}, phase=None)
        if status == "completed":
            st["output"] = (st["previous"] if workflow.output is None
                            else resolve(workflow.output, self.scope()))
        self.note("ended", status=status)
        parent = st["parent"]
        payload = {"instance_id": st["instance_id"], "workflow": workflow.name,
                   "status": status, "output": st["output"], "error": st["error"],
                   "duration_seconds": round(self.now - st["started_at"], 3),
                   "depth": st["depth"], "parent": parent}
        if st["compensation"] is not None:
            payload["compensated_steps"] = st["compensation"]["done"]
        target = parent["instance_id"] if parent else None
        self.emit(END_TYPES[status], payload, "end", key=target, correlation=target)

    # --- input --------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        st = self.state
        if event.event_type == CANCEL:
            self.cancel(event)
            return
        if event.event_type in END_TYPES.values():
            self.child_ended(event)
            return
        action_id = event.causation_id
        if event.event_type in ("action.started", "action.completed", "action.failed"):
            action_id = event.payload.get("action_id") or action_id
        task = next((t for t in st["tasks"].values() if t["action_id"] == action_id), None)
        if task is None or task["status"] not in ("sent", "retry"):
            return
        if event.event_type == "action.started":
            if task["status"] == "retry":  # sent before a crash, then scheduled again
                task["status"] = "sent"
            task["started_at"] = self.now
        elif event.event_type == "action.completed":
            self.task_done(task)
        elif event.event_type == "action.failed":
            error = event.payload.get("error") or event.payload.get("reason") or "failed"
            # A refusal, or no handler, would fail again: no retry.
            final = event.payload.get("reason") in NOT_RETRIED
            self.task_failed(task, str(error), retry=not final)
        elif event.event_id not in task["events"]:
            task["events"][event.event_id] = event.payload

    def cancel(self, event: Event) -> None:
        st = self.state
        reason = str(event.payload.get("reason") or "cancelled")
        if st["status"] == "compensating":
            self.note("cancel_ignored", reason="already compensating")
            return
        step = self.step if st["index"] < len(self.workflow.steps) else None
        for task in st["tasks"].values():
            self.cancel_task(task, reason)
        self.cancel_children(reason)
        if step is not None and step.name in st["timings"]:
            st["timings"][step.name].update(ended_at=self.now, status="cancelled")
        self.note("cancel_requested", step.name if step else None, reason=reason)
        st.update(tasks={}, children={}, phase=None, error={"reason": f"cancelled: {reason}"})
        wants = event.payload.get("compensate")
        if wants is None:
            wants = self.workflow.strategy == "saga"
        if wants:
            self.compensate("cancelled")
        else:
            self.finish("cancelled")

    def child_ended(self, event: Event) -> None:
        st = self.state
        parent = event.payload.get("parent") or {}
        child = st["children"].get(str(parent.get("key")))
        if (st["status"] != "running" or parent.get("step") != self.step.name or child is None
                or child["instance_id"] != event.payload.get("instance_id")
                or child["status"] != "running"):
            return
        child.update(status=event.payload.get("status"), output=event.payload.get("output"))
        if any(c["status"] == "running" for c in st["children"].values()):
            return
        step = self.step
        failed = [c for c in st["children"].values() if c["status"] != "completed"]
        if failed:
            self.step_failed(step, f"sub-instance {failed[0]['instance_id']} ended "
                                   f"{failed[0]['status']}")
            self.advance()
            return
        outputs = [st["children"][str(i)]["output"] for i in range(len(st["children"]))]
        if step.strategy == "workflow":
            self.step_done(step, outputs[0])
        else:  # recursive: combine the subtasks' results
            assert step.combine is not None
            st["phase"] = "combine"
            st["children"] = {}
            st["tasks"] = {}
            self.new_task("combine", step.combine,
                          self.data(step.combine, outputs, previous=outputs))
            return
        self.advance()

    def task_done(self, task: dict[str, Any]) -> None:
        st = self.state
        task.update(status="done", result=_result_of(task), events={})
        if task["kind"] == "compensation":
            self.compensation_ended(task, None)
            return
        if any(t["status"] != "done" for t in st["tasks"].values()):
            return
        step, phase, tasks = self.step, st["phase"], st["tasks"]
        if phase == "call":
            value = ([tasks[str(i)]["result"] for i in range(len(tasks))]
                     if step.strategy == "parallel" else tasks["0"]["result"])
            self.step_done(step, value)
        elif phase == "map":
            pending, value = self.after_map(step, [tasks[str(i)]["result"]
                                                   for i in range(len(tasks))])
            if pending:
                return
            self.step_done(step, value)
        elif phase in ("reduce", "combine"):
            self.step_done(step, task["result"])
        elif phase == "solve":
            self.solved(step, task["result"])
        self.advance()

    def solved(self, step: Step, result: Any) -> None:
        """A recursive step's answer: a result, or subtasks for instances of this workflow."""
        subtasks = result.get("subtasks") if isinstance(result, dict) else None
        if not isinstance(subtasks, list) or not subtasks:
            self.step_done(step, result)
            return
        if self.state["depth"] >= step.max_depth:
            self.step_failed(step, f"returned subtasks at the depth limit ({step.max_depth})")
        elif len(subtasks) > step.max_items:
            self.step_failed(step, f"{len(subtasks)} subtasks, more than max_items "
                                   f"({step.max_items})")
        else:
            self.state["phase"] = "children"
            self.state["tasks"] = {}
            self.start_children(step, self.workflow.name, subtasks)

    def task_failed(self, task: dict[str, Any], reason: str, timed_out: bool = False,
                    retry: bool = True) -> None:
        step = self.step_of(task)
        if timed_out:
            self.cancel_task(task, reason)
        if retry and task["attempt"] <= step.retry.retries:
            delay = step.retry.delay(task["attempt"])
            self.note("retry_scheduled", step.name, task=task["key"], attempt=task["attempt"],
                      reason=reason, delay=delay)
            task.update(attempt=task["attempt"] + 1, status="retry",
                        retry_at=self.now + delay, events={})
            task["action_id"] = self.action_id(task)
            return
        task.update(status="failed", error=reason)
        if task["kind"] == "compensation":
            self.compensation_ended(task, reason)
            return
        label = "" if task["key"] in ("0", "solve") else f"{task['key']}: "
        self.step_failed(step, label + reason)
        self.advance()

    def on_deadline(self) -> None:
        for key in sorted(self.state["tasks"]):
            task = self.state["tasks"].get(key)
            if task is None or self.state["status"] not in RUNNING:
                continue
            if task["status"] == "retry" and task["retry_at"] <= self.now:
                self.note("retry", task["step"], task=key, attempt=task["attempt"])
                self.send(task)
            elif task["status"] == "sent" and task["deadline"] <= self.now:
                timeout = self.step_of(task).timeout
                self.task_failed(task, f"timed out after {timeout:g}s", timed_out=True)
