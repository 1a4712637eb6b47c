"""The comparisons a replay reports, and the offline engine it runs."""

from __future__ import annotations

import asyncio
import time

import orjson

from choreo.config import parse_choreography
from choreo.envelope import iso_from_ts, new_event
from choreo.kafka_io import Record, key_for
from choreo.replay_diff import canonical_state, compare_states, diff_actions, triggered_within
from choreo.samples import with_short_windows
from choreo.settings import BUNDLED_CONFIG, Settings
from streams.replay import Replayer
from tables.pattern_state import partition_for


def entry(state: dict, wm: float = 1.0, offsets: dict | None = None) -> bytes:
    return orjson.dumps({"p": 0, "o": offsets or {"e": 3}, "s": {**state, "wm": wm}})


def test_state_comparison_ignores_watermarks_and_names_what_differs():
    live = {b"seq\x1fa": entry({"core": {"n": 1}}, wm=5.0), b"seq\x1fb": entry({"core": {}}),
            b"\x00wm\x1fe0": b"[1.0, 3]"}
    rebuilt = {b"seq\x1fa": entry({"core": {"n": 1}}, wm=9.0), b"seq\x1fc": entry({"core": {}}),
               b"\x00wm\x1fe0": b"[2.0, 3]"}
    result = compare_states(canonical_state(live), canonical_state(rebuilt))
    assert (result.only_live, result.only_rebuilt, result.different) == (
        [("seq", "b")], [("seq", "c")], [])
    rebuilt[b"seq\x1fa"] = entry({"core": {"n": 2}})
    result = compare_states(canonical_state(live), canonical_state(rebuilt), keys=["a"])
    assert [(k, f) for k, f, _a, _b in result.different] == [(("seq", "a"), ["s.core.n"])]
    assert not result.only_live and result.live == 1


def action(event_id: str, priority: int = 1, triggers: tuple[str, ...] = ("e1",)) -> dict:
    return {"event_id": event_id, "timestamp": "2026-01-01T00:00:00Z",
            "payload": {"action": "a", "capability": "c", "pattern_id": "p",
                        "priority": priority, "trigger": {"event_ids": list(triggers)}},
            "metadata": {"correlation_id": "k", "emitted_at": f"{time.time()}"}}


def test_actions_are_matched_by_id_and_emitted_at_is_ignored():
    emitted = [("t", action("1")), ("t", action("2")), ("t", action("3"))]
    replayed = [("t", action("1")), ("t", action("3", priority=5)), ("t", action("4"))]
    diff = diff_actions(emitted, replayed)
    assert [a["event_id"] for a in diff.added] == ["4"]
    assert [a["event_id"] for a in diff.removed] == ["2"]
    assert [(old["event_id"], fields) for old, _new, fields in diff.changed] == [
        ("3", ["payload.priority"])]
    assert diff.same == 1
    assert triggered_within(action("x", triggers=("e1", "e2")), {"e1", "e2", "e3"})
    assert not triggered_within(action("x", triggers=("e1", "e9")), {"e1", "e2"})


def test_the_offline_engine_fires_and_times_out_as_the_live_one_would():
    choreography = parse_choreography(with_short_windows(BUNDLED_CONFIG.read_text()))
    replayer = Replayer(choreography, Settings(partitions=4))
    t0 = time.time() - 60
    events = [new_event("checkout_started", {"cart_id": "c1"}, source="shop",
                        correlation_id="c1", timestamp=iso_from_ts(t0)).as_dict()]
    events += [new_event("payment_failed", {"customer_id": "cu", "retry_count": n},
                         source="pay", correlation_id=f"o{n}",
                         timestamp=iso_from_ts(t0 + n)).as_dict() for n in range(3)]
    events.append(events[-1])  # a duplicate: dropped
    events.append({"not": "an event"})

    async def run() -> list[str]:
        for n, e in enumerate(events):
            key = key_for(e)
            partition = partition_for(key.decode(), 4) if key else 0
            await replayer.feed(Record("events", partition, n, key, orjson.dumps(e), (),
                                       int((t0 + n) * 1000)))
        output = await replayer.finish(t0 + 30)
        assert dict(output.dead_letters) == {"missing_field": 1}
        return [a["payload"]["action"] for _t, a in output.actions]

    actions = asyncio.run(run())
    # Three retries, the customer flagged on the third failure (re-keyed by customer id),
    # and the reminder once the abandoned checkout's 4 s have passed.
    assert sorted(actions) == ["flag_customer", "retry_payment", "retry_payment",
                               "retry_payment", "send_checkout_reminder"]
    assert not any(k.startswith(b"abandoned-checkout") for k in replayer.table)
