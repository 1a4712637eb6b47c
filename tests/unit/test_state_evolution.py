"""Stored pattern state meets an edited choreography file: kept, carried over, adapted, dropped.

The table is a plain dict (as a replay holds it); states are made by the real matchers.
"""

from __future__ import annotations

import math

import pytest

from choreo.config import parse_choreography
from choreo.envelope import iso_from_ts, new_event
from choreo.matchers import matcher_for
from choreo.matching import PatternStats
from choreo.metrics import STATE_DROPPED
from choreo.state_evolution import StatePlan
from tables.pattern_state import PatternStateTable

T0 = 1_700_000_000.0

SEQUENCE = """
[[patterns]]
id = "{id}"
kind = "sequence"
steps = [{steps}]
max_interval = "10m"
action = "confirm"
capability = "orders"
{extra}
"""
THRESHOLD = """
[[patterns]]
id = "{id}"
kind = "threshold"
on = "payment_failed"
count = 3
window = "{window}"
window_kind = "{window_kind}"
action = "flag"
capability = "risk"
{extra}
"""
ABSENCE = """
[[patterns]]
id = "{id}"
kind = "absence"
after = "{after}"
expect = "order_placed"
within = "30m"
action = "remind"
capability = "notifications"
"""


def sequence(pid: str = "checkout", steps: str = '"started", "placed", "paid"',
             extra: str = "") -> str:
    return SEQUENCE.format(id=pid, steps=steps, extra=extra)


def threshold(pid: str = "fails", window: str = "10m", window_kind: str = "sliding",
              extra: str = "") -> str:
    return THRESHOLD.format(id=pid, window=window, window_kind=window_kind, extra=extra)


def store_for(text: str) -> PatternStateTable:
    choreography = parse_choreography(text)
    return PatternStateTable({}, 4, 3600.0,  # type: ignore[arg-type]
                             plan=StatePlan.of(choreography))


def feed(store: PatternStateTable, pattern_id: str, key: str, *types_at: tuple[str, float]
         ) -> dict | None:
    """Apply events to the pattern's stored state for key, as the engine does; return it."""
    pattern = next(p for p in store.plan.patterns.values() if p.id == pattern_id)  # type: ignore[union-attr]
    matcher = matcher_for(pattern, PatternStats())
    slot = store.load(pattern_id, key)
    state = slot.state if slot else None
    for event_type, at in types_at:
        event = new_event(event_type, {"amount": 5}, source="t", correlation_id=key,
                          timestamp=iso_from_ts(at))
        state = matcher.on_event(state, event, -math.inf).state
    store.save(pattern_id, key, 0, state, {"e": 1}, matcher.deadline(state), slot is not None)
    return state


def restart(store: PatternStateTable, text: str) -> PatternStateTable:
    """The same stored entries, read by a worker started with the file `text`."""
    again = store_for(text)
    again.table = store.table
    return again


def deadlines(store: PatternStateTable) -> list[tuple[str, str]]:
    return store.due(0, math.inf)


def keyed_deadline(store: PatternStateTable):  # noqa: ANN201
    """`KeyedEngine.deadline_of` over the file's matchers."""
    matchers = {pid: matcher_for(p, PatternStats()) for pid, p in store.plan.patterns.items()}  # type: ignore[union-attr]

    def deadline_of(pattern_id: str, state: dict | None) -> float | None:
        matcher = matchers.get(pattern_id)
        return matcher.deadline(state) if matcher else None
    return deadline_of


def test_a_removed_patterns_state_is_dropped_logged_and_counted(caplog):
    store = store_for(sequence() + threshold())
    feed(store, "checkout", "o1", ("started", T0))
    feed(store, "checkout", "o2", ("started", T0))
    feed(store, "fails", "c1", ("payment_failed", T0))
    before = STATE_DROPPED.labels("removed")._value.get()
    after = restart(store, threshold())
    assert after.load("checkout", "o1") is None
    held = after.rebuild({0}, keyed_deadline(after), topic="events")
    assert held == 1
    assert sorted(k.decode() for k in after.table if not k.startswith(b"\x00")) == [
        "fails\x1fc1"]
    assert deadlines(after) == [("fails", "c1")]
    assert STATE_DROPPED.labels("removed")._value.get() - before == 2
    assert "dropped 2 entries" in caplog.text and "'checkout' 2 (removed)" in caplog.text


def test_a_pattern_whose_kind_changed_starts_afresh():
    store = store_for(sequence())
    feed(store, "checkout", "o1", ("started", T0), ("placed", T0 + 1))
    changed = restart(store, threshold(pid="checkout"))
    assert changed.load("checkout", "o1") is None
    assert changed.rebuild({0}, keyed_deadline(changed), topic="events") == 0
    state = feed(changed, "checkout", "o1", ("payment_failed", T0 + 2))
    assert state["core"] == {"recent": [T0 + 2]}


def test_a_pattern_that_became_an_event_pattern_loses_its_state():
    store = store_for(sequence())
    feed(store, "checkout", "o1", ("started", T0))
    event = """
[[patterns]]
id = "checkout"
kind = "event"
on = "started"
action = "confirm"
capability = "orders"
"""
    changed = restart(store, event)
    before = STATE_DROPPED.labels("kind_changed")._value.get()
    assert changed.rebuild({0}, keyed_deadline(changed), topic="events") == 0
    assert STATE_DROPPED.labels("kind_changed")._value.get() - before == 1


def test_a_renamed_pattern_reads_and_moves_the_old_ids_state():
    store = store_for(sequence())
    feed(store, "checkout", "o1", ("started", T0), ("placed", T0 + 1))
    feed(store, "checkout", "o2", ("started", T0))
    renamed = restart(store, sequence(pid="checkout-v2", extra='renamed_from = "checkout"'))
    # Read before the rebuild (an event may come first): the old id's state is the new one's.
    slot = renamed.load("checkout-v2", "o1")
    assert slot is not None and [s["event_type"] for s in slot.state["core"]["steps"]] == [
        "started", "placed"]
    assert renamed.load("checkout", "o1") is None  # the old id is no pattern any more
    assert feed(renamed, "checkout-v2", "o1", ("paid", T0 + 2)) is None  # completed
    # Completed under the new id: nothing is left under the old one to come back.
    assert renamed.load("checkout-v2", "o1") is None
    assert b"checkout\x1fo1" not in renamed.table
    assert renamed.rebuild({0}, keyed_deadline(renamed), topic="events") == 1
    assert sorted(k.decode() for k in renamed.table if not k.startswith(b"\x00")) == [
        "checkout-v2\x1fo2"]
    assert deadlines(renamed) == [("checkout-v2", "o2")]


def test_a_renamed_entry_already_rewritten_under_the_new_id_wins():
    store = store_for(sequence())
    feed(store, "checkout", "o1", ("started", T0))
    renamed = restart(store, sequence(pid="new", extra='renamed_from = "checkout"'))
    feed(renamed, "new", "o1", ("placed", T0 + 1))
    store.table[b"checkout\x1fo1"] = store.table[b"new\x1fo1"].replace(b"placed", b"started")
    renamed.rebuild({0}, keyed_deadline(renamed), topic="events")
    slot = renamed.load("new", "o1")
    assert [s["event_type"] for s in slot.state["core"]["steps"]] == ["started", "placed"]
    assert b"checkout\x1fo1" not in renamed.table


def test_a_sliding_thresholds_new_window_applies_to_the_times_held():
    store = store_for(threshold(window="10m"))
    feed(store, "fails", "c1", ("payment_failed", T0), ("payment_failed", T0 + 120))
    wider = restart(store, threshold(window="1h"))
    assert wider.rebuild({0}, keyed_deadline(wider), topic="events") == 1
    slot = wider.load("fails", "c1")
    assert slot.state["core"]["recent"] == [T0, T0 + 120]
    pattern = wider.plan.patterns["fails"]  # type: ignore[union-attr]
    assert matcher_for(pattern, PatternStats()).deadline(slot.state) > T0 + 120 + 3599
    # The third failure 30 minutes on counts the two held ones under the new hour window.
    event = new_event("payment_failed", {}, source="t", correlation_id="c1",
                      timestamp=iso_from_ts(T0 + 1800))
    assert len(matcher_for(pattern, PatternStats()).on_event(slot.state, event,
                                                             -math.inf).actions) == 1


def test_a_tumbling_thresholds_changed_window_drops_its_counters():
    store = store_for(threshold(window="1m", window_kind="tumbling"))
    feed(store, "fails", "c1", ("payment_failed", T0))
    changed = restart(store, threshold(window="5m", window_kind="tumbling"))
    before = STATE_DROPPED.labels("window_changed")._value.get()
    assert changed.load("fails", "c1") is None
    assert changed.rebuild({0}, keyed_deadline(changed), topic="events") == 0
    assert STATE_DROPPED.labels("window_changed")._value.get() - before == 1
    sliding = restart(store_for(threshold(window="1m", window_kind="tumbling")),
                      threshold(window="1m"))
    assert sliding.load("fails", "c1") is None  # counters are no timestamps


def test_a_sequence_keeps_partial_matches_that_still_fit_its_new_steps():
    store = store_for(sequence())
    feed(store, "checkout", "fits", ("started", T0))
    feed(store, "checkout", "gone", ("started", T0), ("placed", T0 + 1))
    # A step inserted after "started": "started" still fits; "started, placed" does not.
    edited = restart(store, sequence(steps='"started", "reviewed", "placed", "paid"'))
    assert edited.load("checkout", "fits") is not None
    assert edited.load("checkout", "gone") is None
    assert edited.rebuild({0}, keyed_deadline(edited), topic="events") == 1
    state = feed(edited, "checkout", "fits", ("reviewed", T0 + 2))
    assert [s["event_type"] for s in state["core"]["steps"]] == ["started", "reviewed"]


def test_a_sequence_with_fewer_steps_drops_matches_that_would_be_complete():
    store = store_for(sequence())
    feed(store, "checkout", "o1", ("started", T0), ("placed", T0 + 1))
    shorter = restart(store, sequence(steps='"started", "placed"'))
    assert shorter.load("checkout", "o1") is None


def test_an_absence_keeps_its_pending_event_only_if_it_still_starts_the_window():
    store = store_for(ABSENCE.format(id="cart", after="cart_updated"))
    feed(store, "cart", "k", ("cart_updated", T0))
    same_after = restart(store, ABSENCE.format(id="cart", after="cart_*"))
    assert same_after.load("cart", "k") is not None
    other = restart(store, ABSENCE.format(id="cart", after="cart_opened"))
    assert other.load("cart", "k") is None


def test_entries_stored_without_kind_and_fingerprint_are_told_by_their_shape():
    store = store_for(sequence())
    feed(store, "checkout", "o1", ("started", T0))
    raw = store.table[b"checkout\x1fo1"]
    store.table[b"checkout\x1fo1"] = raw.split(b',"k"')[0] + b"}"  # as main wrote them
    assert restart(store, sequence()).load("checkout", "o1") is not None
    assert restart(store, threshold(pid="checkout")).load("checkout", "o1") is None


@pytest.mark.parametrize("text", [threshold(), sequence()])
def test_an_unchanged_file_keeps_everything_as_stored(text: str):
    store = store_for(text)
    pid = store.plan and next(iter(store.plan.patterns))
    feed(store, pid, "k", ("payment_failed", T0), ("started", T0))
    raw = dict(store.table)
    again = restart(store, text)
    assert again.rebuild({0}, keyed_deadline(again), topic="events") == 1
    assert dict(again.table) == raw


def test_the_state_report_says_what_a_restart_would_keep_carry_and_drop():
    from choreo.state_evolution import judge_all

    store = store_for(sequence() + threshold() + sequence(pid="returns"))
    feed(store, "checkout", "o1", ("started", T0))
    feed(store, "checkout", "o2", ("started", T0))
    feed(store, "fails", "c1", ("payment_failed", T0))
    feed(store, "returns", "r1", ("started", T0))
    store.table[b"~correlation\x1fo1"] = b'{"p":0,"o":{},"s":{}}'
    text = sequence(pid="checkout-v2", extra='renamed_from = "checkout"') + threshold(
        pid="returns")
    plan = store_for(text).plan
    entries = [(pid, key, slot.kind, slot.print_, slot.state)
               for pid, key, slot in store.entries()]
    report = judge_all(plan, entries)  # type: ignore[arg-type]
    assert report.lines(plan) == [  # type: ignore[arg-type]
        "carried over by renamed_from: 'checkout' -> 'checkout-v2' 2",
        "dropped: 'fails' 1 (removed)",
        "dropped: 'returns' 1 (kind_changed: now threshold)",
        "kept: 1 correlation summaries",
        "the file's window, count, max_interval, within and allowed_lateness apply to the "
        "state kept for 'checkout-v2', measured from the event times it holds",
    ]
    assert report.total_dropped == 2
