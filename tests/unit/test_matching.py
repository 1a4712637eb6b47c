"""Event patterns: which actions an event fires, in what order, and what an action looks like."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from choreo.actions import ACTION_REQUESTED, ENGINE_SOURCE, action_id, build_action
from choreo.envelope import Event, new_event, parse_event
from choreo.matching import EventMatcher, PatternIndex


def fired(matcher: EventMatcher, event: Event) -> list[tuple[str, str, int]]:
    return [(a.name, a.capability, a.priority) for a in matcher.match(event)]


# --- routing and order ------------------------------------------------------------------------

def test_actions_come_highest_priority_first(choreography_factory, pattern_factory,
                                             event_factory):
    patterns = choreography_factory(
        pattern_factory(id="low", action="low", priority=1),
        pattern_factory(id="high", action="high", priority=9),
        pattern_factory(id="mid", action="mid", priority=5),
    ).patterns

    actions = EventMatcher(patterns).match(event_factory("order_received"))

    assert [a.name for a in actions] == ["high", "mid", "low"]


def test_equal_priorities_keep_declaration_order(choreography_factory, pattern_factory,
                                                 event_factory):
    patterns = choreography_factory(
        pattern_factory(id="c", action="third", on="order.*", priority=3),
        pattern_factory(id="a", action="first", on="order.created", priority=3),
        pattern_factory(id="b", action="second", on="order.*", priority=3),
        pattern_factory(id="top", action="top", on="order.created", priority=4),
    ).patterns

    actions = EventMatcher(patterns).match(event_factory("order.created"))

    assert [a.name for a in actions] == ["top", "third", "first", "second"]


@pytest.mark.parametrize(("glob", "event_type", "matches"), [
    ("order.*", "order.created", True),
    ("order.*", "order.item.added", True),
    ("order.*", "order", False),
    ("order.*", "orders.created", False),
    ("agent.*.completed", "agent.writer.completed", True),
    ("agent.*.completed", "agent.team.writer.completed", True),
    ("agent.*.completed", "agent.writer.started", False),
    ("memory.create.completed", "memory.create.completed", True),
    ("memory.create.completed", "memory.create", False),
    ("payment_?ailed", "payment_failed", True),
    ("inventory_[cs]*", "inventory_shortage", True),
    ("inventory_[!s]*", "inventory_shortage", False),
])
def test_globs_match_hierarchical_types(choreography_factory, pattern_factory, event_factory,
                                        glob: str, event_type: str, matches: bool):
    matcher = EventMatcher(choreography_factory(pattern_factory(on=glob)).patterns)

    assert bool(matcher.match(event_factory(event_type))) is matches


def test_the_index_answers_the_same_twice(choreography_factory, pattern_factory):
    patterns = choreography_factory(
        pattern_factory(id="glob", on="order.*"),
        pattern_factory(id="other", on="payment.*"),
        pattern_factory(id="exact", on="order.created"),
        pattern_factory("threshold", id="counted", on="order.created"),
    ).patterns
    index = PatternIndex(patterns)

    first = index.for_type("order.created")
    second = index.for_type("order.created")

    assert [p.id for p in first] == ["glob", "exact", "counted"]
    assert second == first
    assert [p.id for p in index.for_type("payment.failed")] == ["other"]
    assert index.for_type("shipping.done") == ()


def test_a_pattern_listening_twice_to_a_type_is_listed_once(choreography_factory,
                                                            pattern_factory):
    [pattern] = choreography_factory(pattern_factory(
        "sequence", steps=["retry", "retry", "retry.*"])).patterns

    assert PatternIndex([pattern]).for_type("retry") == (pattern,)


def test_the_event_matcher_ignores_complex_patterns(choreography_factory, pattern_factory,
                                                   event_factory):
    patterns = choreography_factory(
        pattern_factory("threshold", id="counted", on="order_received", count=1),
        pattern_factory(id="plain", action="check"),
    ).patterns

    assert [a.name for a in EventMatcher(patterns).match(event_factory())] == ["check"]


def test_a_condition_that_fails_to_evaluate_does_not_fire(choreography_factory, pattern_factory,
                                                          event_factory):
    patterns = choreography_factory(
        pattern_factory(id="needs-missing", action="never", when="payload.missing > 1"),
        pattern_factory(id="fine", action="always", when="payload.order_value > 0"),
    ).patterns
    matcher = EventMatcher(patterns)

    actions = matcher.match(event_factory(payload={"order_value": 5}))
    matcher.match(event_factory(payload={"order_value": 7}))

    assert [a.name for a in actions] == ["always"]
    assert matcher.stats.condition_errors == {"needs-missing": 2}
    assert matcher.stats.seen == {"needs-missing": 2, "fine": 2}
    assert matcher.stats.fired == {"fine": 2}


def test_stats_count_what_was_seen_and_what_fired(choreography_factory, pattern_factory,
                                                  event_factory):
    patterns = choreography_factory(
        pattern_factory(id="big", when="payload.order_value > 100"),
        pattern_factory(id="paid", on="payment_successful"),
    ).patterns
    matcher = EventMatcher(patterns)

    for value in (50, 150, 250):
        matcher.match(event_factory(payload={"order_value": value}))
    matcher.match(event_factory("shipping_complete"))

    assert matcher.stats.seen == {"big": 3}
    assert matcher.stats.fired == {"big": 2}
    assert matcher.stats.condition_errors == {}


def test_match_filters_apply(choreography_factory, pattern_factory, event_factory):
    matcher = EventMatcher(choreography_factory(
        pattern_factory(match={"payload": {"country": ["DE", "AT"]}})).patterns)

    assert matcher.match(event_factory(payload={"country": "AT"}))
    assert not matcher.match(event_factory(payload={"country": "FR"}))
    assert not matcher.match(event_factory(payload={}))


# --- the action envelope ----------------------------------------------------------------------

def test_the_action_envelope_follows_the_contract(choreography_factory, pattern_factory,
                                                  event_factory):
    patterns = choreography_factory(pattern_factory(
        id="high-value-order", action="request_manual_review", capability="fraud_detection",
        priority=9)).patterns
    trigger = event_factory(payload={"order_id": "ord-1", "order_value": 1500},
                            event_id="evt-42", correlation_id="ord-1",
                            timestamp="2024-05-01T12:00:00.500Z")

    [action] = EventMatcher(patterns).match(trigger)

    assert (action.capability, action.priority, action.name, action.key) == (
        "fraud_detection", 9, "request_manual_review", "ord-1")
    event = action.event
    assert event.event_type == ACTION_REQUESTED == "action.requested"
    assert event.source == ENGINE_SOURCE == "choreo.engine"
    assert event.timestamp == trigger.timestamp
    assert event.payload == {
        "action": "request_manual_review",
        "capability": "fraud_detection",
        "pattern_id": "high-value-order",
        "priority": 9,
        "trigger": {"event_ids": ["evt-42"], "event_type": "order_received",
                    "event_types": ["order_received"]},
        "data": {"order_id": "ord-1", "order_value": 1500},
    }
    assert event.correlation_id == "ord-1"
    assert event.causation_id == "evt-42"
    assert "pattern_key" not in event.metadata
    assert parse_event(event.to_bytes()) == event


def test_an_uncorrelated_trigger_gives_an_uncorrelated_action(event_factory):
    trigger = event_factory(correlation_id=None)

    action = build_action(pattern_id="p", action="a", capability="c", priority=1,
                          triggers=(trigger,))

    assert action.key is None
    assert "correlation_id" not in action.event.metadata
    assert action.event.causation_id == trigger.event_id


def test_an_action_from_several_triggers(event_factory):
    first = event_factory("cart.created", {"cart": 1}, event_id="e1")
    last = event_factory("order_received", {"order": 2}, event_id="e2", correlation_id="ord-2")

    action = build_action(pattern_id="p", action="a", capability="c", priority=1,
                          triggers=(first, last), key="cust-9", extra={"variant": "x"})

    assert action.event.payload["trigger"] == {
        "event_ids": ["e1", "e2"], "event_type": "order_received",
        "event_types": ["cart.created", "order_received"]}
    assert action.event.payload["data"] == {"order": 2}
    assert action.event.payload["variant"] == "x"
    assert action.event.causation_id == "e2"
    assert action.event.metadata["pattern_key"] == "cust-9"


def build(pattern_id: str, trigger_ids: list[str], *, key: str | None = "k",
          variant: str = "") -> str:
    triggers = [new_event("t", {}, source="s", event_id=i, correlation_id=key,
                          timestamp="2024-05-01T12:00:00Z") for i in trigger_ids]
    return build_action(pattern_id=pattern_id, action="a", capability="c", priority=1,
                        triggers=triggers, variant=variant).event.event_id


def test_the_action_id_is_deterministic(event_factory):
    trigger = event_factory(event_id="evt-7")

    first = build_action(pattern_id="p", action="a", capability="c", priority=1,
                         triggers=(trigger,))
    again = build_action(pattern_id="p", action="a", capability="c", priority=1,
                         triggers=(trigger,))

    assert first.event.event_id == again.event.event_id
    assert first.event.event_id == action_id("p", "ord-1", ["evt-7"])


# Any text, separators included: the id's encoding must keep distinct inputs apart.
names = st.text(st.characters(exclude_categories=["Cs"]),
                min_size=1, max_size=12)


@given(pattern_id=names, trigger_ids=st.lists(names, min_size=1, max_size=3), key=names)
def test_same_pattern_key_and_triggers_give_the_same_id(pattern_id: str, trigger_ids: list[str],
                                                        key: str):
    assert build(pattern_id, trigger_ids, key=key) == build(pattern_id, trigger_ids, key=key)


@given(st.lists(names, min_size=1, max_size=3), st.lists(names, min_size=1, max_size=3))
def test_different_triggers_give_different_ids(one: list[str], other: list[str]):
    assume(one != other)

    assert build("p", one) != build("p", other)


@given(names, names)
def test_different_patterns_give_different_ids(one: str, other: str):
    assume(one != other)

    assert build(one, ["e1"]) != build(other, ["e1"])


@given(names, names)
def test_different_keys_give_different_ids(one: str, other: str):
    assume(one != other)

    assert build("p", ["e1"], key=one) != build("p", ["e1"], key=other)


@given(st.text(max_size=8), st.text(max_size=8))
def test_different_variants_give_different_ids(one: str, other: str):
    assume(one != other)

    assert build("p", ["e1"], variant=one) != build("p", ["e1"], variant=other)


def test_two_different_events_never_share_an_action_id(event_factory):
    one = event_factory(event_id="\x1fevt", correlation_id="ord")
    other = event_factory(event_id="evt", correlation_id="ord\x1f")

    def id_for(trigger: Event) -> str:
        return build_action(pattern_id="p", action="a", capability="c", priority=1,
                            triggers=(trigger,)).event.event_id

    assert id_for(one) != id_for(other)


# --- the bundled e-commerce choreography ------------------------------------------------------

@pytest.fixture
def shop(ecommerce) -> EventMatcher:
    return EventMatcher(ecommerce.patterns)


@pytest.mark.parametrize(("event_type", "payload", "expected"), [
    pytest.param("order_received", {"order_value": 1500},
                 [("request_manual_review", "fraud_detection", 9),
                  ("check_inventory", "inventory_management", 8)], id="high-value"),
    pytest.param("order_received", {"order_value": 1000},
                 [("check_inventory", "inventory_management", 8)], id="exactly-1000"),
    pytest.param("order_received", {"order_value": 54.9},
                 [("check_inventory", "inventory_management", 8)], id="normal"),
    pytest.param("order_received", {"order_value": 0}, [], id="zero-value"),
    pytest.param("order_received", {}, [], id="no-value"),
    pytest.param("inventory_confirmed", {"items_available": True},
                 [("process_payment", "payment_processing", 7)], id="in-stock"),
    pytest.param("inventory_confirmed", {"items_available": False}, [], id="not-available"),
    pytest.param("inventory_shortage", {"shortage_quantity": 2},
                 [("notify_suppliers", "supplier_management", 5)], id="shortage"),
    pytest.param("inventory_shortage", {"shortage_quantity": 0}, [], id="no-shortage"),
    pytest.param("payment_successful", {"payment_status": "confirmed"},
                 [("initiate_fulfillment", "order_fulfillment", 6)], id="paid"),
    pytest.param("payment_successful", {"payment_status": "pending"}, [], id="pending"),
    pytest.param("payment_failed", {},
                 [("retry_payment", "payment_processing", 7)], id="failed-no-count"),
    pytest.param("payment_failed", {"retry_count": 0},
                 [("retry_payment", "payment_processing", 7)], id="failed-0"),
    pytest.param("payment_failed", {"retry_count": 1},
                 [("retry_payment", "payment_processing", 7)], id="failed-1"),
    pytest.param("payment_failed", {"retry_count": 2},
                 [("retry_payment", "payment_processing", 7)], id="failed-2"),
    pytest.param("payment_failed", {"retry_count": 3},
                 [("cancel_order", "order_management", 8)], id="failed-3"),
    pytest.param("payment_failed", {"retry_count": 7},
                 [("cancel_order", "order_management", 8)], id="failed-7"),
    pytest.param("fulfillment_complete", {"items_packed": True},
                 [("schedule_shipping", "shipping_management", 5)], id="packed"),
    pytest.param("fulfillment_complete", {"items_packed": "yes"}, [], id="packed-not-bool"),
    pytest.param("shipping_complete", {"tracking_number": "TRK1"},
                 [("send_tracking_notification", "customer_communication", 4)], id="shipped"),
    pytest.param("shipping_complete", {}, [], id="shipped-without-tracking"),
    pytest.param("shipping_complete", {"tracking_number": ""}, [], id="empty-tracking"),
    pytest.param("delivery_confirmed", {},
                 [("request_product_review", "customer_engagement", 2)], id="delivered"),
    pytest.param("review_requested", {"order_id": "ord-1"}, [], id="no-pattern"),
])
def test_the_ecommerce_choreography(shop: EventMatcher, event_factory, event_type: str,
                                    payload: dict[str, Any], expected: list):
    assert fired(shop, event_factory(event_type, payload)) == expected


def test_an_order_without_a_value_counts_as_a_condition_error(shop: EventMatcher,
                                                              event_factory):
    shop.match(event_factory("order_received", {"order_id": "ord-1"}))

    assert shop.stats.condition_errors == {"order-received": 1, "high-value-order": 1}
