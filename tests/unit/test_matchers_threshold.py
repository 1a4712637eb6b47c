"""Threshold matchers: sliding crossings and re-arming, fixed windows once per window."""

from __future__ import annotations

from typing import Any

import pytest

from choreo.envelope import iso_from_ts
from choreo.matchers import matcher_for
from choreo.matchers.testing import T0, drive
from choreo.matchers.testing import make_event as ev
from choreo.matching import PatternStats
from choreo.patterns import EventSpec, ThresholdPattern


def threshold(count: int = 3, window: float = 10.0, **fields: Any):
    pattern = ThresholdPattern(id="too-many-failures", action="lock_account",
                               capability="security", on=EventSpec("login_failed"),
                               count=count, window=window, **fields)
    return matcher_for(pattern, PatternStats())


def fails(*times: float, key: str = "k1") -> list:
    return [ev("login_failed", t, key, event_id=f"f{t}") for t in times]


# --- sliding -----------------------------------------------------------------------------


def test_fires_once_when_the_count_is_reached():
    run = drive(threshold(), fails(0, 1, 2, 3, 4))
    assert run.fired == [("lock_account", ["f2"])]


def test_rearms_once_the_count_has_dropped_below():
    run = drive(threshold(), fails(0, 1, 2, 3, 30, 31, 32))
    assert run.fired == [("lock_account", ["f2"]), ("lock_account", ["f32"])]


def test_rearms_as_events_age_out_even_without_a_quiet_event():
    # At t=12 the window [2, 12] holds f5 and f12; the count dropped to 1 when f0 aged out
    # at t=10+, so reaching 2 again is a new crossing.
    run = drive(threshold(count=2), fails(0, 5, 12))
    assert run.fired == [("lock_account", ["f5"]), ("lock_account", ["f12"])]


def test_does_not_fire_again_while_the_count_stays_at_or_above():
    run = drive(threshold(count=2), fails(0, 5, 9, 14, 18))
    assert run.fired == [("lock_account", ["f5"])]


@pytest.mark.parametrize(("gap", "fires"), [(10.0, True), (10.5, False)])
def test_window_includes_its_start(gap, fires):
    run = drive(threshold(count=2), fails(0, gap))
    assert bool(run.fired) is fires


def test_count_of_one_fires_on_the_first_event_of_a_quiet_spell():
    run = drive(threshold(count=1, window=5), fails(0, 3, 20))
    assert run.fired == [("lock_account", ["f0"]), ("lock_account", ["f20"])]


def test_keys_are_counted_apart():
    run = drive(threshold(count=2), fails(0, key="alice") + fails(1, key="bob"))
    assert run.fired == []


def test_action_carries_the_count_and_the_window():
    run = drive(threshold(), fails(0, 1, 2))
    (action,) = run.actions
    payload = action.event.payload
    assert payload["count"] == 3
    assert payload["window"] == {"kind": "sliding", "start": "2023-11-14T22:13:12.000Z",
                                 "end": "2023-11-14T22:13:22.000Z"}
    assert action.capability == "security"
    assert action.event.correlation_id == "k1"


def test_state_stays_small_and_goes_once_the_window_passes():
    matcher = threshold(count=3)
    run = drive(matcher, fails(*[i / 10 for i in range(500)]))
    assert len(run.states["k1"]["core"]["recent"]) == 3
    assert matcher.deadline(run.states["k1"]) > T0 + 49.9 + 10
    drive(matcher, [], until=60.0, run=run)
    assert run.states == {}


def test_group_by_payload_field():
    pattern = ThresholdPattern(id="t", action="lock_account", capability="security",
                               on=EventSpec("login_failed"), count=2, window=10,
                               group_by="payload.user")
    events = [ev("login_failed", 0, "c1", user="ann"), ev("login_failed", 1, "c2", user="ann")]
    run = drive(matcher_for(pattern, PatternStats()), events)
    assert len(run.actions) == 1
    assert run.actions[0].event.metadata["pattern_key"] == "ann"


# --- tumbling and hopping ----------------------------------------------------------------


def test_tumbling_fires_once_per_window():
    matcher = threshold(count=2, window=10, window_kind="tumbling")
    run = drive(matcher, fails(1, 2, 3, 4, 11, 12, 13), until=100)
    assert run.fired == [("lock_account", ["f2"]), ("lock_account", ["f12"])]
    assert run.states == {}


def test_tumbling_windows_are_aligned_to_the_epoch():
    matcher = threshold(count=2, window=10, window_kind="tumbling")
    assert drive(matcher, fails(9, 11)).fired == []  # T0 is a multiple of 10


def test_tumbling_action_names_its_window():
    matcher = threshold(count=2, window=10, window_kind="tumbling")
    (action,) = drive(matcher, fails(1, 2)).actions
    assert action.event.payload["window"] == {"kind": "tumbling",
                                              "start": "2023-11-14T22:13:20.000Z",
                                              "end": "2023-11-14T22:13:30.000Z"}


def test_hopping_fires_once_in_each_overlapping_window():
    matcher = threshold(count=2, window=10, window_kind="hopping", hop=5)
    run = drive(matcher, fails(6, 8, 11, 13))
    # f8 completes [0, 10) and [5, 15); f13 completes [10, 20).
    assert run.fired == [("lock_account", ["f8"]), ("lock_account", ["f8"]),
                         ("lock_account", ["f13"])]
    assert len(set(run.ids)) == 3
    starts = [a.event.payload["window"]["start"] for a in run.actions]
    assert starts == [iso_from_ts(T0), iso_from_ts(T0 + 5), iso_from_ts(T0 + 10)]


def test_hopping_state_holds_one_counter_per_open_window():
    matcher = threshold(count=5, window=10, window_kind="hopping", hop=5)
    run = drive(matcher, fails(6, 7, 8))
    first = int(T0 // 5)
    assert run.states["k1"]["core"]["windows"] == [[first, 3], [first + 1, 3]]
    drive(matcher, [], until=25, run=run)
    assert run.states == {}


# --- lateness --------------------------------------------------------------------------


def test_out_of_order_within_lateness_gives_the_in_order_result():
    in_order = drive(threshold(count=2, window=3, allowed_lateness=5), fails(0, 2, 4, 6, 10),
                     until=100)
    shuffled = drive(threshold(count=2, window=3, allowed_lateness=5),
                     fails(2, 0, 6, 4, 10), until=100)
    assert in_order.ids == shuffled.ids
    assert shuffled.late == []


def test_late_events_are_flagged_and_not_counted():
    run = drive(threshold(count=2, window=100), fails(10, 0), until=200)
    assert run.late == ["f0"]
    assert run.fired == []
