"""Sequence matchers: steps in order, step and whole-sequence deadlines, timeout actions."""

from __future__ import annotations

from typing import Any

from choreo.conditions import compile_condition
from choreo.matchers import Watermark, matcher_for
from choreo.matchers.testing import T0, drive
from choreo.matchers.testing import make_event as ev
from choreo.matching import PatternStats
from choreo.patterns import EventSpec, SequencePattern

STEPS = ("order_received", "payment_successful", "order_shipped")


def sequence(*steps: str, max_interval: float = 10.0, stats: PatternStats | None = None,
             **fields: Any):
    pattern = SequencePattern(id="order-flow", action="close_order", capability="orders",
                              steps=tuple(EventSpec(s) for s in steps or STEPS),
                              max_interval=max_interval, **fields)
    return matcher_for(pattern, stats or PatternStats())


def e(event_type: str, at: float, key: str = "k1", **payload: Any):
    return ev(event_type, at, key, event_id=f"{event_type.split('_')[0]}{at:g}", **payload)


def test_completes_with_every_step_as_trigger():
    run = drive(sequence(), [e("order_received", 0), e("payment_successful", 4),
                             e("order_shipped", 9)])
    assert run.fired == [("close_order", ["order0", "payment4", "order9"])]
    assert run.states == {}


def test_other_events_in_between_are_ignored():
    run = drive(sequence(), [e("order_received", 0), e("cart_updated", 1),
                             e("order_shipped", 2), e("payment_successful", 4),
                             e("order_shipped", 9)])
    assert run.fired == [("close_order", ["order0", "payment4", "order9"])]


def test_steps_out_of_order_do_not_complete():
    run = drive(sequence(), [e("payment_successful", 0), e("order_received", 1),
                             e("order_shipped", 2)], until=100)
    assert run.fired == []


def test_step_timeout_sends_the_timeout_action_with_the_partial_match():
    matcher = sequence(timeout_action="cancel_order", timeout_capability="support")
    run = drive(matcher, [e("order_received", 0), e("payment_successful", 4)], until=100)
    (action,) = run.actions
    assert run.fired == [("cancel_order", ["order0", "payment4"])]
    assert action.capability == "support"
    payload = action.event.payload
    assert payload["missing_step"] == "order_shipped"
    assert payload["missing_step_index"] == 2
    assert payload["matched_steps"] == ["order_received", "payment_successful"]
    assert payload["reason"] == "max_interval"
    assert payload["deadline"] == "2023-11-14T22:13:34.000Z"
    assert run.states == {}


def test_timeout_capability_defaults_to_the_patterns():
    run = drive(sequence(timeout_action="cancel_order"), [e("order_received", 0)], until=100)
    assert run.actions[0].capability == "orders"


def test_timeout_and_completion_ids_differ_for_the_same_triggers():
    steps = ("a", "b")
    done = drive(sequence(*steps, timeout_action="t"), [e("a", 0), e("b", 1)])
    partial = drive(sequence(*steps, timeout_action="t"), [e("a", 0)], until=100)
    assert done.fired[0][1] == ["a0", "b1"] and partial.fired[0][1] == ["a0"]
    assert done.ids != partial.ids


def test_timeout_without_timeout_action_drops_the_match_and_counts_it():
    stats = PatternStats()
    run = drive(sequence(stats=stats), [e("order_received", 0)], until=100)
    assert run.actions == [] and run.states == {}
    assert stats.timed_out["order-flow"] == 1


def test_a_step_at_its_deadline_still_counts_and_one_after_does_not():
    on_time = drive(sequence("a", "b"), [e("a", 0), e("b", 10)])
    too_late = drive(sequence("a", "b", timeout_action="t"), [e("a", 0), e("b", 10.5)])
    assert on_time.fired == [("close_order", ["a0", "b10"])]
    assert too_late.fired == [("t", ["a0"])]


def test_within_limits_the_whole_sequence():
    matcher = sequence(max_interval=10, within=15, timeout_action="cancel_order")
    run = drive(matcher, [e("order_received", 0), e("payment_successful", 8),
                          e("order_shipped", 16)])
    assert run.fired == [("cancel_order", ["order0", "payment8"])]
    assert run.actions[0].event.payload["reason"] == "within"


def test_a_new_first_step_while_a_match_is_in_flight_is_ignored():
    run = drive(sequence("a", "b"), [e("a", 0), e("a", 5), e("b", 6)])
    assert run.fired == [("close_order", ["a0", "b6"])]


def test_a_new_match_starts_after_completion_or_timeout():
    run = drive(sequence("a", "b", timeout_action="t"),
                [e("a", 0), e("b", 1), e("a", 2), e("a", 20), e("b", 21)])
    assert run.fired == [("close_order", ["a0", "b1"]), ("t", ["a2"]),
                         ("close_order", ["a20", "b21"])]


def test_a_repeated_step_type_advances_the_match():
    run = drive(sequence("a", "a", "b"), [e("a", 0), e("a", 1), e("a", 2), e("b", 3)])
    assert run.fired == [("close_order", ["a0", "a1", "b3"])]


def test_step_conditions_apply():
    pattern = SequencePattern(id="s", action="go", capability="c", max_interval=10, steps=(
        EventSpec("a"), EventSpec("b", conditions=(compile_condition("payload.ok"),))))
    stats = PatternStats()
    run = drive(matcher_for(pattern, stats), [e("a", 0), e("b", 1, ok=False), e("b", 2),
                                              e("b", 3, ok=True)])
    assert run.fired == [("go", ["a0", "b3"])]
    assert stats.condition_errors["s"] == 1  # b2 has no `ok`


def test_only_the_latest_step_keeps_its_payload():
    run = drive(sequence(), [e("order_received", 0, total=5), e("payment_successful", 1, x=1)])
    held = run.states["k1"]["core"]["steps"]
    assert "payload" not in held[0] and held[1]["payload"] == {"x": 1}


def test_deadline_is_when_the_watermark_passes_the_step_deadline():
    matcher = sequence("a", "b", max_interval=10, allowed_lateness=2)
    run = drive(matcher, [e("a", 0)])
    state = run.states["k1"]
    assert matcher.deadline(state) == T0 + 2  # the buffered event is released first
    state = matcher.on_time(state, T0 + 2).state
    assert matcher.deadline(state) > T0 + 12 and matcher.deadline(state) - (T0 + 12) < 1e-6
    assert matcher.on_time(state, T0 + 12).state == {**state, "wm": T0 + 12}


def test_an_abandoned_flow_times_out_on_the_idle_watermark():
    matcher = sequence("a", "b", timeout_action="t")
    watermark = Watermark()
    watermark.observe(T0, wall_now=1000.0)
    outcome = matcher.on_event(None, e("a", 0), watermark.current(1000.0, idle_timeout=30))
    state = outcome.state
    # No more events on the partition: after 30 s idle the watermark moves with the clock.
    assert watermark.current(1035.0, idle_timeout=30) == T0 + 5
    assert matcher.on_time(state, watermark.current(1035.0, 30)).actions == []
    due = matcher.deadline(state)
    assert watermark.current(1041.0, 30) >= due
    timed_out = matcher.on_time(state, watermark.current(1041.0, 30))
    assert [a.name for a in timed_out.actions] == ["t"] and timed_out.state is None


def test_out_of_order_within_lateness_gives_the_in_order_result():
    events = [e("a", 0), e("b", 3), e("x", 4), e("a", 14), e("b", 30)]
    in_order = drive(sequence("a", "b", timeout_action="t", allowed_lateness=5), events,
                     until=100)
    shuffled = drive(sequence("a", "b", timeout_action="t", allowed_lateness=5),
                     [events[1], events[0], events[3], events[2], events[4]], until=100)
    assert shuffled.late == [] and shuffled.ids == in_order.ids
    assert in_order.fired == [("close_order", ["a0", "b3"]), ("t", ["a14"])]


def test_a_late_step_is_flagged_and_the_match_times_out():
    run = drive(sequence("a", "b", timeout_action="t", allowed_lateness=1),
                [e("a", 0), e("x", 5), e("b", 3)], until=100)
    assert run.late == ["b3"]
    assert run.fired == [("t", ["a0"])]
