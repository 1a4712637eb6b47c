"""Drive workflow instances without Kafka: the orchestrator's and the workers' parts in one loop.

`Simulation` keeps each instance's state as JSON (as the table would), routes events as
streams/orchestrate.py does, and plays the workers with the real handler code and the real
lifecycle events of agents/worker.py, de-duplicating action ids as the workers do. The clock
is the test's: `advance(seconds)` fires deadlines as the timer's ticks would.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.worker import Handler, outcome_events, run_handler, started_event
from choreo.envelope import Event, iso_from_ts, new_event
from choreo.workflows.definitions import Workflow
from choreo.workflows.machine import (
    ACTION_CANCEL,
    START,
    TICK,
    Command,
    Orchestration,
    Outcome,
    StartError,
    start_request,
    target_of,
)

T0 = 1_700_000_000.0


@dataclass
class Simulation:
    workflows: tuple[Workflow, ...]
    handlers: Mapping[str, Mapping[str, Handler]]
    now: float = T0
    states: dict[str, dict] = field(default_factory=dict)
    events: deque[Event] = field(default_factory=deque)  # the events topic, not yet read
    actions: deque[Command] = field(default_factory=deque)  # capability topics, not yet read
    sent: list[Command] = field(default_factory=list)  # every command, in order
    handled: Counter = field(default_factory=Counter)  # action id -> handler runs
    cancelled: set[str] = field(default_factory=set)
    hold: set[str] = field(default_factory=set)  # actions the workers leave unanswered
    hold_steps: set[str] = field(default_factory=set)  # and steps
    published: list[Event] = field(default_factory=list)  # every event the loop read

    def __post_init__(self) -> None:
        self.machine = Orchestration(self.workflows)
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()

    # --- input --------------------------------------------------------------------------

    def start(self, workflow: str, instance_id: str, input: Any, **extra: Any) -> None:
        self.events.append(new_event(START, {"workflow": workflow, "instance_id": instance_id,
                                             "input": input, **extra},
                                     source="test", correlation_id=instance_id,
                                     timestamp=iso_from_ts(self.now)))

    def cancel(self, instance_id: str, **extra: Any) -> None:
        self.events.append(new_event("workflow.cancel", {"instance_id": instance_id, **extra},
                                     source="test", correlation_id=instance_id))

    # --- the orchestrator's part --------------------------------------------------------

    def deliver(self, event: Event) -> Outcome | None:
        """Apply one event as the agent would; returns the outcome (None: not for us)."""
        self.published.append(event)
        target = target_of(event)
        if target is None:
            return None
        state = self.states.get(target)
        if event.event_type == START:
            if state is not None:
                return None
            try:
                outcome = self.machine.start(start_request(event, self.machine.workflows),
                                             self.now)
            except StartError:
                return None
        elif state is None:
            return None
        else:
            outcome = self.machine.on_event(state, event, self.now)
        self.apply(target, outcome)
        return outcome

    def apply(self, target: str, outcome: Outcome) -> None:
        for command in outcome.commands:
            self.sent.append(command)
            (self.actions if command.capability else self.events).append(command.event)
        if outcome.state is None:
            self.states.pop(target, None)
        elif outcome.changed:
            # Stored as bytes and read back, as the table does.
            self.states[target] = orjson.loads(orjson.dumps(outcome.state))

    # --- the workers' part --------------------------------------------------------------

    def work(self, action: Event) -> None:
        if action.event_type == ACTION_CANCEL:
            self.cancelled.add(action.payload["action_id"])
            return
        name = action.payload["action"]
        if (action.event_id in self.cancelled or name in self.hold
                or action.payload["workflow"]["step"] in self.hold_steps):
            return
        self.handled[action.event_id] += 1
        if self.handled[action.event_id] > 1:
            return  # the workers' de-duplication
        capability = action.payload["capability"]
        handler = self.handlers.get(capability, {}).get(name)
        attempt = self.loop.run_until_complete(run_handler(handler, action, 30.0))
        self.events.append(started_event(action, capability))
        self.events.extend(outcome_events(action, capability, attempt.results, attempt.error,
                                          0.0, extra={"attempts": 1}))

    def run(self, limit: int = 10_000) -> None:
        """Read events and actions until both topics are drained."""
        for _ in range(limit):
            if self.events:
                self.deliver(self.events.popleft())
            elif self.actions:
                self.work(self.actions.popleft())
            else:
                return
        raise AssertionError("the simulation did not settle")

    def advance(self, seconds: float) -> None:
        """Let time pass; deadlines fire as ticks, as the timer sends them."""
        self.now += seconds
        for target, state in list(self.states.items()):
            due = self.machine.deadline(state)
            if due is not None and due <= self.now:
                self.events.append(new_event(TICK, {"instance_id": target, "now": self.now},
                                             source="test", correlation_id=target))
        self.run()

    # --- looking --------------------------------------------------------------------------

    def status(self, instance_id: str) -> str | None:
        state = self.states.get(instance_id)
        return state["status"] if state else None

    def actions_sent(self, instance_id: str | None = None) -> list[tuple[str, str, int]]:
        """(action, step, attempt) of each action.requested, in the order sent."""
        out = []
        for command in self.sent:
            payload = command.event.payload
            if command.event.event_type != "action.requested":
                continue
            info = payload["workflow"]
            if instance_id is None or info["instance_id"] == instance_id:
                out.append((payload["action"], info["step"], info["attempt"]))
        return out

    def ends(self) -> list[Event]:
        return [c.event for c in self.sent if c.event.event_type.startswith("workflow.")
                and c.event.event_type not in ("workflow.start", "workflow.started",
                                               "workflow.cancel")]
