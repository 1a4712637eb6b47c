"""Comparisons a replay reports: rebuilt pattern state against live, actions against emitted.

Pure: plain data in, plain data out (see streams/replay.py for running the records).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tables.pattern_state import SEP, WM_PREFIX

# --- pattern state ------------------------------------------------------------------------


def canonical_state(table: Mapping[bytes, bytes | None]) -> dict[tuple[str, str], Any]:
    """The pattern-state entries as compared: (pattern id, key) -> what the entry means.

    Left out, because they depend on when the engine read a record rather than on the log:
    each snapshot's `wm` (the highest watermark its key saw, which moves with the wall clock
    while a partition is idle) and the watermark entries themselves.
    """
    out: dict[tuple[str, str], Any] = {}
    for raw_key, raw in table.items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        if raw is None or key.startswith(WM_PREFIX):
            continue
        pattern_id, _, entry_key = key.partition(SEP)
        data = orjson.loads(raw)
        state = dict(data["s"])
        state.pop("wm", None)
        out[(pattern_id, entry_key)] = {"p": data["p"], "o": data["o"], "s": state}
    return out


def watermarks(table: Mapping[bytes, bytes | None]) -> dict[str, list]:
    """The watermark entries: clock -> [watermark, highest offset read]."""
    out = {}
    for raw_key, raw in table.items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        if raw is not None and key.startswith(WM_PREFIX):
            out[key[len(WM_PREFIX):]] = orjson.loads(raw)
    return out


@dataclass
class StateComparison:
    live: int
    rebuilt: int
    only_live: list[tuple[str, str]] = field(default_factory=list)
    only_rebuilt: list[tuple[str, str]] = field(default_factory=list)
    # (entry, differing fields, live value, rebuilt value)
    different: list[tuple[tuple[str, str], list[str], Any, Any]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.only_live or self.only_rebuilt or self.different)

    def as_dict(self) -> dict[str, Any]:
        return {"equal": self.equal, "live_entries": self.live, "rebuilt_entries": self.rebuilt,
                "only_live": [list(k) for k in self.only_live],
                "only_rebuilt": [list(k) for k in self.only_rebuilt],
                "different": [{"entry": list(k), "fields": f, "live": a, "rebuilt": b}
                              for k, f, a, b in self.different]}


def compare_states(live: Mapping[tuple[str, str], Any], rebuilt: Mapping[tuple[str, str], Any],
                   keys: Iterable[str] | None = None) -> StateComparison:
    """Entry by entry; with `keys`, only entries of those keys (a replay of one correlation)."""
    wanted = set(keys) if keys is not None else None

    def pick(entries: Mapping[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
        return {k: v for k, v in entries.items() if wanted is None or k[1] in wanted}

    a, b = pick(live), pick(rebuilt)
    out = StateComparison(live=len(a), rebuilt=len(b))
    out.only_live = sorted(set(a) - set(b))
    out.only_rebuilt = sorted(set(b) - set(a))
    for k in sorted(set(a) & set(b)):
        if a[k] != b[k]:
            out.different.append((k, _differing_paths(a[k], b[k]), a[k], b[k]))
    return out


def _differing_paths(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        paths = []
        for k in sorted(set(a) | set(b), key=str):
            paths += _differing_paths(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return paths
    return [] if a == b else [path or "."]


# --- actions ------------------------------------------------------------------------------

VOLATILE_METADATA = ("emitted_at",)  # wall-clock stamps: differ on every run


def action_view(topic: str, envelope: dict[str, Any]) -> dict[str, Any]:
    """What an action says, without what differs between two sends of the same action."""
    metadata = {k: v for k, v in (envelope.get("metadata") or {}).items()
                if k not in VOLATILE_METADATA}
    return {"topic": topic, "timestamp": envelope.get("timestamp"),
            "payload": envelope.get("payload"), "metadata": metadata}


@dataclass
class ActionDiff:
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[tuple[dict[str, Any], dict[str, Any], list[str]]] = field(default_factory=list)
    same: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "same": self.same,
                "changed": [{"emitted": old, "replayed": new, "fields": fields}
                            for old, new, fields in self.changed]}


def diff_actions(emitted: Iterable[tuple[str, dict]], replayed: Iterable[tuple[str, dict]]
                 ) -> ActionDiff:
    """Match actions by id (deterministic: pattern, key and triggers); compare the rest."""
    before = {e["event_id"]: {"event_id": e["event_id"], **action_view(t, e)}
              for t, e in emitted}
    after = {e["event_id"]: {"event_id": e["event_id"], **action_view(t, e)}
             for t, e in replayed}
    out = ActionDiff()
    out.added = [after[i] for i in sorted(set(after) - set(before), key=lambda i: _order(after[i]))]
    out.removed = [before[i] for i in sorted(set(before) - set(after),
                                             key=lambda i: _order(before[i]))]
    for i in sorted(set(before) & set(after), key=lambda i: _order(after[i])):
        if before[i] == after[i]:
            out.same += 1
        else:
            out.changed.append((before[i], after[i], _differing_paths(before[i], after[i])))
    return out


def _order(view: dict[str, Any]) -> tuple:
    return (view.get("timestamp") or "", view["event_id"])


def describe_action(view: dict[str, Any]) -> str:
    payload = view.get("payload") or {}
    metadata = view.get("metadata") or {}
    key = metadata.get("pattern_key") or metadata.get("correlation_id") or "-"
    trigger = (payload.get("trigger") or {}).get("event_type")
    return (f"{payload.get('action')} @{payload.get('capability')} key {key} "
            f"(pattern {payload.get('pattern_id')}, after {trigger}, {view.get('timestamp')}, "
            f"id {view['event_id'][:8]})")


def triggered_within(envelope: dict[str, Any], event_ids: set[str]) -> bool:
    """Was the action fired by events that are all among `event_ids` (the replayed ones)?"""
    trigger = (envelope.get("payload") or {}).get("trigger") or {}
    ids = trigger.get("event_ids") or []
    return bool(ids) and all(i in event_ids for i in ids)
