"""The trail view, and the sample orders played through the choreography in process."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import orjson
import pytest

from agents.ecommerce import HANDLERS
from agents.worker import lifecycle_events
from choreo.actions import build_action, by_priority
from choreo.config import Choreography
from choreo.envelope import Event, parse_event
from choreo.matchers import key_for, matcher_for
from choreo.matching import EventMatcher, PatternStats
from choreo.samples import (
    ABANDONED_TRAIL,
    DECLINED_TRAIL,
    HAPPY_TRAIL,
    HIGH_VALUE_TRAIL,
    OUT_OF_STOCK_TRAIL,
    order,
    sample_orders,
)
from choreo.trail import build_trail, render


def action_for(trigger: Event, name: str, capability: str, priority: int) -> Event:
    return build_action(pattern_id=f"{name}-pattern", action=name, capability=capability,
                        priority=priority, triggers=(trigger,)).event


def started(action: Event) -> dict[str, Any]:
    return {"event_id": f"{action.event_id}-started", "event_type": "action.started",
            "payload": {}, "metadata": {"causation_id": action.event_id}}


# --- building and rendering -------------------------------------------------------------------

def test_effects_hang_below_their_causes(event_factory):
    placed = event_factory("order_received", event_id="o1")
    check = action_for(placed, "check_inventory", "inventory_management", 8)
    confirmed = event_factory("inventory_confirmed", causation_id=check.event_id)

    lines = render(build_trail([e.as_dict() for e in (placed, check, confirmed)]))

    assert lines == [
        "order_received",
        "  -> check_inventory @inventory_management",
        "    inventory_confirmed",
    ]


def test_a_duplicated_event_is_shown_once(event_factory):
    placed = event_factory("order_received")
    check = action_for(placed, "check_inventory", "inventory_management", 8)
    records = [placed.as_dict(), check.as_dict(), placed.as_dict(), check.as_dict()]

    assert render(build_trail(records)) == [
        "order_received",
        "  -> check_inventory @inventory_management",
    ]


def test_lifecycle_events_are_hidden_unless_asked_for(event_factory):
    placed = event_factory("order_received")
    check = action_for(placed, "check_inventory", "inventory_management", 8)
    records = [placed.as_dict(), check.as_dict(), started(check)]

    assert render(build_trail(records)) == [
        "order_received",
        "  -> check_inventory @inventory_management",
    ]
    assert render(build_trail(records, lifecycle=True)) == [
        "order_received",
        "  -> check_inventory @inventory_management",
        "    action.started",
    ]


def test_actions_of_one_event_go_highest_priority_first(event_factory):
    placed = event_factory("order_received")
    low = action_for(placed, "check_inventory", "inventory_management", 8)
    high = action_for(placed, "request_manual_review", "fraud_detection", 9)
    lowest = action_for(placed, "log_order", "audit", 1)

    lines = render(build_trail([e.as_dict() for e in (placed, lowest, low, high)]))

    assert lines == [
        "order_received",
        "  -> request_manual_review @fraud_detection",
        "  -> check_inventory @inventory_management",
        "  -> log_order @audit",
    ]


def test_results_of_one_action_keep_arrival_order(event_factory):
    ship = action_for(event_factory("fulfillment_complete"), "schedule_shipping", "shipping", 5)
    shipped = event_factory("shipping_complete", causation_id=ship.event_id)
    delivered = event_factory("delivery_confirmed", causation_id=ship.event_id)

    [root] = build_trail([ship.as_dict(), shipped.as_dict(), delivered.as_dict()])

    assert [child.label() for child in root.children] == ["shipping_complete",
                                                          "delivery_confirmed"]


def test_events_whose_cause_is_unknown_become_roots(event_factory):
    first = event_factory("order_received")
    orphan = event_factory("payment_failed", causation_id="evt-from-elsewhere")
    second = event_factory("order_received")

    lines = render(build_trail([first.as_dict(), orphan.as_dict(), second.as_dict()]))

    assert lines == ["order_received", "payment_failed", "order_received"]


def test_an_event_whose_cause_is_a_hidden_lifecycle_event_becomes_a_root(event_factory):
    placed = event_factory("order_received")
    check = action_for(placed, "check_inventory", "inventory_management", 8)
    note = event_factory("progress_noted", causation_id=f"{check.event_id}-started")

    lines = render(build_trail([placed.as_dict(), check.as_dict(), started(check),
                                note.as_dict()]))

    assert lines == ["order_received", "  -> check_inventory @inventory_management",
                     "progress_noted"]


def test_an_event_that_names_itself_as_its_cause_is_still_shown(event_factory):
    looped = event_factory("order_received", event_id="loop", causation_id="loop")

    assert render(build_trail([looped.as_dict()])) == ["order_received"]


def test_records_without_an_id_are_skipped(event_factory):
    placed = event_factory("order_received")

    lines = render(build_trail([{"event_type": "garbage"}, placed.as_dict()]))

    assert lines == ["order_received"]


def test_render_takes_an_indent(event_factory):
    placed = event_factory("order_received")
    check = action_for(placed, "check_inventory", "inventory_management", 8)

    assert render(build_trail([placed.as_dict(), check.as_dict()]), indent="| ") == [
        "order_received", "| -> check_inventory @inventory_management"]


# --- the sample orders, played through the choreography and the example workers ----------------

def play(ecommerce: Choreography, first: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the choreography in process: match each event, hand actions to the workers.

    Every envelope crosses the "wire" as bytes, as it would through Kafka. The keyed
    patterns keep their snapshots in a dict; once nothing is left to do, event time jumps
    past every deadline, as an idle partition's watermark would, and play goes on. Returns
    every record in the order it was published, actions included.
    """
    matcher = EventMatcher(ecommerce.patterns)
    keyed = [(p, matcher_for(p, PatternStats())) for p in ecommerce.patterns
             if p.kind != "event"]
    by_id = {p.id: m for p, m in keyed}
    states: dict[tuple[str, str], dict | None] = {}
    published: list[dict[str, Any]] = []
    queue = deque([parse_event(orjson.dumps(first))])
    watermark = 0.0

    def run(actions: list) -> None:
        for action in actions:
            request = parse_event(action.event.to_bytes())
            published.append(request.as_dict())
            handler = HANDLERS[action.capability][action.name]
            results = asyncio.run(handler(request))
            for produced in lifecycle_events(request, action.capability, results, None, 0.0):
                queue.append(parse_event(produced.to_bytes()))

    while True:
        while queue:
            event = queue.popleft()
            published.append(event.as_dict())
            watermark = max(watermark, event.ts)
            fired = matcher.match(event)
            for pattern, keyed_matcher in keyed:
                key = key_for(pattern, event)
                if key is None or not any(s.type_matches(event.event_type)
                                          for s in pattern.specs):
                    continue
                outcome = keyed_matcher.on_event(states.get((pattern.id, key)), event,
                                                 watermark)
                states[(pattern.id, key)] = outcome.state
                fired += outcome.actions
            run(by_priority(fired))
            assert len(published) < 500, "the choreography does not settle"
        watermark += 10 * 24 * 3600  # every deadline passes
        due = []
        for (pattern_id, key), state in states.items():
            outcome = by_id[pattern_id].on_time(state, watermark)
            states[(pattern_id, key)] = outcome.state
            due += outcome.actions
        if not due and not queue:
            return published
        run(due)


@pytest.mark.parametrize("index", range(len(sample_orders())),
                         ids=[sample[0] for sample in sample_orders()])
def test_each_sample_order_grows_its_expected_trail(ecommerce, index: int):
    # Built here, not at collection: the example workers stamp their events with the wall
    # clock, and an order stamped minutes earlier (a long session) misses its sequence.
    description, envelope, expected = sample_orders()[index]
    records = play(ecommerce, envelope)

    assert render(build_trail(records)) == expected, description
    first_id = envelope["metadata"]["correlation_id"]
    assert {r["metadata"].get("correlation_id") for r in records} == {first_id}


def test_the_samples_cover_the_five_expected_trails():
    trails = [expected for _, _, expected in sample_orders()]

    assert trails == [HAPPY_TRAIL, HIGH_VALUE_TRAIL, OUT_OF_STOCK_TRAIL, DECLINED_TRAIL,
                      ABANDONED_TRAIL]


def test_every_action_has_its_lifecycle(ecommerce):
    _, envelope, _ = sample_orders()[0]
    records = play(ecommerce, envelope)

    lines = render(build_trail(records, lifecycle=True))

    assert lines[:6] == [
        "order_received",
        "  -> check_inventory @inventory_management",
        "    action.started",
        "    inventory_confirmed",
        "      -> process_payment @payment_processing",
        "        action.started",
    ]
    actions = [r for r in records if r["event_type"] == "action.requested"]
    for action in actions:
        effects = [r["event_type"] for r in records
                   if r["metadata"].get("causation_id") == action["event_id"]]
        assert effects[0] == "action.started"
        assert effects[-1] == "action.completed"
        assert all(r["source"] == f"agent.{action['payload']['capability']}"
                   for r in records if r["metadata"].get("causation_id") == action["event_id"])


def test_playing_an_order_twice_publishes_the_same_ids(ecommerce):
    _, envelope, _ = sample_orders()[3]

    first = [r["event_id"] for r in play(ecommerce, envelope)]
    again = [r["event_id"] for r in play(ecommerce, envelope)]

    assert first == again


def test_a_lost_delivery_asks_for_no_review(ecommerce):
    lost = order("ord-lost", [("SKU-BOOK", 1)], 12.0, delivery="lost")

    lines = render(build_trail(play(ecommerce, lost)))

    # Shipped but never delivered: the sequence closes the order, nobody asks for a review.
    assert lines == HAPPY_TRAIL[:13]


def test_every_capability_in_the_choreography_has_a_worker(ecommerce):
    assert set(ecommerce.capabilities) == set(HANDLERS)
    for pattern in ecommerce.patterns:
        assert pattern.action in HANDLERS[pattern.capability]
        if getattr(pattern, "timeout_action", None):
            capability = pattern.timeout_capability or pattern.capability
            assert pattern.timeout_action in HANDLERS[capability]
