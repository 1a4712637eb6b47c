"""Task progress: `task.progress` events a worker publishes while it handles an action.

Enabled by `[agents] task_progress = true`. The task id is the action's id. A worker
publishes `working` when it starts, `completed` or `failed` when it is done, and a handler
may report messages in between:

```python
from agents.progress import report_progress

async def transcode(action: Event) -> list[Result]:
    await report_progress("fetched the source", {"bytes": 1_234_567})
    ...
```

Each event carries `task_id`, `state`, `seq` (its place in the task's progress), `message`
and `data`; its id derives from the task id and `seq`, so a task handled again after a crash
publishes the same ids. Outside a handler `report_progress` does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from choreo.envelope import Event, new_event

TASK_PROGRESS = "task.progress"
STATES = ("working", "message", "completed", "failed")
_current: ContextVar[TaskProgress | None] = ContextVar("choreo_task_progress", default=None)
_NAMESPACE = uuid.UUID("0b7f2c1a-3d4e-5f60-8172-93a4b5c6d7e8")


def derived_id(action_id: str, suffix: str) -> str:
    """The id of an event a worker publishes for an action: the same on every attempt."""
    return str(uuid.uuid5(_NAMESPACE, f"{action_id}/{suffix}"))


@dataclass
class TaskProgress:
    """The progress of one action being handled; publishes through `send(key, value)`."""

    runtime: Any
    action: Event
    capability: str
    generation: str = ""
    agent_id: str = ""
    seq: int = 0
    enabled: bool = True  # [agents] task_progress

    def event(self, state: str, message: str = "", data: Mapping[str, Any] | None = None
              ) -> Event:
        payload: dict[str, Any] = {
            "task_id": self.action.event_id, "state": state, "seq": self.seq,
            "message": message, "action": self.action.payload.get("action"),
            "capability": self.capability,
        }
        if data:
            payload["data"] = dict(data)
        if self.agent_id:
            payload["agent_id"] = self.agent_id
        self.seq += 1
        return new_event(TASK_PROGRESS, payload, source=f"agent.{self.capability}",
                         correlation_id=self.action.correlation_id,
                         causation_id=self.action.event_id,
                         event_id=derived_id(self.action.event_id,
                                             f"{self.generation}progress/{payload['seq']}"))

    async def publish(self, state: str, message: str = "",
                      data: Mapping[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        event = self.event(state, message, data)
        key = self.action.correlation_id.encode() if self.action.correlation_id else None
        value, topic = event.to_bytes(), self.runtime.events_topic
        await topic.send(key=key, value=value, headers=self.runtime.sign(topic, key, value))

    def enter(self) -> Token:
        return _current.set(self)

    @staticmethod
    def exit(token: Token) -> None:
        _current.reset(token)


async def report_progress(message: str, data: Mapping[str, Any] | None = None) -> None:
    """Publish a `message` progress event for the action being handled (no-op elsewhere)."""
    progress = _current.get()
    if progress is not None:
        await progress.publish("message", message, data)
