"""`choreo check --static`: what the file says about who produces what, checked without Kafka.

- every event type a pattern listens to is produced by some capability (`produces`) or listed
  in `[events] external` (error);
- every pattern can fire: starting from the external types, its events can happen (error);
- loops, where an action's result events fire the same pattern again: a warning when a
  condition or content filter on the way could stop it, an error when nothing could.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from choreo.config import Choreography
from choreo.patterns import (
    AbsencePattern,
    EventSpec,
    Pattern,
    SequencePattern,
    TemporalPattern,
)
from choreo.producers import LIFECYCLE


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    code: str  # missing_producer, unreachable, loop, unguarded_loop, ...
    message: str
    pattern_id: str = "-"

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


@dataclass(frozen=True)
class Listen:
    """One event spec of a pattern and its role there."""

    role: str  # "on", "all_of[1]", "steps[0]", "after", "expect"
    spec: EventSpec
    fires: bool  # False for an absence's `expect`: it stops the pattern, never fires it

    @property
    def guarded(self) -> bool:
        return bool(self.spec.conditions or self.spec.filters)


@dataclass(frozen=True)
class Emit:
    """An action a pattern sends, and whether it needs every spec or only the first step."""

    action: str
    capability: str
    timeout: bool = False


def listens(pattern: Pattern) -> tuple[Listen, ...]:
    """Every spec a pattern listens to, with its role."""
    if isinstance(pattern, TemporalPattern):
        return tuple(Listen(f"all_of[{i}]", s, True) for i, s in enumerate(pattern.all_of))
    if isinstance(pattern, SequencePattern):
        return tuple(Listen(f"steps[{i}]", s, True) for i, s in enumerate(pattern.steps))
    if isinstance(pattern, AbsencePattern):
        return (Listen("after", pattern.after, True), Listen("expect", pattern.expect, False))
    return (Listen("on", pattern.specs[0], True),)


def emits(pattern: Pattern) -> tuple[Emit, ...]:
    """The actions a pattern may send: its action, and a sequence's timeout action."""
    out = [Emit(pattern.action, pattern.capability)]
    if isinstance(pattern, SequencePattern) and pattern.timeout_action:
        out.append(Emit(pattern.timeout_action,
                        pattern.timeout_capability or pattern.capability, timeout=True))
    return tuple(out)


def needs(pattern: Pattern, emit: Emit) -> tuple[Listen, ...]:
    """The specs whose events must happen for the pattern to send `emit`."""
    specs = listens(pattern)
    if emit.timeout:  # a step goes overdue once the first step has matched
        return specs[:1]
    return tuple(listen for listen in specs if listen.fires)


def overlaps(on: str, produced: str) -> bool:
    """Whether events of type (or glob) `produced` can match the spec `on` (a type or glob).

    Two globs are taken to overlap when either matches the other's text: an approximation.
    """
    if on == produced:
        return True
    if fnmatchcase(produced, on):
        return True
    return any(ch in produced for ch in "*?[") and fnmatchcase(on, produced)


def results(choreography: Choreography, emit: Emit) -> tuple[str, ...]:
    """The event types an action may publish: its declared results and the lifecycle."""
    return choreography.production.results(emit.capability, emit.action) + LIFECYCLE


def check_static(choreography: Choreography) -> list[Finding]:
    """Every finding, errors first, in a stable order."""
    findings = [*_undeclared(choreography), *_missing_producers(choreography)]
    missing = {f.pattern_id for f in findings if f.code == "missing_producer"}
    findings += _unreachable(choreography, skip=missing)
    findings += _loops(choreography)
    findings.sort(key=lambda f: (f.level != "error", f.code, f.message))
    return findings


def _undeclared(choreography: Choreography) -> Iterator[Finding]:
    for capability in choreography.sends:
        if capability not in choreography.production.declared:
            yield Finding("warning", "undeclared_produces",
                          f"capability {capability!r} does not declare what it produces "
                          f"([capabilities.{capability}] produces = [...]); the check takes "
                          f"it to publish only action.started/completed/failed")


def _producers(choreography: Choreography) -> list[tuple[str, str]]:
    """(event type or glob, who) for everything anyone publishes."""
    out = [(t, "external") for t in choreography.production.external]
    for pattern in choreography.patterns:
        for emit in emits(pattern):
            out += [(t, f"{emit.action} @ {emit.capability}")
                    for t in results(choreography, emit)]
    return out


def _missing_producers(choreography: Choreography) -> Iterator[Finding]:
    produced = [t for t, _ in _producers(choreography)]
    for pattern in choreography.patterns:
        for listen in listens(pattern):
            if any(overlaps(listen.spec.on, t) for t in produced):
                continue
            if listen.fires:
                yield Finding("error", "missing_producer",
                              f"pattern '{pattern.id}' listens to {listen.spec.on!r} "
                              f"({listen.role}), which no capability produces and "
                              f"[events] external does not list", pattern.id)
            else:
                yield Finding("warning", "never_expected",
                              f"pattern '{pattern.id}' expects {listen.spec.on!r}, which "
                              f"nobody produces: it fires after every {pattern.specs[0].on!r}",
                              pattern.id)


def _unreachable(choreography: Choreography, skip: set[str]) -> Iterator[Finding]:
    """Patterns that cannot fire, starting from the external event types."""
    available: list[str] = list(choreography.production.external)
    fired: set[tuple[str, Emit]] = set()
    changed = True
    while changed:
        changed = False
        for pattern in choreography.patterns:
            for emit in emits(pattern):
                if (pattern.id, emit) in fired:
                    continue
                if all(any(overlaps(need.spec.on, t) for t in available)
                       for need in needs(pattern, emit)):
                    fired.add((pattern.id, emit))
                    available += results(choreography, emit)
                    changed = True
    able = {pattern_id for pattern_id, _ in fired}
    for pattern in choreography.patterns:
        if pattern.id in able or pattern.id in skip:
            continue
        unmet = [need.spec.on for need in needs(pattern, emits(pattern)[0])
                 if not any(overlaps(need.spec.on, t) for t in available)]
        yield Finding("error", "unreachable",
                      f"pattern '{pattern.id}' can never fire: {', '.join(map(repr, unmet))} "
                      f"only come(s) from actions of patterns that never fire", pattern.id)


@dataclass(frozen=True)
class Edge:
    """P's action publishes `event_type`, which fires Q through `listen`."""

    source: str
    target: str
    event_type: str
    emit: Emit
    listen: Listen


def edges(choreography: Choreography) -> dict[str, list[Edge]]:
    """Pattern -> the patterns its actions' result events may fire."""
    out: dict[str, list[Edge]] = {p.id: [] for p in choreography.patterns}
    for source in choreography.patterns:
        for emit in emits(source):
            for event_type in results(choreography, emit):
                for target in choreography.patterns:
                    for listen in listens(target):
                        if listen.fires and overlaps(listen.spec.on, event_type):
                            out[source.id].append(
                                Edge(source.id, target.id, event_type, emit, listen))
    return out


def _shortest_cycle(graph: dict[str, list[Edge]], start: str) -> list[Edge] | None:
    """The shortest path of edges from `start` back to itself (breadth first)."""
    queue: deque[tuple[str, list[Edge]]] = deque([(start, [])])
    seen = {start}
    while queue:
        node, path = queue.popleft()
        for edge in graph[node]:
            if edge.target == start:
                return path + [edge]
            if edge.target not in seen:
                seen.add(edge.target)
                queue.append((edge.target, path + [edge]))
    return None


def describe_cycle(cycle: list[Edge], choreography: Choreography) -> str:
    """'payment_failed -> payment-failed-retry -> retry_payment @ payment_processing -> ...'."""
    parts = [cycle[-1].event_type]
    for edge in cycle:
        parts += [edge.source, f"{edge.emit.action} @ {edge.emit.capability}", edge.event_type]
    return " -> ".join(parts)


def _loops(choreography: Choreography) -> Iterator[Finding]:
    graph = edges(choreography)
    reported: set[tuple[str, ...]] = set()
    for pattern in choreography.patterns:
        cycle = _shortest_cycle(graph, pattern.id)
        if cycle is None:
            continue
        ids = [edge.source for edge in cycle]
        turn = ids.index(min(ids))  # the same cycle found from another of its patterns
        cycle = cycle[turn:] + cycle[:turn]
        key = tuple(edge.source for edge in cycle)
        if key in reported:
            continue
        reported.add(key)
        guards = [edge for edge in cycle if edge.listen.guarded]
        text = describe_cycle(cycle, choreography)
        if guards:
            how = "; ".join(f"'{e.target}' ({e.listen.role}) " + " and ".join(
                [f"when {c.source}" for c in e.listen.spec.conditions]
                + ["match" for _ in e.listen.spec.filters]) for e in guards)
            yield Finding("warning", "loop",
                          f"loop: {text}; guarded by {how}: make sure it turns false")
        else:
            yield Finding("error", "unguarded_loop",
                          f"loop: {text}; no condition or content filter on it can stop it")
