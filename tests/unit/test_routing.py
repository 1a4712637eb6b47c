"""The router: round-robin order, weighted spread, down agents skipped; the routing config."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from choreo.config import ConfigError, parse_choreography
from choreo.registry import Descriptor, Registry, heartbeat_record
from choreo.routing import Candidate, Route, Router

RR = Route("round_robin")
WEIGHTED = Route("weighted")


def test_round_robin_takes_agents_in_turn():
    router = Router()
    agents = [Candidate("a"), Candidate("b"), Candidate("c")]
    assert [router.choose("cap", RR, agents) for _ in range(7)] == list("abcabca")


def test_round_robin_keeps_one_cursor_per_capability():
    router = Router()
    agents = [Candidate("a"), Candidate("b")]
    assert router.choose("x", RR, agents) == "a"
    assert router.choose("y", RR, agents) == "a"
    assert router.choose("x", RR, agents) == "b"


def test_no_candidate_gives_none():
    assert Router().choose("cap", WEIGHTED, []) is None


def test_weighted_spread_is_exact_over_a_full_cycle():
    router = Router()
    agents = [Candidate("a", 1), Candidate("b", 2), Candidate("c", 3)]
    picks = Counter(router.choose("cap", WEIGHTED, agents) for _ in range(600))
    assert picks == {"a": 100, "b": 200, "c": 300}


def test_weighted_is_smooth_not_bursty():
    router = Router()
    agents = [Candidate("a", 1), Candidate("b", 5)]
    picks = [router.choose("cap", WEIGHTED, agents) for _ in range(6)]
    assert "".join(picks) == "bbabbb"  # a is in the middle, not left to the end


@given(st.lists(st.integers(1, 20), min_size=1, max_size=8), st.integers(1, 500))
def test_weighted_every_prefix_is_within_one_pick_of_its_share(weights, sends):
    router = Router()
    agents = [Candidate(f"a{i}", w) for i, w in enumerate(weights)]
    total = sum(weights)
    picks: Counter[str] = Counter()
    for n in range(1, sends + 1):
        picks[router.choose("cap", WEIGHTED, agents)] += 1
        for i, w in enumerate(weights):
            assert abs(picks[f"a{i}"] - n * w / total) < len(weights)


def test_weighted_forgets_an_agent_that_left_and_spreads_over_the_rest():
    router = Router()
    agents = [Candidate("a", 1), Candidate("b", 2), Candidate("c", 3)]
    for _ in range(5):
        router.choose("cap", WEIGHTED, agents)
    rest = [Candidate("a", 1), Candidate("b", 2)]
    picks = Counter(router.choose("cap", WEIGHTED, rest) for _ in range(300))
    assert picks == {"a": 100, "b": 200}


def _registry_with(*agents: tuple[str, float, tuple[str, ...]], now: float) -> Registry:
    registry = Registry(missed_heartbeats=3)
    for agent_id, weight, tags in agents:
        d = Descriptor(agent_id, ("cap",), tags, weight, "1", 1.0, "g",
                       {"cap": f"capability.cap.{agent_id}"})
        registry.apply(agent_id, heartbeat_record("announce", d, "inc-" + agent_id, 0, now), now)
    return registry


def test_routing_over_the_registry_skips_a_down_agent_and_filters_by_tag():
    now = 1000.0
    registry = _registry_with(("a", 1, ("gpu",)), ("b", 2, ("gpu",)), ("c", 3, ()), now=now)
    router = Router()
    route = Route("weighted", "gpu")

    def pick(at: float) -> str | None:
        found = registry.candidates("cap", route.tag, at)
        return router.choose("cap", route, [Candidate(s.descriptor.agent_id,
                                                      s.descriptor.weight) for s in found])

    assert Counter(pick(now + 1) for _ in range(300)) == {"a": 100, "b": 200}
    # b keeps beating, a stops: after 3 missed 1 s heartbeats only b is routable
    d = registry.agents["b"].descriptor
    registry.apply("b", heartbeat_record("heartbeat", d, "inc-b", 1, now + 3.5), now + 3.5)
    assert Counter(pick(now + 3.5) for _ in range(10)) == {"b": 10}
    assert pick(now + 10) is None  # nobody is left: the caller falls back


def test_routing_config_is_read_and_checked():
    base = """
[[patterns]]
id = "p"
kind = "event"
on = "x"
action = "do"
capability = "cap"
"""
    c = parse_choreography(base + '[capabilities.cap]\nrouting = "weighted"\ntag = "gpu"\n'
                                  'max_retries = 1\n')
    assert c.routing.for_capability("cap") == Route("weighted", "gpu")
    assert c.workers.for_capability("cap").max_retries == 1
    assert not parse_choreography(base).routing.for_capability("cap").explicit
    with pytest.raises(ConfigError) as bad:
        parse_choreography(base + '[capabilities.cap]\nrouting = "random"\n')
    assert "capabilities.cap.routing" in str(bad.value)
    with pytest.raises(ConfigError) as tag_alone:
        parse_choreography(base + '[capabilities.cap]\ntag = "gpu"\n')
    assert "a tag needs routing" in str(tag_alone.value)
    with pytest.raises(ConfigError) as agents:
        parse_choreography(base + '[agents]\nheartbeat_interval = "0s"\nmissed = 2\n')
    assert "agents.heartbeat_interval" in str(agents.value)
    assert "agents.missed" in str(agents.value)
    c = parse_choreography(base + '[topics]\nagents = "reg"\n[agents]\n'
                                  'heartbeat_interval = "500ms"\nmissed_heartbeats = 4\n')
    assert (c.agents.heartbeat_interval, c.agents.missed_heartbeats) == (0.5, 4)
    assert c.topics.agents_topic == "reg"
    assert c.topics.inbox_topic("cap", "a1") == "capability.cap.a1"
    assert c.agents.enabled
    assert not parse_choreography(base).agents.enabled  # no [agents], no routing: off
    routed = parse_choreography(base + '[capabilities.cap]\nrouting = "round_robin"\n')
    assert routed.agents.enabled  # routing turns the registry on
    with pytest.raises(ConfigError, match="explicit routing needs the agent registry"):
        parse_choreography(base + '[agents]\nenabled = false\n[capabilities.cap]\n'
                                  'routing = "weighted"\n')
