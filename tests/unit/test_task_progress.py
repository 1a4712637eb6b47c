"""The task-progress snapshot: updates in order, duplicates dropped, bounded, final state."""

from __future__ import annotations

from choreo.envelope import new_event
from tables.tasks import MAX_UPDATES, add_progress


def progress(seq: int, state: str, message: str = "", at: str = "2026-11-21T10:00:00Z"):  # noqa: ANN201
    return new_event("task.progress", {"task_id": "t1", "state": state, "seq": seq,
                                       "message": message, "capability": "pool",
                                       "action": "work", "agent_id": "a1"},
                     source="agent.pool", correlation_id="c1", event_id=f"e{seq}",
                     timestamp=at)


def test_updates_come_out_in_seq_order_whatever_the_arrival_order():
    snap = None
    for event in (progress(1, "message", "halfway"), progress(0, "working"),
                  progress(2, "completed")):
        snap = add_progress(snap, event) or snap
    assert [u["state"] for u in snap["updates"]] == ["working", "message", "completed"]
    assert snap["state"] == "completed" and snap["agent_id"] == "a1"
    assert snap["correlation_id"] == "c1" and snap["updates"][1]["message"] == "halfway"


def test_the_same_event_twice_changes_nothing():
    snap = add_progress(None, progress(0, "working"))
    assert add_progress(snap, progress(0, "working")) is None


def test_a_chatty_task_keeps_its_first_and_latest_updates():
    snap = add_progress(None, progress(0, "working"))
    for seq in range(1, MAX_UPDATES + 50):
        snap = add_progress(snap, progress(seq, "message", str(seq)))
    assert len(snap["updates"]) == MAX_UPDATES and snap["dropped"] == 50
    assert snap["updates"][0]["state"] == "working"
    assert snap["updates"][-1]["message"] == str(MAX_UPDATES + 49)
