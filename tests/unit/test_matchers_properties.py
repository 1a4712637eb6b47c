"""Each matcher, driven event by event, agrees with a brute-force reference.

The scenario: random events for two keys (and some without a key) arrive out of order,
some delivered twice, while the partition watermark is the highest event time seen plus,
now and then, an idle jump. The engine drops repeated deliveries; the matcher sees the rest
with timers firing as their deadlines come. The reference sees only the complete list of
non-late events, sorted by event time then arrival, one key at a time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from itertools import product

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreo.actions import action_id
from choreo.conditions import ConditionRuntimeError, compile_condition
from choreo.envelope import Event
from choreo.matchers import key_for, matcher_for
from choreo.matchers.base import KeyedMatcher
from choreo.matchers.testing import T0, make_event
from choreo.matchers.threshold import window_indexes
from choreo.matching import PatternStats
from choreo.patterns import (
    AbsencePattern,
    EventSpec,
    Pattern,
    SequencePattern,
    TemporalPattern,
    ThresholdPattern,
)

POSITIVE = compile_condition("payload.v > 0")  # fails to evaluate when v is missing
SPECS = {
    "a": EventSpec("a"),
    "b": EventSpec("b"),
    "c": EventSpec("c"),
    "a|b": EventSpec("[ab]"),
    "b+": EventSpec("b", conditions=(POSITIVE,)),
}
spec_names = st.sampled_from(sorted(SPECS))
lateness = st.sampled_from([0.0, 0.0, 1.0, 2.0, 5.0])
durations = st.sampled_from([3.0, 5.0, 1.0, 8.0, 2.0, 2.5])  # first = most often

Ref = list[tuple[list[Event], str]]  # (triggers, variant) per action


# --- scenarios ---------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> list[tuple[str, Event | float]]:
    """Deliveries in arrival order: ("event", e) or ("idle", seconds the watermark jumps)."""
    n = draw(st.one_of(st.integers(0, 5), st.integers(6, 24)))
    span = draw(st.sampled_from([6, 12, 24]))
    events = []
    for i in range(n):
        v = draw(st.sampled_from([None, 0, 1, 2]))
        events.append(make_event(
            draw(st.sampled_from("aabbcx")),
            draw(st.integers(0, span)),
            draw(st.sampled_from(["k1", "k1", "k1", "k2", "k2", None])),
            event_id=f"e{i}",
            **({} if v is None else {"v": v}),
        ))
    jitter = [draw(st.integers(0, 6)) for _ in events]
    tiebreak = [draw(st.integers(0, 3)) for _ in events]
    order = sorted(range(n), key=lambda i: (events[i].ts + jitter[i], tiebreak[i]))
    deliveries: list[tuple[str, Event | float]] = [("event", events[i]) for i in order]
    for i in draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=3)) if n else []:
        at = draw(st.integers(0, len(deliveries)))
        deliveries.insert(at, ("event", events[i]))  # delivered again
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(deliveries)))
        deliveries.insert(at, ("idle", float(draw(st.integers(1, 8)))))
    return deliveries


def safe_accepts(spec: EventSpec, event: Event) -> bool:
    try:
        return spec.type_matches(event.event_type) and spec.accepts(event)
    except ConditionRuntimeError:
        return False


def play(matcher: KeyedMatcher, deliveries: list, marks_of: Callable[[Event], list]
         ) -> tuple[list[str], dict[str, list[tuple[Event, list]]], set[str], set[str]]:
    """Run the matcher; return its action ids and, for the reference, the applied events."""
    pattern, lateness_ = matcher.pattern, matcher.pattern.allowed_lateness
    states: dict[str, dict] = {}
    ids: list[str] = []
    seen: set[str] = set()
    late: set[str] = set()
    expected_late: set[str] = set()
    applied: dict[str, list[tuple[Event, list]]] = {}
    wm = -math.inf

    def store(key: str, outcome) -> None:
        ids.extend(a.event.event_id for a in outcome.actions)
        if outcome.state is None:
            states.pop(key, None)
        else:
            states[key] = outcome.state
            check_deadline(matcher, outcome.state)

    def timers() -> None:
        for key in sorted(states):
            due = matcher.deadline(states[key])
            if due is not None and due <= wm:
                store(key, matcher.on_time(states[key], wm))

    for kind, item in deliveries:
        if kind == "idle":
            wm += item
            timers()
            continue
        event = item
        if event.event_id in seen:  # the engine's de-duplication
            continue
        seen.add(event.event_id)
        wm = max(wm, event.ts)
        key = key_for(pattern, event)
        outcome = matcher.on_event(states.get(key), event, wm) if key else None
        marks = marks_of(event)
        if key is None:
            assert outcome is None
        else:
            if outcome.late:
                late.add(event.event_id)
            store(key, outcome)
            if marks and event.ts + lateness_ < wm:
                expected_late.add(event.event_id)
            elif marks:
                applied.setdefault(key, []).append((event, marks))
        timers()
    for key in sorted(states):
        store(key, matcher.on_time(states[key], T0 + 10_000))
    assert states == {}, "every key's state is deleted once time has passed"
    for key in applied:
        applied[key].sort(key=lambda pair: pair[0].ts)  # stable: ties keep arrival order
    return ids, applied, late, expected_late


def check_deadline(matcher: KeyedMatcher, state: dict) -> None:
    """deadline() is the smallest watermark at which on_time changes anything."""
    due = matcher.deadline(state)
    assert due is not None, "a stored state always has something left to do"
    stats = matcher.stats
    matcher.stats = PatternStats()  # probing must not count
    try:
        before = matcher.on_time(state, math.nextafter(due, -math.inf))
        assert before.actions == []
        assert (before.state["buf"], before.state["core"]) == (state["buf"], state["core"])
        after = matcher.on_time(state, due)
        assert after.state is None or (after.state["buf"], after.state["core"]) != (
            state["buf"], state["core"])
    finally:
        matcher.stats = stats


def expected_ids(pattern: Pattern, applied: dict, reference: Callable[..., Ref]) -> list[str]:
    out = []
    for key, pairs in applied.items():
        for triggers, variant in reference(pattern, pairs):
            out.append(action_id(pattern.id, key, [e.event_id for e in triggers], variant))
    return sorted(out)


def check(pattern: Pattern, deliveries: list, reference: Callable[..., Ref]) -> None:
    specs = pattern.specs
    matcher = matcher_for(pattern, PatternStats())
    ids, applied, late, expected_late = play(
        matcher, deliveries, lambda e: [i for i, s in enumerate(specs) if safe_accepts(s, e)])
    assert late == expected_late
    assert sorted(ids) == expected_ids(pattern, applied, reference)
    assert len(ids) == len(set(ids)), "no action is sent twice"


# --- brute-force references ------------------------------------------------------------


def ref_sliding(p: ThresholdPattern, pairs: list) -> Ref:
    events = [e for e, _ in pairs]
    out = []
    for i, e in enumerate(events):
        before = sum(1 for f in events[:i] if f.ts + p.window >= e.ts)
        if before == p.count - 1:
            out.append(([e], ""))
    return out


def in_window(ts: float, k: int, window: float, hop: float) -> bool:
    """k*hop <= ts < k*hop + window, in exact arithmetic on the given floats."""
    start = k * Fraction(hop)
    return start <= Fraction(ts) < start + Fraction(window)


def ref_fixed(p: ThresholdPattern, pairs: list) -> Ref:
    hop = p.hop or p.window
    counts: Counter = Counter()
    out = []
    for e, _ in pairs:
        for k in range(math.floor((T0 - 50) / hop), math.ceil((T0 + 100) / hop)):
            if in_window(e.ts, k, p.window, hop):
                counts[k] += 1
                if counts[k] == p.count:
                    out.append(([e], f"window:{k}"))
    return out


def ref_temporal(p: TemporalPattern, pairs: list) -> Ref:
    pool: list[int] = []
    out = []
    for idx, (e, _) in enumerate(pairs):
        pool.append(idx)
        fits = [[j for j in pool if i in pairs[j][1] and pairs[j][0].ts + p.window >= e.ts]
                for i in range(len(p.all_of))]
        picks = [list(c) for c in product(*fits) if len(set(c)) == len(c) and idx in c]
        if picks:
            used = sorted(min(picks))
            pool = [j for j in pool if j not in used]
            out.append(([pairs[j][0] for j in used], ""))
    return out


def ref_sequence(p: SequencePattern, pairs: list) -> Ref:
    out: Ref = []
    partial: list[Event] = []

    def due() -> float:
        limit = partial[-1].ts + p.max_interval
        return limit if p.within is None else min(limit, partial[0].ts + p.within)

    def time_out() -> None:
        if p.timeout_action:
            out.append((list(partial), "timeout"))

    for e, marks in pairs:
        if partial and e.ts > due():
            time_out()
            partial = []
        if len(partial) in marks:
            partial.append(e)
            if len(partial) == len(p.steps):
                out.append((partial, ""))
                partial = []
    if partial:
        time_out()
    return out


def ref_absence(p: AbsencePattern, pairs: list) -> Ref:
    out: Ref = []
    pending: Event | None = None
    for e, marks in pairs:
        if pending and e.ts > pending.ts + p.within:
            out.append(([pending], "absence"))
            pending = None
        if 1 in marks:  # expect
            pending = None
        if 0 in marks:  # after
            pending = e
    if pending:
        out.append(([pending], "absence"))
    return out


# --- the properties ----------------------------------------------------------------------

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios(), spec_names, st.integers(1, 4), durations, lateness)
def test_sliding_threshold_matches_reference(deliveries, on, count, window, late_by):
    pattern = ThresholdPattern(id="t", action="alert", capability="ops", on=SPECS[on],
                               count=count, window=window, allowed_lateness=late_by)
    check(pattern, deliveries, ref_sliding)


@SETTINGS
@given(scenarios(), spec_names, st.integers(1, 3), durations, st.data(), lateness)
def test_fixed_window_threshold_matches_reference(deliveries, on, count, window, data,
                                                  late_by):
    kind = data.draw(st.sampled_from(["tumbling", "hopping"]))
    hop = data.draw(st.sampled_from([h for h in (1.0, 2.0, 2.5, 5.0) if h <= window] or [window]))
    pattern = ThresholdPattern(id="t", action="alert", capability="ops", on=SPECS[on],
                               count=count, window=window, window_kind=kind,
                               hop=hop if kind == "hopping" else None,
                               allowed_lateness=late_by)
    check(pattern, deliveries, ref_fixed)


@SETTINGS
@given(scenarios(), st.lists(spec_names, min_size=2, max_size=3),
       st.sampled_from([5.0, 8.0, 12.0, 2.0, 2.5]), lateness)
def test_temporal_matches_reference(deliveries, names, window, late_by):
    pattern = TemporalPattern(id="t", action="go", capability="ops",
                              all_of=tuple(SPECS[n] for n in names), window=window,
                              allowed_lateness=late_by)
    check(pattern, deliveries, ref_temporal)


@SETTINGS
@given(scenarios(), st.lists(spec_names, min_size=2, max_size=3), durations,
       st.one_of(st.none(), durations), st.sampled_from([None, "gave_up"]), lateness)
def test_sequence_matches_reference(deliveries, names, max_interval, within, timeout_action,
                                    late_by):
    pattern = SequencePattern(id="s", action="go", capability="ops",
                              steps=tuple(SPECS[n] for n in names), max_interval=max_interval,
                              within=within, timeout_action=timeout_action,
                              allowed_lateness=late_by)
    check(pattern, deliveries, ref_sequence)


@SETTINGS
@given(scenarios(), spec_names, spec_names, durations, lateness)
def test_absence_matches_reference(deliveries, after, expect, within, late_by):
    pattern = AbsencePattern(id="a", action="remind", capability="ops", after=SPECS[after],
                             expect=SPECS[expect], within=within, allowed_lateness=late_by)
    check(pattern, deliveries, ref_absence)


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e4, 1e4, allow_nan=False), st.sampled_from([1.0, 2.5, 5.0, 0.1, 0.3]),
       st.integers(1, 4))
def test_window_indexes_agree_with_membership(ts, hop, hops_per_window):
    window = hop * hops_per_window
    ts = T0 + ts
    found = window_indexes(ts, window, hop)
    first = math.floor((ts - window) / hop) - 3
    brute = [k for k in range(first, first + hops_per_window + 8)
             if in_window(ts, k, window, hop)]
    assert found == brute
    assert 1 <= len(found) <= hops_per_window + 1
