"""Absence matchers: an `after` event not followed by an `expect` event in time."""

from __future__ import annotations

from typing import Any

from choreo.matchers import matcher_for
from choreo.matchers.testing import T0, drive
from choreo.matchers.testing import make_event as ev
from choreo.matching import PatternStats
from choreo.patterns import AbsencePattern, EventSpec


def absence(after: str = "cart_updated", expect: str = "checkout_completed",
            within: float = 30.0, **fields: Any):
    pattern = AbsencePattern(id="abandoned-cart", action="send_reminder",
                             capability="customer_communication", after=EventSpec(after),
                             expect=EventSpec(expect), within=within, **fields)
    return matcher_for(pattern, PatternStats())


def cart(at: float, key: str = "k1"):
    return ev("cart_updated", at, key, event_id=f"cart{at:g}", items=2)


def checkout(at: float, key: str = "k1"):
    return ev("checkout_completed", at, key, event_id=f"checkout{at:g}")


def test_fires_when_nothing_follows_in_time():
    run = drive(absence(), [cart(0)], until=31)
    (action,) = run.actions
    assert run.fired == [("send_reminder", ["cart0"])]
    assert action.event.payload["expected"] == "checkout_completed"
    assert action.event.payload["deadline"] == "2023-11-14T22:13:50.000Z"
    assert action.event.payload["data"] == {"items": 2}
    assert run.states == {}


def test_does_not_fire_before_the_deadline_has_passed():
    matcher = absence()
    run = drive(matcher, [cart(0)], until=30)
    assert run.actions == [] and "k1" in run.states
    assert matcher.deadline(run.states["k1"]) > T0 + 30


def test_expect_at_the_deadline_cancels():
    run = drive(absence(), [cart(0), checkout(30)], until=100)
    assert run.actions == [] and run.states == {}


def test_expect_after_the_deadline_does_not_cancel():
    run = drive(absence(), [cart(0), checkout(31)], until=100)
    assert run.fired == [("send_reminder", ["cart0"])]


def test_a_second_after_restarts_the_clock():
    run = drive(absence(), [cart(0), cart(20), checkout(45)], until=100)
    assert run.actions == []
    run = drive(absence(), [cart(0), cart(20)], until=100)
    assert run.fired == [("send_reminder", ["cart20"])]


def test_expect_with_nothing_pending_is_ignored():
    run = drive(absence(), [checkout(0), cart(1)], until=100)
    assert run.fired == [("send_reminder", ["cart1"])]
    assert drive(absence(), [checkout(0)]).states == {}


def test_each_after_is_watched_again_after_a_cancel():
    run = drive(absence(), [cart(0), checkout(5), cart(10)], until=100)
    assert run.fired == [("send_reminder", ["cart10"])]


def test_keys_are_watched_apart():
    run = drive(absence(), [cart(0, "a"), cart(0, "b"), checkout(5, "a")], until=100)
    assert run.fired == [("send_reminder", ["cart0"])]
    assert run.actions[0].event.correlation_id == "b"


def test_an_event_matching_both_cancels_then_starts_a_new_wait():
    run = drive(absence(after="cart.*", expect="cart.checked_out"),
                [ev("cart.updated", 0, event_id="u0"), ev("cart.checked_out", 10, event_id="c10")],
                until=100)
    assert run.fired == [("send_reminder", ["c10"])]


def test_out_of_order_within_lateness_gives_the_in_order_result():
    matcher = absence(within=10, allowed_lateness=5)
    # The checkout comes first on the wire but 3 s after the cart in event time.
    run = drive(matcher, [checkout(3), cart(0)], until=100)
    assert run.late == [] and run.actions == []
    # The other way round in event time: the checkout precedes the cart and cancels nothing.
    run = drive(matcher, [cart(1), checkout(0)], until=100)
    assert run.fired == [("send_reminder", ["cart1"])]


def test_a_late_expect_is_flagged_and_the_action_still_fires():
    run = drive(absence(within=10, allowed_lateness=2), [cart(0), cart(5, "other"),
                                                         checkout(2)], until=100)
    assert run.late == ["checkout2"]
    assert ("send_reminder", ["cart0"]) in run.fired
