"""Generated choreographies load, mix the kinds and always fire; events are valid envelopes."""

from __future__ import annotations

import time

import pytest

from bench.generate import (
    ECOMMERCE_FLOW,
    ecommerce_choreography,
    ecommerce_events,
    ecommerce_orders,
    generate_choreography,
    generated_events,
)
from bench.profile import short_frame, summarise
from choreo.config import load_choreography
from choreo.envelope import parse_event
from choreo.matching import EventMatcher


@pytest.mark.parametrize("count", [1, 7, 10, 100, 1000])
def test_every_generated_file_loads(tmp_path, count: int) -> None:
    generated = generate_choreography(count, prefix="bench-x.")
    path = tmp_path / f"gen-{count}.toml"
    path.write_text(generated.text)
    choreography = load_choreography(path)
    assert len(choreography.patterns) == count == generated.patterns
    assert choreography.topics.events_topic == "bench-x.events"
    assert {p.kind for p in choreography.patterns} == set(generated.kinds)
    assert {p.id: p.kind for p in choreography.patterns} == generated.kind_of


def test_kinds_are_mixed_and_spread_over_types() -> None:
    generated = generate_choreography(100)
    assert generated.kinds == {"event": 40, "threshold": 20, "sequence": 20, "absence": 20}
    assert len(generated.event_types) == 20
    assert generate_choreography(1000).kinds["absence"] == 200


def test_bundled_file_loads_under_a_prefix(tmp_path) -> None:
    path = tmp_path / "ecommerce.toml"
    path.write_text(ecommerce_choreography("bench-y.").text)
    assert load_choreography(path).topics.events_topic == "bench-y.events"


def test_each_generated_event_fires_an_event_pattern(tmp_path) -> None:
    generated = generate_choreography(100)
    path = tmp_path / "gen.toml"
    path.write_text(generated.text)
    matcher = EventMatcher(load_choreography(path).patterns)
    make = generated_events("run", generated.event_types, keys=50)
    for i in range(300):
        key, value = make(i, time.time())
        event = parse_event(value)
        assert key == event.correlation_id.encode()
        assert event.payload["sent_at"] > 0
        assert matcher.match(event), f"event {i} ({event.event_type}) fired nothing"


def test_each_ecommerce_event_fires_in_the_bundled_file(tmp_path) -> None:
    path = tmp_path / "ecommerce.toml"
    path.write_text(ecommerce_choreography().text)
    matcher = EventMatcher(load_choreography(path).patterns)
    make = ecommerce_events("run")
    for i in range(len(ECOMMERCE_FLOW) * 3):
        key, value = make(i, time.time())
        event = parse_event(value)
        assert key == f"ord-{i // len(ECOMMERCE_FLOW)}".encode()
        assert matcher.match(event)


def test_keys_scenario_orders_are_new_keys_and_go_quiet_within_the_cut_horizons(tmp_path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(ecommerce_choreography("bench-k.", quiet_after="2m").text)
    choreography = load_choreography(path)
    assert choreography.defaults.dedup_horizon == 120.0
    assert choreography.defaults.correlation_ttl == 120.0
    matcher = EventMatcher(choreography.patterns)
    make = ecommerce_orders("run")
    keys = set()
    for i in range(100):
        key, value = make(i, time.time())
        event = parse_event(value)
        assert event.event_type == "order_received" and key == event.correlation_id.encode()
        assert matcher.match(event)
        keys.add(key)
    assert len(keys) == 100
    # The bundled file itself keeps its 24 h horizons.
    path.write_text(ecommerce_choreography("bench-k.").text)
    assert load_choreography(path).defaults.correlation_ttl == 24 * 3600.0


def test_one_key_per_event_when_keys_is_none() -> None:
    make = generated_events("run", ("a.b",), keys=None)
    assert {make(i, time.time())[0] for i in range(100)} == {f"k{i}".encode() for i in range(100)}


def test_profile_summary_counts_own_and_inclusive_time() -> None:
    raw = ("main (/x/site-packages/faust/app.py:1);process_record "
           "(/repo/streams/match_events.py:40);dumps (<built-in>) 3\n"
           "main (/x/site-packages/faust/app.py:1) 1\n")
    summary = summarise(raw)
    assert summary["samples"] == 4
    assert summary["self"][0][:2] == ("<built-in>:dumps", 3)
    inclusive = dict((name, n) for name, n, _ in summary["inclusive"])
    assert inclusive["faust/app.py:main"] == 4
    assert inclusive["streams/match_events.py:process_record"] == 3
    assert short_frame("f (/usr/lib/python3.11/json/decoder.py:3)") == "stdlib/json/decoder.py:f"
