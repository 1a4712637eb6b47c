"""Workflow instances: one JSON state per instance in a changelog-backed Faust table.

The table `workflow-instances` is keyed by instance id. An instance lives on the partition
its id hashes to, which is where its events arrive: the orchestrator keys its actions by the
instance id, and the workers key their events by the action's correlation id, the same id.
Each value is `{"p": partition, "s": state}`.

An in-memory index (instance id -> partition, workflow, status, next deadline) lets the agent
skip events of no instance without reading the table, and the timer find due deadlines; it is
rebuilt from the table after each rebalance, so only the table needs to survive a restart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson

from choreo.actions import record_size
from tables.pattern_state import StateTooLarge
from tables.raw import read, tight

TABLE = "workflow-instances"


@dataclass
class Entry:
    partition: int
    workflow: str
    status: str
    deadline: float | None


@dataclass
class WorkflowTable:
    table: faust.Table
    deadline_of: Callable[[dict], float | None]
    index: dict[str, Entry] = field(default_factory=dict)
    stale: bool = True  # the index needs rebuilding (after a rebalance)
    # Instances the last rebuild could not read: (instance id, exception), parked.
    unreadable: list[tuple[str, Exception]] = field(default_factory=list)
    # The largest changelog record a state may make (None: unbounded).
    limit: int | None = None

    @classmethod
    def create(cls, app: faust.App, partitions: int,
               deadline_of: Callable[[dict], float | None]) -> WorkflowTable:
        table = app.Table(TABLE, default=None, partitions=partitions, key_type=bytes,
                          value_type=bytes, help="instance id -> {partition, state}")
        return cls(table, deadline_of)

    def load(self, instance_id: str) -> dict | None:
        raw = read(self.table, instance_id.encode())
        return None if raw is None else orjson.loads(raw)["s"]

    def save(self, instance_id: str, partition: int, state: dict | None) -> None:
        """Store a state (None forgets the instance); call while handling its partition."""
        key = instance_id.encode()
        if state is None:
            if self.index.pop(instance_id, None) is not None or key in self.table:
                del self.table[key]
            return
        self.table[key] = tight(self.encode(instance_id, partition, state))
        self.index[instance_id] = Entry(partition, state["workflow"], state["status"],
                                        self.deadline_of(state))

    def encode(self, instance_id: str, partition: int, state: dict) -> bytes:
        """The stored value; StateTooLarge if its changelog record would exceed `limit`."""
        raw = orjson.dumps({"p": partition, "s": state})
        if self.limit is not None and len(raw) > self.limit - 1024:
            size = record_size(instance_id.encode(), raw, None)
            if size > self.limit:
                raise StateTooLarge(f"the state of workflow instance {instance_id[:200]!r} "
                                    f"would be a {size}-byte changelog record, over the "
                                    f"limit of {self.limit}; the instance keeps its state")
        return raw

    def items(self) -> Iterable[tuple[str, int, dict]]:
        """(instance id, partition, state) of every instance held here."""
        for key, raw in self.table.items():
            if raw is not None:
                data = orjson.loads(raw)
                yield key.decode(), data["p"], data["s"]

    def rebuild(self, active: set[int], home: Callable[[str], int] | None = None) -> int:
        """Index the active partitions' instances. One the code cannot read (corrupt, an
        old format) is parked: left in the table, out of the index (no tick, no event
        reaches it), and listed in `unreadable` for the orchestrator to report; `home`
        gives an instance's partition when its value cannot tell."""
        self.index = {}
        for key, raw in self.table.items():
            if raw is None:
                continue
            instance_id = bytes(key).decode("utf-8", "replace")
            try:
                data = orjson.loads(raw)
                partition, state = data["p"], data["s"]
                if partition in active:
                    self.index[instance_id] = Entry(partition, state["workflow"],
                                                    state["status"], self.deadline_of(state))
            except Exception as exc:  # noqa: BLE001 - this instance's failure alone
                self.index.pop(instance_id, None)
                if home is None or home(instance_id) in active:
                    self.unreadable.append((instance_id, exc))
        self.stale = False
        return len(self.index)

    def park(self, instance_id: str) -> bytes | None:
        """Take an instance off the timer (until an event changes it); its stored value."""
        entry = self.index.get(instance_id)
        if entry is not None:
            entry.deadline = None
        return read(self.table, instance_id.encode())

    def take_unreadable(self) -> list[tuple[str, Exception]]:
        taken, self.unreadable = self.unreadable, []
        return taken

    def due(self, now: float) -> list[str]:
        return sorted((i for i, e in self.index.items()
                       if e.deadline is not None and e.deadline <= now),
                      key=lambda i: self.index[i].deadline or 0.0)

    def counts(self) -> Counter[tuple[str, str]]:
        """Instances held here by (workflow, status)."""
        return Counter((e.workflow, e.status) for e in self.index.values())

    def summaries(self, limit: int = 500) -> list[dict[str, Any]]:
        out = []
        for instance_id, partition, state in self.items():
            out.append({"instance_id": instance_id, "workflow": state["workflow"],
                        "status": state["status"], "started_at": state["started_at"],
                        "ended_at": state["ended_at"], "partition": partition})
            if len(out) >= limit:
                break
        return sorted(out, key=lambda s: s["started_at"], reverse=True)
