"""Temporal matchers: every listed event within a window, in any order, each used once."""

from __future__ import annotations

from typing import Any

from choreo.matchers import matcher_for
from choreo.matchers.temporal import first_assignment
from choreo.matchers.testing import drive
from choreo.matchers.testing import make_event as ev
from choreo.matching import PatternStats
from choreo.patterns import EventSpec, TemporalPattern


def temporal(*types: str, window: float = 10.0, **fields: Any):
    pattern = TemporalPattern(id="ready-to-ship", action="ship", capability="shipping",
                              all_of=tuple(EventSpec(t) for t in types), window=window,
                              **fields)
    return matcher_for(pattern, PatternStats())


def e(event_type: str, at: float, key: str = "k1"):
    return ev(event_type, at, key, event_id=f"{event_type}{at:g}")


def test_fires_in_either_order_with_triggers_in_event_time_order():
    for events in ([e("paid", 0), e("packed", 3)], [e("packed", 0), e("paid", 3)]):
        run = drive(temporal("paid", "packed"), events)
        assert run.fired == [("ship", [x.event_id for x in events])]


def test_window_is_inclusive():
    assert drive(temporal("paid", "packed"), [e("paid", 0), e("packed", 10)]).fired
    assert not drive(temporal("paid", "packed"), [e("paid", 0), e("packed", 10.5)]).fired


def test_uses_the_earliest_fitting_occurrence_and_consumes_it():
    run = drive(temporal("paid", "packed"),
                [e("paid", 0), e("paid", 1), e("packed", 2), e("packed", 3), e("packed", 4)])
    assert run.fired == [("ship", ["paid0", "packed2"]), ("ship", ["paid1", "packed3"])]
    assert [x["e"]["event_id"] for x in run.states["k1"]["core"]["held"]] == ["packed4"]


def test_occurrences_older_than_the_window_are_not_used():
    run = drive(temporal("paid", "packed"), [e("paid", 0), e("paid", 8), e("packed", 15)])
    assert run.fired == [("ship", ["paid8", "packed15"])]


def test_three_specs_any_order():
    run = drive(temporal("paid", "packed", "labelled"),
                [e("labelled", 0), e("paid", 4), e("other", 5), e("packed", 9)])
    assert run.fired == [("ship", ["labelled0", "paid4", "packed9"])]


def test_a_spec_listed_twice_needs_two_events():
    run = drive(temporal("ping", "ping"), [e("ping", 0), e("ping", 1), e("ping", 2)])
    assert run.fired == [("ship", ["ping0", "ping1"])]


def test_an_event_fills_one_spec_and_overlapping_specs_are_assigned():
    # "order.paid" satisfies both specs; it must take the second so order.created can
    # take the first.
    matcher = temporal("order.*", "order.paid")
    run = drive(matcher, [e("order.created", 0), e("order.paid", 1)])
    assert run.fired == [("ship", ["order.created0", "order.paid1"])]
    assert drive(matcher, [e("order.paid", 0)]).fired == []


def test_first_assignment_is_lexicographic_and_uses_the_new_event():
    assert first_assignment([[0, 2], [1, 2]], must_use=2) == [0, 2]
    assert first_assignment([[2], [2]], must_use=2) is None
    assert first_assignment([[0], [1]], must_use=2) is None


def test_keys_are_matched_apart():
    assert drive(temporal("paid", "packed"), [e("paid", 0, "a"), e("packed", 1, "b")]).fired == []


def test_state_goes_once_occurrences_age_out():
    matcher = temporal("paid", "packed")
    run = drive(matcher, [e("paid", 0), e("paid", 4)])
    assert len(run.states["k1"]["core"]["held"]) == 2
    assert "payload" not in run.states["k1"]["core"]["held"][0]["e"]  # held compactly
    drive(matcher, [], until=12, run=run)
    assert len(run.states["k1"]["core"]["held"]) == 1
    drive(matcher, [], until=14.5, run=run)
    assert run.states == {}


def test_out_of_order_within_lateness_gives_the_in_order_result():
    events = [e("paid", 0), e("packed", 2), e("paid", 5), e("packed", 16)]
    in_order = drive(temporal("paid", "packed", allowed_lateness=6), events, until=100)
    shuffled = drive(temporal("paid", "packed", allowed_lateness=6),
                     [events[1], events[2], events[0], events[3]], until=100)
    assert shuffled.late == []
    assert shuffled.ids == in_order.ids
    assert in_order.fired == [("ship", ["paid0", "packed2"])]


def test_late_event_is_flagged_and_does_not_complete():
    run = drive(temporal("paid", "packed", allowed_lateness=1), [e("paid", 5), e("packed", 2)])
    assert run.late == ["packed2"]
    assert run.fired == []
