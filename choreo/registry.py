"""The agent registry as a pure fold over the agents topic, and the liveness rule.

Workers publish records keyed by agent id to the (compacted) agents topic:

- `announce` when a process starts (a new `incarnation`), then `heartbeat` every
  `interval` seconds (`seq` counts up within an incarnation), and `leave` on a clean stop;
- the liveness owner (the engine worker owning the record's partition) publishes `status`
  verdicts, `up` or `down`, naming the heartbeat `seq` they were judged on.

Every record carries the whole descriptor (capabilities, tags, weight, version, interval,
inboxes), so the latest record of a key is enough to rebuild the agent after compaction.
A tombstone (no value) forgets the agent. Folding the same records again, or old records
after newer ones, changes nothing: the fold is idempotent and ignores stale sequence numbers.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from choreo.durations import positive_duration

AGENT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
KINDS = ("announce", "heartbeat", "leave", "status")
AGENT_UP = "agent.up"
AGENT_DOWN = "agent.down"
REGISTRY_SOURCE = "choreo.registry"
_NAMESPACE = uuid.UUID("5d0c9a51-4e3b-4f0a-8c1e-7a2b9d3c4e5f")


class InvalidAgentRecord(ValueError):
    """A record of the agents topic that is not a registry record."""


@dataclass(frozen=True)
class AgentIdentity:
    """Who this worker process is in the registry (CHOREO_AGENT_* variables)."""

    agent_id: str = ""
    tags: tuple[str, ...] = ()
    weight: float = 1.0
    version: str = "0.1.0"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentIdentity:
        agent_id = env.get("CHOREO_AGENT_ID") or ""  # "": host-pid, chosen at start
        if agent_id and not AGENT_ID.match(agent_id):
            raise ValueError(f"CHOREO_AGENT_ID must be 1 to 64 letters, digits, '_' or '-', "
                             f"got {agent_id!r}")
        tags = tuple(t.strip() for t in (env.get("CHOREO_AGENT_TAGS") or "").split(",")
                     if t.strip())
        raw = env.get("CHOREO_AGENT_WEIGHT") or "1"
        try:
            weight = float(raw)
        except ValueError:
            raise ValueError(f"CHOREO_AGENT_WEIGHT must be a number, got {raw!r}") from None
        if not weight > 0:
            raise ValueError(f"CHOREO_AGENT_WEIGHT must be positive, got {raw!r}")
        return cls(agent_id, tags, weight, env.get("CHOREO_AGENT_VERSION") or cls.version)


def default_agent_id() -> str:
    """host-pid, reduced to the characters a topic name (the agent's inbox) allows."""
    host = re.sub(r"[^A-Za-z0-9_\-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


@dataclass(frozen=True)
class AgentSettings:
    """The `[agents]` table of the choreography file.

    The registry runs only when the file has an `[agents]` table (`enabled = false` turns it
    off) or a capability routes explicitly; otherwise nothing is announced or published.
    """

    enabled: bool = False
    heartbeat_interval: float = 2.0
    missed_heartbeats: int = 3  # heartbeats missed in a row before the agent is down
    forget_after: float = 3600.0  # a down agent leaves the registry this long after its verdict
    # Workers publish task.progress events (working, messages, completed/failed). Off by
    # default: two more events per action through the engine, and a table write each.
    task_progress: bool = False


def parse_agent_settings(raw: object, fail: Any) -> AgentSettings:
    """Validate `[agents]`; report problems through `fail(pattern_id, field, reason)`."""
    if raw is None:
        return AgentSettings()
    if not isinstance(raw, dict):
        fail("-", "agents", "must be a table")
        return AgentSettings()
    values: dict[str, Any] = {"enabled": True}
    for key, value in raw.items():
        name = f"agents.{key}"
        if key in ("heartbeat_interval", "forget_after"):
            seconds = positive_duration(value, name, fail)
            if seconds is not None:
                values[key] = seconds
        elif key in ("task_progress", "enabled"):
            if not isinstance(value, bool):
                fail("-", name, f"must be true or false, got {value!r}")
            else:
                values[key] = value
        elif key == "missed_heartbeats":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail("-", name, f"must be a whole number of at least 1, got {value!r}")
            else:
                values[key] = value
        else:
            fail("-", name, "unknown agents setting; expected one of heartbeat_interval, "
                            "missed_heartbeats, forget_after, task_progress, enabled")
    return replace(AgentSettings(), **values)


@dataclass(frozen=True)
class Descriptor:
    """What an agent says about itself."""

    agent_id: str
    capabilities: tuple[str, ...]
    tags: tuple[str, ...] = ()
    weight: float = 1.0
    version: str = ""
    interval: float = 2.0
    group: str = ""  # the group its inbox offsets are committed to (<app id>.inbox.<agent id>)
    inboxes: Mapping[str, str] = field(default_factory=dict)  # capability -> topic

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["capabilities"], out["tags"] = list(self.capabilities), list(self.tags)
        out["inboxes"] = dict(self.inboxes)
        return out


@dataclass(frozen=True)
class AgentState:
    """The registry's view of one agent."""

    descriptor: Descriptor
    incarnation: str
    seq: int
    last_seen: float  # time of the latest heartbeat (the record's timestamp), seconds
    left: bool = False
    status: str = "unknown"  # the owner's last verdict: unknown, up or down
    status_seq: int = -1
    status_at: float = 0.0
    reason: str = ""

    def judge(self, now: float, missed: int) -> tuple[str, str]:
        """(up | down, reason) by the liveness rule: a leave, or `missed` heartbeats missed."""
        if self.left:
            return "down", "left"
        overdue = now - self.last_seen
        if overdue > self.descriptor.interval * missed:
            return "down", (f"no heartbeat for {overdue:.1f}s ({missed} x "
                            f"{self.descriptor.interval:g}s interval)")
        return "up", ""

    def routable(self, now: float, missed: int) -> bool:
        """Up by the rule, and no down verdict covers its latest heartbeat."""
        if self.status == "down" and self.status_seq >= self.seq:
            return False
        return self.judge(now, missed)[0] == "up"

    def describe(self, now: float, missed: int) -> dict[str, Any]:
        judged, reason = self.judge(now, missed)
        return {**self.descriptor.as_dict(), "incarnation": self.incarnation, "seq": self.seq,
                "last_heartbeat": self.last_seen,
                "seconds_since_heartbeat": round(max(0.0, now - self.last_seen), 3),
                "status": self.status if self.status != "unknown" else judged,
                "healthy": self.routable(now, missed),
                "reason": self.reason if self.status == "down" else reason}


def heartbeat_record(kind: str, descriptor: Descriptor, incarnation: str, seq: int,
                     sent_at: float) -> dict[str, Any]:
    return {"kind": kind, **descriptor.as_dict(), "incarnation": incarnation, "seq": seq,
            "sent_at": sent_at}


def status_record(state: AgentState, status: str, reason: str, at: float) -> dict[str, Any]:
    """A verdict, carrying the whole state so that it alone rebuilds the agent."""
    return {"kind": "status", **state.descriptor.as_dict(), "incarnation": state.incarnation,
            "seq": state.seq, "last_seen": state.last_seen, "left": state.left,
            "status": status, "reason": reason, "sent_at": at}


def parse_record(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidAgentRecord(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        raise InvalidAgentRecord("not an agents-topic record (kind)")
    if not isinstance(data.get("agent_id"), str) or not AGENT_ID.match(data["agent_id"]):
        raise InvalidAgentRecord("agent_id missing or malformed")
    if not isinstance(data.get("seq"), int) or not isinstance(data.get("incarnation"), str):
        raise InvalidAgentRecord("seq and incarnation are required")
    return data


def _descriptor(data: Mapping[str, Any]) -> Descriptor:
    weight = data.get("weight", 1.0)
    interval = data.get("interval", 2.0)
    return Descriptor(
        agent_id=data["agent_id"],
        capabilities=tuple(str(c) for c in data.get("capabilities") or ()),
        tags=tuple(str(t) for t in data.get("tags") or ()),
        weight=float(weight) if isinstance(weight, int | float) and weight > 0 else 1.0,
        version=str(data.get("version", "")),
        interval=float(interval) if isinstance(interval, int | float) and interval > 0 else 2.0,
        group=str(data.get("group", "")),
        inboxes={str(k): str(v) for k, v in (data.get("inboxes") or {}).items()},
    )


@dataclass
class Registry:
    """Agent id -> state, folded from the agents topic."""

    missed_heartbeats: int = 3
    agents: dict[str, AgentState] = field(default_factory=dict)

    def apply(self, agent_id: str, data: Mapping[str, Any] | None, ts: float) -> None:
        """Fold one record (None: a tombstone); `ts` is the record's timestamp, seconds."""
        if data is None:
            self.agents.pop(agent_id, None)
            return
        current = self.agents.get(agent_id)
        incarnation, seq = data["incarnation"], data["seq"]
        # The state of this same incarnation, if it is the one known.
        same = current if current is not None and current.incarnation == incarnation else None
        if data["kind"] == "status":
            if same is not None and seq < same.seq:
                return  # a verdict on an older heartbeat than the one we have
            if current is not None and same is None \
                    and float(data.get("last_seen", 0)) < current.last_seen:
                return  # a verdict on an older incarnation than the one we have
            base = same if same is not None else AgentState(
                _descriptor(data), incarnation, seq, float(data.get("last_seen", ts)),
                bool(data.get("left", False)))
            self.agents[agent_id] = replace(
                base, status=data["status"], status_seq=seq, status_at=ts,
                reason=str(data.get("reason", "")))
            return
        leave = data["kind"] == "leave"
        if same is not None:
            if seq <= same.seq and not (leave and not same.left):
                return  # replayed or out of order
            self.agents[agent_id] = replace(same, descriptor=_descriptor(data),
                                            seq=max(seq, same.seq),
                                            last_seen=max(ts, same.last_seen), left=leave)
        else:
            # A new incarnation starts afresh: the old one's verdict no longer applies.
            self.agents[agent_id] = AgentState(_descriptor(data), incarnation, seq, ts,
                                               left=leave)

    def candidates(self, capability: str, tag: str | None, now: float) -> list[AgentState]:
        """Routable agents of `capability` (with `tag`, if given) that have an inbox for it."""
        return sorted(
            (s for s in self.agents.values()
             if capability in s.descriptor.inboxes
             and (tag is None or tag in s.descriptor.tags)
             and s.routable(now, self.missed_heartbeats)),
            key=lambda s: s.descriptor.agent_id)

    def transitions(self, agent_ids: Iterable[str], now: float) -> list[tuple[AgentState, str,
                                                                              str]]:
        """(state, new status, reason) for each agent whose judged status differs from its
        verdict: the verdicts the owner of these agents must publish."""
        out = []
        for agent_id in sorted(agent_ids):
            state = self.agents.get(agent_id)
            if state is None:
                continue
            judged, reason = state.judge(now, self.missed_heartbeats)
            if judged != state.status:
                out.append((state, judged, reason))
        return out

    def forgettable(self, agent_ids: Iterable[str], now: float, after: float) -> list[str]:
        return sorted(a for a in agent_ids if (s := self.agents.get(a)) is not None
                      and s.status == "down" and now - s.status_at > after)

    def counts(self, now: float) -> dict[tuple[str, str], int]:
        """(capability, up | down) -> number of agents, for the metrics."""
        out: dict[tuple[str, str], int] = {}
        for state in self.agents.values():
            status = "up" if state.routable(now, self.missed_heartbeats) else "down"
            for capability in state.descriptor.capabilities:
                out[(capability, status)] = out.get((capability, status), 0) + 1
        return out


def transition_event_id(state: AgentState, status: str) -> str:
    """The same verdict on the same heartbeat always has the same id (dropped if re-sent)."""
    return str(uuid.uuid5(_NAMESPACE, f"{state.descriptor.agent_id}/{state.incarnation}/"
                                      f"{state.seq}/{status}"))


def transition_payload(state: AgentState, status: str, reason: str, now: float
                       ) -> dict[str, Any]:
    d = state.descriptor
    return {"agent_id": d.agent_id, "status": status, "previous": state.status,
            "reason": reason, "capabilities": list(d.capabilities), "tags": list(d.tags),
            "weight": d.weight, "version": d.version, "incarnation": state.incarnation,
            "last_heartbeat_seq": state.seq,
            "seconds_since_heartbeat": round(max(0.0, now - state.last_seen), 3)}
