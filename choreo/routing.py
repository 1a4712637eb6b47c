"""Explicit routing among the agents of one capability: round-robin or by weight.

```toml
[capabilities.transcode]
routing = "weighted"      # consumer_group (default) | round_robin | weighted
tag = "gpu"               # optional: only agents announcing this tag
```

The router is pure: given the routable agents (sorted by id) it names one, or None when
there is none. `round_robin` takes them in turn; `weighted` is smooth weighted round-robin
(the nginx upstream algorithm): over any run of sends each agent gets its share of the total
weight within one pick, with no randomness, so the spread does not depend on luck or a seed.
Each sending process keeps its own counters; several senders together still give each agent
its share, each within one pick per sender.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
MODES = ("consumer_group", "round_robin", "weighted")


@dataclass(frozen=True)
class Route:
    """How actions of one capability reach its workers."""

    mode: str = "consumer_group"
    tag: str | None = None

    @property
    def explicit(self) -> bool:
        return self.mode != "consumer_group"


@dataclass(frozen=True)
class Routing:
    routes: Mapping[str, Route] = field(default_factory=dict)

    def for_capability(self, capability: str) -> Route:
        return self.routes.get(capability, Route())


def parse_routing(capabilities: object, fail: Any) -> Routing:
    """Read `routing` and `tag` of each `[capabilities.<name>]` (the rest is checked elsewhere)."""
    if not isinstance(capabilities, dict):
        return Routing()
    routes: dict[str, Route] = {}
    for name, raw in capabilities.items():
        if not isinstance(raw, dict) or ("routing" not in raw and "tag" not in raw):
            continue
        where = f"capabilities.{name}"
        mode = raw.get("routing", "consumer_group")
        if mode not in MODES:
            fail("-", f"{where}.routing", f"must be one of {', '.join(MODES)}; got {mode!r}")
            continue
        tag = raw.get("tag")
        if tag is not None:
            if not isinstance(tag, str) or not NAME.match(tag):
                fail("-", f"{where}.tag", "must be a tag: letters, digits, '_', '-' and '.'")
                continue
            if mode == "consumer_group":
                fail("-", f"{where}.tag", "a tag needs routing = \"round_robin\" or "
                                          "\"weighted\"")
                continue
        routes[name] = Route(mode, tag)
    return Routing(routes)


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    weight: float = 1.0


@dataclass
class Router:
    """Picks an agent per action; keeps one cursor per capability (and tag)."""

    _turn: dict[tuple[str, str | None], int] = field(default_factory=dict)
    _current: dict[tuple[str, str | None], dict[str, float]] = field(default_factory=dict)

    def choose(self, capability: str, route: Route, candidates: Sequence[Candidate]
               ) -> str | None:
        if not candidates:
            return None
        key = (capability, route.tag)
        if route.mode == "round_robin":
            turn = self._turn.get(key, 0)
            self._turn[key] = turn + 1
            return candidates[turn % len(candidates)].agent_id
        if route.mode == "weighted":
            return self._smooth_weighted(key, candidates)
        raise ValueError(f"routing mode {route.mode!r} names no agent")

    def _smooth_weighted(self, key: tuple[str, str | None], candidates: Sequence[Candidate]
                         ) -> str:
        current = self._current.setdefault(key, {})
        ids = {c.agent_id for c in candidates}
        for gone in [a for a in current if a not in ids]:
            del current[gone]  # an agent that went away leaves no credit behind
        total = 0.0
        best: Candidate | None = None
        for candidate in candidates:
            current[candidate.agent_id] = current.get(candidate.agent_id, 0.0) + candidate.weight
            total += candidate.weight
            if best is None or current[candidate.agent_id] > current[best.agent_id]:
                best = candidate
        assert best is not None
        current[best.agent_id] -= total
        return best.agent_id
