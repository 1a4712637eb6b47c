"""What all matchers share: keys, snapshots, purity, lateness, the watermark and the view."""

from __future__ import annotations

import copy
import json
import math

import pytest

from choreo.config import parse_choreography
from choreo.matchers import (
    Watermark,
    event_from_snapshot,
    event_to_snapshot,
    key_for,
    matcher_for,
)
from choreo.matchers.base import compact
from choreo.matchers.testing import T0, drive
from choreo.matchers.testing import make_event as ev
from choreo.matchers.views import describe_state
from choreo.matching import PatternStats
from choreo.patterns import (
    AbsencePattern,
    EventPattern,
    EventSpec,
    Pattern,
    SequencePattern,
    TemporalPattern,
    ThresholdPattern,
)

COMMON = {"action": "act", "capability": "cap"}
PATTERNS: dict[str, Pattern] = {
    "sliding": ThresholdPattern(id="th", **COMMON, on=EventSpec("a"), count=2, window=10),
    "tumbling": ThresholdPattern(id="tu", **COMMON, on=EventSpec("a"), count=2, window=10,
                                 window_kind="tumbling"),
    "hopping": ThresholdPattern(id="ho", **COMMON, on=EventSpec("a"), count=2, window=10,
                                window_kind="hopping", hop=5),
    "temporal": TemporalPattern(id="te", **COMMON, all_of=(EventSpec("a"), EventSpec("b")),
                                window=10),
    "sequence": SequencePattern(id="se", **COMMON, steps=(EventSpec("a"), EventSpec("b")),
                                max_interval=10, timeout_action="gave_up"),
    "absence": AbsencePattern(id="ab", **COMMON, after=EventSpec("a"), expect=EventSpec("b"),
                              within=10),
}
KINDS = sorted(PATTERNS)


def matcher(name: str, stats: PatternStats | None = None, **changes):
    pattern = PATTERNS[name]
    if changes:
        pattern = type(pattern)(**{**pattern.__dict__, **changes})
    return matcher_for(pattern, stats or PatternStats())


# --- keys --------------------------------------------------------------------------------


def test_key_is_the_correlation_id_by_default():
    pattern = PATTERNS["sliding"]
    assert key_for(pattern, ev("a", 0, "order-7")) == "order-7"
    assert key_for(pattern, ev("a", 0, None)) is None


@pytest.mark.parametrize(("group_by", "expected"), [
    ("payload.user.id", "u1"),
    ("payload.n", "42"),
    ("payload.flag", "true"),
    ("payload.price", "9.5"),
    ("payload.empty", None),
    ("payload.obj", None),
    ("payload.user.missing", None),
    ("payload.n.deeper", None),
    ("metadata.tenant", "acme"),
    ("source", "shop"),
])
def test_group_by_names_another_field(group_by, expected):
    pattern = ThresholdPattern(id="t", **COMMON, group_by=group_by)
    event = ev("a", 0, "c1", source="shop", metadata={"tenant": "acme"},
               user={"id": "u1"}, n=42, flag=True, price=9.5, empty="", obj={"x": 1})
    assert key_for(pattern, event) == expected


@pytest.mark.parametrize("name", KINDS)
def test_an_event_without_a_key_is_not_counted(name):
    stats = PatternStats()
    outcome = matcher(name, stats).on_event(None, ev("a", 0, None), T0)
    assert outcome.unkeyed and outcome.state is None and outcome.actions == []
    assert stats.seen == {}


# --- snapshots and purity --------------------------------------------------------------


def test_snapshot_round_trip():
    event = ev("a", 1.5, "k", total=3, nested={"x": [1, 2]})
    assert event_from_snapshot(event_to_snapshot(event)) == event
    assert json.loads(json.dumps(event_to_snapshot(event))) == event_to_snapshot(event)
    small = compact(event_to_snapshot(event))
    assert set(small) == {"event_id", "event_type", "timestamp", "ts", "source"}
    assert event_from_snapshot(small).payload == {}


@pytest.mark.parametrize("name", KINDS)
def test_matchers_never_change_the_state_they_are_given(name):
    m = matcher(name, allowed_lateness=5)
    state = None
    for event in [ev("a", 0), ev("b", 1), ev("a", 3), ev("b", 20)]:
        frozen = copy.deepcopy(state)
        outcome = m.on_event(state, event, event.ts)
        assert state == frozen
        state = outcome.state
    frozen = copy.deepcopy(state)
    m.on_time(state, T0 + 100)
    m.deadline(state)
    describe_state(m.pattern, state, T0 + 100)
    assert state == frozen


@pytest.mark.parametrize("name", KINDS)
def test_a_deadline_run_on_state_handed_over_ends_as_on_a_copy(name):
    """The timer hands over state it just read (`owned`); the outcome is the same."""
    m = matcher(name, allowed_lateness=5)
    state = None
    for event in [ev("a", 0), ev("b", 1), ev("a", 3)]:
        state = m.on_event(state, event, event.ts).state
    for at in (T0 + 4, T0 + 9, T0 + 100):
        expected = m.on_time(state, at)
        handed = m.on_time(copy.deepcopy(state), at, owned=True)
        assert handed.state == expected.state
        assert [a.event.event_id for a in handed.actions] == [
            a.event.event_id for a in expected.actions]


@pytest.mark.parametrize("name", KINDS)
def test_state_is_deleted_once_keys_go_quiet(name):
    m = matcher(name, allowed_lateness=3)
    run = drive(m, [ev("a", 0, "k1"), ev("b", 2, "k1"), ev("a", 5, "k2"), ev("a", 6, "k2")])
    drive(m, [], until=40, run=run)
    assert run.states == {}
    assert m.deadline(None) is None
    assert m.on_time(None, T0).state is None


@pytest.mark.parametrize("name", KINDS)
def test_an_irrelevant_event_leaves_no_state(name):
    outcome = matcher(name).on_event(None, ev("zzz", 0), T0)
    assert outcome.state is None and outcome.actions == [] and not outcome.late


def test_matcher_for_refuses_stateless_patterns():
    with pytest.raises(TypeError):
        matcher_for(EventPattern(id="e", **COMMON), PatternStats())


def test_patterns_loaded_from_the_config_file_work():
    choreography = parse_choreography("""
[defaults]
allowed_lateness = "2s"

[[patterns]]
id = "slow-payment"
kind = "sequence"
steps = ["order_received", { on = "payment_successful", when = "payload.amount > 0" }]
max_interval = "1m"
action = "close"
capability = "orders"
timeout_action = "cancel_order"
""")
    m = matcher_for(choreography.patterns[0], PatternStats())
    run = drive(m, [ev("order_received", 0, event_id="o"), ev("payment_successful", 50,
                                                                event_id="p", amount=0)],
                until=200)
    assert run.fired == [("cancel_order", ["o"])]


# --- lateness ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", KINDS)
def test_lateness_zero_applies_at_once_and_refuses_anything_older(name):
    m = matcher(name)
    first = m.on_event(None, ev("a", 10), T0 + 10)
    assert first.state is None or first.state["buf"] == []
    late = m.on_event(first.state, ev("a", 9.999), T0 + 10)
    assert late.late
    assert (late.state or {}).get("core") == (first.state or {}).get("core")


def test_an_irrelevant_late_event_is_not_flagged():
    m = matcher("sequence")
    assert not m.on_event(None, ev("zzz", 0), T0 + 100).late
    assert m.on_event(None, ev("a", 0), T0 + 100).late


def test_events_wait_in_the_buffer_until_the_watermark_allows():
    m = matcher("sliding", allowed_lateness=5)
    state = m.on_event(None, ev("a", 0, event_id="x"), T0).state
    assert [item["e"]["event_id"] for item in state["buf"]] == ["x"]
    assert m.deadline(state) == T0 + 5
    assert m.on_time(state, T0 + 4.9).state["buf"] != []
    assert m.on_time(state, T0 + 5).state["buf"] == []


def test_a_lower_watermark_than_before_is_ignored():
    m = matcher("sliding", allowed_lateness=1)
    state = m.on_time(m.on_event(None, ev("a", 10), T0 + 10).state, T0 + 10.5).state
    assert m.on_event(state, ev("a", 8), T0).late  # the key already saw T0 + 10.5


def test_a_duplicate_delivery_counts_twice():
    """The engine de-duplicates; a matcher fed the same event twice takes it as two."""
    m = matcher("sliding")
    event = ev("a", 0, event_id="same")
    run = drive(m, [event, event])
    assert run.fired == [("act", ["same"])]  # count 2 reached by one event seen twice
    run = drive(matcher("sequence", steps=(EventSpec("a"), EventSpec("a"))), [event, event])
    assert run.fired == [("act", ["same", "same"])]


def test_stats_count_seen_fired_and_timed_out():
    stats = PatternStats()
    m = matcher("sequence", stats)
    drive(m, [ev("a", 0), ev("b", 1), ev("a", 2), ev("zzz", 3)], until=100)
    assert stats.seen["se"] == 4 and stats.fired["se"] == 1 and stats.timed_out["se"] == 1


# --- the watermark -----------------------------------------------------------------------


def test_watermark_is_the_highest_event_time_seen():
    wm = Watermark()
    assert wm.current(0, 30) == -math.inf
    wm.observe(100, wall_now=0)
    wm.observe(90, wall_now=1)
    assert wm.current(2, 30) == 100


def test_watermark_moves_with_the_wall_clock_once_idle_and_never_back():
    wm = Watermark()
    wm.observe(100, wall_now=0)
    assert wm.current(30, idle_timeout=30) == 100
    assert wm.current(45, idle_timeout=30) == 115
    wm.observe(105, wall_now=46)  # an old event does not move it back
    assert wm.current(46, 30) == 115
    assert wm.current(80, 30) == 119
    wm.observe(200, wall_now=81)
    assert wm.current(81, 30) == 200


def test_watermark_survives_a_restart():
    wm = Watermark()
    wm.observe(100, wall_now=0)
    wm.current(50, 30)
    again = Watermark.restore(wm.snapshot(), wall_now=1000)
    assert again.current(1000, 30) == 120
    assert again.current(1040, 30) == 130
    assert Watermark.restore(Watermark().snapshot(), 0).current(100, 30) == -math.inf


# --- the web view ------------------------------------------------------------------------


def test_view_of_a_sequence_in_flight():
    m = matcher("sequence", allowed_lateness=2)
    state = m.on_time(m.on_event(None, ev("a", 0, event_id="a0"), T0).state, T0 + 2).state
    state = m.on_event(state, ev("b", 3, "k1", event_id="b3"), T0 + 3).state
    view = describe_state(m.pattern, state, T0 + 3)
    assert view["key"] == "k1" and view["kind"] == "sequence"
    assert [s["event_id"] for s in view["matched_steps"]] == ["a0"]
    assert view["missing_steps"] == ["b"]
    assert view["step_deadline"] == "2023-11-14T22:13:30.000Z"
    assert [b["event_id"] for b in view["buffered"]] == ["b3"]
    assert view["watermark"] == "2023-11-14T22:13:23.000Z"
    assert view["next_deadline"] == "2023-11-14T22:13:25.000Z"


@pytest.mark.parametrize("name", KINDS)
def test_view_of_every_kind_is_json(name):
    m = matcher(name)
    run = drive(m, [ev("a", 0), ev("a", 1)])
    for state in [None, *run.states.values()]:
        view = describe_state(m.pattern, state, T0 + 1)
        assert json.loads(json.dumps(view)) == view
        assert view["pattern_id"] == m.pattern.id


def test_view_window_counts():
    m = matcher("hopping")
    state = drive(m, [ev("a", 6)]).states["k1"]
    view = describe_state(m.pattern, state, T0 + 6)
    assert [(w["start"], w["end"], w["count"], w["fired"]) for w in view["windows"]] == [
        ("2023-11-14T22:13:20.000Z", "2023-11-14T22:13:30.000Z", 1, False),
        ("2023-11-14T22:13:25.000Z", "2023-11-14T22:13:35.000Z", 1, False),
    ]
    temporal = matcher("temporal")
    view = describe_state(temporal.pattern, drive(temporal, [ev("a", 0)]).states["k1"], T0)
    assert view["missing"] == ["b"] and view["all_of"][0]["seen"][0]["event_type"] == "a"
