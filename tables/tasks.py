"""Task progress by task id: the `task-progress` table, forgotten like correlations.

Each entry is a small snapshot: the task's latest state and its updates in order, at most
`MAX_UPDATES` of them (the first, then the latest; `dropped` counts the ones left out).
"""

from __future__ import annotations

from typing import Any

import faust

from choreo.envelope import Event
from tables.expiring import ExpiringTable, expiring_table

MAX_UPDATES = 100
FINAL = ("completed", "failed")


def task_progress_table(app: faust.App, horizon: float, partitions: int) -> ExpiringTable:
    return expiring_table(app, "task-progress", horizon, partitions,
                          help="task id -> [event_ts, partition, progress snapshot] (orjson)")


def add_progress(snapshot: dict[str, Any] | None, event: Event) -> dict[str, Any] | None:
    """The snapshot with one more task.progress event; None if it changes nothing."""
    p = event.payload
    snapshot = snapshot or {"task_id": p["task_id"], "updates": [], "dropped": 0}
    updates: list[dict[str, Any]] = snapshot["updates"]
    if any(u["event_id"] == event.event_id for u in updates):
        return None  # the same event again
    update = {"seq": p.get("seq", 0), "state": p["state"], "message": p.get("message", ""),
              "timestamp": event.timestamp, "event_id": event.event_id}
    if "data" in p:
        update["data"] = p["data"]
    updates.append(update)
    updates.sort(key=lambda u: (u["seq"], u["timestamp"]))
    if len(updates) > MAX_UPDATES:
        del updates[1]  # keep the first and the latest
        snapshot["dropped"] += 1
    last = updates[-1]
    final = next((u for u in reversed(updates) if u["state"] in FINAL), None)
    snapshot.update(
        state=(final or last)["state"], capability=p.get("capability"),
        action=p.get("action"), correlation_id=event.correlation_id,
        agent_id=p.get("agent_id", snapshot.get("agent_id")), updated_at=last["timestamp"])
    return snapshot
