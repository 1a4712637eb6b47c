"""The registry fold and the liveness rule: announce, heartbeats, verdicts, restarts, leaves."""

from __future__ import annotations

import os

import pytest

from choreo.registry import (
    AgentIdentity,
    Descriptor,
    Registry,
    default_agent_id,
    heartbeat_record,
    parse_record,
    status_record,
    transition_event_id,
)

D = Descriptor("a1", ("cap",), ("gpu",), 2.0, "1.0", 1.0, "pool", {"cap": "capability.cap.a1"})


def beat(registry: Registry, seq: int, at: float, kind: str = "heartbeat",
         incarnation: str = "i1") -> None:
    registry.apply("a1", heartbeat_record(kind, D, incarnation, seq, at), at)


def verdict(registry: Registry, now: float) -> list[tuple[str, str]]:
    """Publish the owner's verdicts as the owner does (applied back), return them."""
    out = []
    for state, status, reason in registry.transitions(list(registry.agents), now):
        registry.apply(state.descriptor.agent_id, status_record(state, status, reason, now), now)
        out.append((status, reason))
    return out


def test_announce_is_up_once_then_missed_heartbeats_make_it_down_once():
    r = Registry(missed_heartbeats=3)
    beat(r, 0, 100.0, "announce")
    assert verdict(r, 100.1) == [("up", "")]
    assert verdict(r, 100.2) == []
    beat(r, 1, 101.0)
    beat(r, 2, 102.0)
    assert verdict(r, 104.9) == []  # 2.9 s since the last beat: 3 x 1 s not yet missed
    [(status, reason)] = verdict(r, 105.1)
    assert status == "down" and "no heartbeat for 3.1s" in reason
    assert verdict(r, 200.0) == []  # said once
    assert not r.agents["a1"].routable(105.1, 3)


def test_a_heartbeat_after_a_down_verdict_brings_it_up_again():
    r = Registry(missed_heartbeats=2)
    beat(r, 0, 0.0, "announce")
    verdict(r, 0.0)
    assert verdict(r, 5.0)[0][0] == "down"
    beat(r, 1, 6.0)  # it was only paused
    assert r.agents["a1"].routable(6.0, 2)
    assert verdict(r, 6.0) == [("up", "")]


def test_a_down_verdict_covering_the_latest_heartbeat_wins_over_the_local_clock():
    r = Registry(missed_heartbeats=3)
    beat(r, 4, 10.0)
    state = r.agents["a1"]
    r.apply("a1", status_record(state, "down", "owner's clock", 11.0), 11.0)
    assert not r.agents["a1"].routable(10.5, 3)


def test_leave_is_down_at_once():
    r = Registry(missed_heartbeats=3)
    beat(r, 0, 0.0, "announce")
    verdict(r, 0.0)
    beat(r, 1, 0.5, "leave")
    assert verdict(r, 0.6) == [("down", "left")]


def test_a_restart_is_a_new_incarnation_that_starts_afresh():
    r = Registry(missed_heartbeats=3)
    beat(r, 40, 0.0)
    verdict(r, 0.0)
    verdict(r, 10.0)
    assert r.agents["a1"].status == "down"
    beat(r, 0, 11.0, "announce", incarnation="i2")  # seq starts at 0 again
    assert r.agents["a1"].routable(11.0, 3)
    assert verdict(r, 11.0) == [("up", "")]


def test_the_fold_is_idempotent_and_ignores_stale_records():
    r = Registry(missed_heartbeats=3)
    beat(r, 5, 50.0)
    beat(r, 3, 30.0)  # out of order
    beat(r, 5, 50.0)  # again
    assert (r.agents["a1"].seq, r.agents["a1"].last_seen) == (5, 50.0)
    old = status_record(r.agents["a1"], "down", "x", 51.0)
    beat(r, 6, 52.0)
    r.apply("a1", old, 53.0)  # a verdict on seq 5 read after seq 6: does not apply
    assert r.agents["a1"].routable(53.0, 3)


def test_a_status_record_alone_rebuilds_the_agent_after_compaction():
    r = Registry(missed_heartbeats=3)
    beat(r, 7, 70.0)
    record = status_record(r.agents["a1"], "up", "", 70.5)
    fresh = Registry(missed_heartbeats=3)
    fresh.apply("a1", parse_record(__import__("orjson").dumps(record)), 70.5)
    state = fresh.agents["a1"]
    assert (state.descriptor, state.seq, state.last_seen, state.status) == (D, 7, 70.0, "up")
    fresh.apply("a1", None, 80.0)  # tombstone
    assert "a1" not in fresh.agents


def test_transition_ids_are_deterministic():
    r = Registry(missed_heartbeats=3)
    beat(r, 2, 0.0)
    state = r.agents["a1"]
    assert transition_event_id(state, "down") == transition_event_id(state, "down")
    assert transition_event_id(state, "down") != transition_event_id(state, "up")


def test_counts_by_capability_and_status():
    r = Registry(missed_heartbeats=3)
    beat(r, 0, 0.0)
    assert r.counts(1.0) == {("cap", "up"): 1}
    assert r.counts(10.0) == {("cap", "down"): 1}


def test_identity_from_the_environment():
    ident = AgentIdentity.from_env({"CHOREO_AGENT_ID": "gpu-1", "CHOREO_AGENT_TAGS": "gpu, big",
                                    "CHOREO_AGENT_WEIGHT": "3"})
    assert (ident.agent_id, ident.tags, ident.weight) == ("gpu-1", ("gpu", "big"), 3.0)
    assert AgentIdentity.from_env({}).agent_id == ""  # host-pid, chosen at start
    assert default_agent_id().endswith(f"-{os.getpid()}")
    with pytest.raises(ValueError, match="CHOREO_AGENT_ID"):
        AgentIdentity.from_env({"CHOREO_AGENT_ID": "a/b"})
    with pytest.raises(ValueError, match="CHOREO_AGENT_WEIGHT"):
        AgentIdentity.from_env({"CHOREO_AGENT_WEIGHT": "0"})
