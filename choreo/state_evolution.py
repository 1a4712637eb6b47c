"""Stored pattern state meets the choreography file: kept, carried over, adapted or dropped.

Each pattern-state entry records the kind (`k`) and a fingerprint (`f`) of the definition
its snapshot was built for. Whenever an entry is read (a key's state loaded, the deadlines
rebuilt at start and after a rebalance, a deadline firing, the web views) it is judged
against the file:

- its pattern is gone from the file: dropped (`removed`);
- its pattern has another kind now (`event` included): dropped (`kind_changed`);
- it is stored under the id a pattern names in `renamed_from`: it is that pattern's state;
- same kind, same fingerprint: kept. The fingerprint leaves out what only sets deadlines
  or limits, so a changed `window` (sliding threshold, temporal), `count`, `max_interval`,
  `within` or lateness applies to the state in flight, measured from the times it holds;
- same kind, changed definition (`window_changed`, `steps_changed`):
  * threshold with tumbling or hopping windows: the held counters are numbered by the old
    window and hop, and a sliding threshold holds timestamps instead: dropped;
  * temporal: the held events are marked with the positions in the old `all_of`: dropped;
  * sequence: a partial match is kept when its matched events still fit the first steps
    (by event type) and a step is still left to match; otherwise dropped;
  * absence: the pending `after` event is kept if it satisfies the new `after`;
  * events waiting in the reorder buffer are classified again by the new definition and
    the ones it does not care about are let go.

Entries written before the fingerprint existed are judged by their shape: the kind is told
from the state they hold, and the definition is taken as unchanged.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from choreo.matchers.base import KeyedMatcher, _copy, _packed, event_from_snapshot
from choreo.matchers.correlation import TRACKER_ID
from choreo.matchers.kinds import matcher_for
from choreo.matching import PatternStats
from choreo.patterns import (
    AbsencePattern,
    Pattern,
    SequencePattern,
    TemporalPattern,
    ThresholdPattern,
)

REMOVED = "removed"
KIND_CHANGED = "kind_changed"
WINDOW_CHANGED = "window_changed"
STEPS_CHANGED = "steps_changed"


def definition(pattern: Pattern) -> Any:
    """What a kind's stored state is numbered or marked by (changes here may void it)."""
    if isinstance(pattern, ThresholdPattern):
        if pattern.window_kind == "sliding":
            return ["sliding"]  # timestamps: any window and count apply to them
        return [pattern.window_kind, pattern.window, pattern.hop or pattern.window]
    if isinstance(pattern, TemporalPattern):
        return [spec.describe() for spec in pattern.all_of]
    if isinstance(pattern, SequencePattern):
        return [spec.describe() for spec in pattern.steps]
    if isinstance(pattern, AbsencePattern):
        return [pattern.after.describe(), pattern.expect.describe()]
    return []


def fingerprint(pattern: Pattern) -> str:
    """Eight hex digits naming the pattern's `definition`."""
    text = orjson.dumps(definition(pattern), option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.blake2b(text, digest_size=4).hexdigest()


def kind_of_state(state: dict | None) -> str | None:
    """The kind a snapshot without a recorded kind was built by, when its shape tells."""
    core = (state or {}).get("core") or {}
    for field_name, kind in (("recent", "threshold"), ("windows", "threshold"),
                             ("held", "temporal"), ("steps", "sequence"),
                             ("pending", "absence")):
        if field_name in core:
            return kind
    return None


@dataclass(frozen=True)
class Verdict:
    """What becomes of one stored entry under the file."""

    pattern_id: str | None  # the pattern whose state it is now; None when dropped
    state: dict | None  # the snapshot to use (None: dropped)
    reason: str | None = None  # why dropped or adapted; None when kept as stored

    @property
    def dropped(self) -> bool:
        return self.state is None


class StatePlan:
    """The file's keyed patterns, judged against stored entries (see the module doc)."""

    def __init__(self, patterns: Iterable[Pattern],
                 renamed_from: Mapping[str, str] | None = None) -> None:
        patterns = list(patterns)
        self.kinds = {p.id: p.kind for p in patterns}
        self.patterns = {p.id: p for p in patterns if p.kind != "event"}
        self.fingerprints = {pid: fingerprint(p) for pid, p in self.patterns.items()}
        self.old_ids = dict(renamed_from or {})  # new id -> old id
        self.new_ids = {old: new for new, old in self.old_ids.items()}
        self._matchers: dict[str, KeyedMatcher] = {}

    @classmethod
    def of(cls, choreography: Any) -> StatePlan:
        return cls(choreography.patterns, getattr(choreography, "renamed_from", {}))

    def stored(self, pattern_id: str) -> tuple[str | None, str | None]:
        """The kind and fingerprint to store with a pattern's state (None for summaries)."""
        if pattern_id == TRACKER_ID or pattern_id not in self.patterns:
            return None, None
        return self.patterns[pattern_id].kind, self.fingerprints[pattern_id]

    def is_current(self, pattern_id: str) -> bool:
        return pattern_id == TRACKER_ID or pattern_id in self.patterns

    def old_id(self, pattern_id: str) -> str | None:
        """The id a keyed pattern's state may still be stored under (`renamed_from`)."""
        return self.old_ids.get(pattern_id) if pattern_id in self.patterns else None

    def judge(self, stored_id: str, kind: str | None, print_: str | None,
              state: dict | None) -> Verdict:
        """The verdict on an entry stored under `stored_id`, with the kind and fingerprint
        it was stored with (None for entries written before they were recorded)."""
        if stored_id == TRACKER_ID:
            return Verdict(stored_id, state)
        pattern_id = stored_id if stored_id in self.kinds else self.new_ids.get(stored_id)
        if pattern_id is None:
            return Verdict(None, None, REMOVED)
        pattern = self.patterns.get(pattern_id)
        kind = kind or kind_of_state(state) or (pattern.kind if pattern else None)
        if pattern is None or kind != pattern.kind:
            return Verdict(None, None, KIND_CHANGED)
        if state is None:
            return Verdict(pattern_id, None, REMOVED)
        if isinstance(pattern, ThresholdPattern):
            core = state.get("core") or {}
            if ("windows" in core) == (pattern.window_kind == "sliding") and core:
                return Verdict(None, None, WINDOW_CHANGED)  # told by shape, even unprinted
        if print_ is None or print_ == self.fingerprints[pattern_id]:
            return Verdict(pattern_id, state)
        return self._adapt(pattern, state)

    def _adapt(self, pattern: Pattern, state: dict) -> Verdict:
        """Same kind, changed definition: keep what still fits (see the module doc)."""
        if isinstance(pattern, ThresholdPattern):
            if pattern.window_kind != "sliding":
                return Verdict(None, None, WINDOW_CHANGED)
            reason = WINDOW_CHANGED
        elif isinstance(pattern, TemporalPattern):
            return Verdict(None, None, STEPS_CHANGED)
        else:
            reason = STEPS_CHANGED
        matcher = self._matcher(pattern)
        st = _copy(state)
        core = st["core"]
        if isinstance(pattern, SequencePattern) and "steps" in core:
            held = core["steps"]
            if len(held) >= len(pattern.steps) or not all(
                    spec.type_matches(step["event_type"])
                    for spec, step in zip(pattern.steps, held, strict=False)):
                return Verdict(None, None, STEPS_CHANGED)
        if isinstance(pattern, AbsencePattern) and "pending" in core:
            if not matcher.matches(pattern.after, event_from_snapshot(core["pending"])):
                del core["pending"]
        buffered = []
        for item in st["buf"]:
            marks = matcher.classify(event_from_snapshot(item["e"]))
            if marks is not None:
                buffered.append({**item, "m": marks})
        st["buf"] = buffered
        packed = _packed(st)
        return Verdict(pattern.id if packed else None, packed, reason)

    def _matcher(self, pattern: Pattern) -> KeyedMatcher:
        matcher = self._matchers.get(pattern.id)
        if matcher is None:
            matcher = self._matchers[pattern.id] = matcher_for(pattern, PatternStats())
        return matcher


@dataclass
class StateReport:
    """What a restart with the file would do to stored entries (`choreo check --state`)."""

    kept: Counter[str]  # pattern id -> entries kept as stored
    carried: Counter[tuple[str, str]]  # (old id, new id) -> entries a renamed pattern takes
    adapted: Counter[tuple[str, str]]  # (pattern id, reason) -> entries kept in part
    dropped: Counter[tuple[str, str]]  # (stored id, reason) -> entries deleted
    summaries: int = 0  # correlation summaries (always kept)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def lines(self, plan: StatePlan) -> list[str]:
        out = [f"kept: {pid!r} {n}" for pid, n in sorted(self.kept.items())]
        out += [f"carried over by renamed_from: {old!r} -> {new!r} {n}"
                for (old, new), n in sorted(self.carried.items())]
        out += [f"kept what still fits the changed definition: {pid!r} {n} ({reason})"
                for (pid, reason), n in sorted(self.adapted.items())]
        out += [f"dropped: {pid!r} {n} ({reason}{_kinds(plan, pid, reason)})"
                for (pid, reason), n in sorted(self.dropped.items())]
        if self.summaries:
            out.append(f"kept: {self.summaries} correlation summaries")
        limits = sorted({pid for pid in self.kept} | {new for _, new in self.carried}
                        | {pid for pid, _ in self.adapted})
        if limits:
            out.append("the file's window, count, max_interval, within and allowed_lateness "
                       f"apply to the state kept for {', '.join(map(repr, limits))}, "
                       "measured from the event times it holds")
        return out


def _kinds(plan: StatePlan, pattern_id: str, reason: str) -> str:
    if reason == KIND_CHANGED:
        now = plan.kinds.get(pattern_id) or plan.kinds.get(plan.new_ids.get(pattern_id, ""))
        return f": now {now}" if now else ""
    return ""


def judge_all(plan: StatePlan,
              entries: Iterable[tuple[str, str, str | None, str | None, dict | None]]
              ) -> StateReport:
    """Judge stored entries, each (stored id, key, kind, fingerprint, snapshot), as a
    restart would. An entry of an old id whose key is stored under the new id too is not
    counted: the new id's entry is the newer one, and the old one is simply deleted."""
    entries = list(entries)
    present = {(stored_id, key) for stored_id, key, *_ in entries}
    report = StateReport(Counter(), Counter(), Counter(), Counter())
    for stored_id, key, kind, print_, state in entries:
        if stored_id == TRACKER_ID:
            report.summaries += 1
            continue
        verdict = plan.judge(stored_id, kind, print_, state)
        if verdict.dropped:
            report.dropped[(stored_id, verdict.reason or REMOVED)] += 1
        elif verdict.pattern_id != stored_id:
            if (verdict.pattern_id, key) not in present:
                report.carried[(stored_id, verdict.pattern_id or "")] += 1
        elif verdict.reason:
            report.adapted[(stored_id, verdict.reason)] += 1
        else:
            report.kept[stored_id] += 1
    return report
