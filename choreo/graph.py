"""`choreo graph`: the choreography as a Mermaid flowchart.

Event types (stadiums) fire patterns (boxes), which send actions to capabilities (hexagons),
whose declared result events are event types again. External types hang off one `external`
node; lifecycle events (`action.completed`, ...) appear only when a pattern listens to them.
"""

from __future__ import annotations

from choreo.config import Choreography
from choreo.patterns import (
    AbsencePattern,
    Pattern,
    SequencePattern,
    TemporalPattern,
    ThresholdPattern,
)
from choreo.producers import LIFECYCLE
from choreo.static_check import Listen, emits, listens, overlaps


def mermaid(choreography: Choreography) -> str:
    """The flowchart text, nodes in the file's order, ids E1/P1/A1 in first-seen order."""
    events: dict[str, str] = {}
    patterns: dict[str, str] = {}
    actions: dict[tuple[str, str], str] = {}
    edges: list[str] = []
    external = choreography.production.external
    listened = [listen.spec.on for p in choreography.patterns for listen in listens(p)]

    def event(name: str) -> str:
        return events.setdefault(name, f"E{len(events) + 1}")

    def results(capability: str, action: str) -> tuple[str, ...]:
        declared = choreography.production.results(capability, action)
        lifecycle = tuple(t for t in LIFECYCLE if any(overlaps(on, t) for on in listened))
        return declared + lifecycle

    produced = list(external) + [t for p in choreography.patterns for e in emits(p)
                                 for t in results(e.capability, e.action)]
    for name in external:
        edges.append(f"    X --> {event(name)}")
    for pattern in choreography.patterns:
        node = patterns.setdefault(pattern.id, f"P{len(patterns) + 1}")
        for listen in listens(pattern):
            sources = [t for t in dict.fromkeys(produced) if overlaps(listen.spec.on, t)]
            for name in sources or [listen.spec.on]:
                arrow = "-->" if listen.fires else "-.->"
                label = _edge_label(pattern, listen)
                edges.append(f"    {event(name)} {arrow}{label} {node}")
        for emit in emits(pattern):
            key = (emit.action, emit.capability)
            new = key not in actions
            action = actions.setdefault(key, f"A{len(actions) + 1}")
            edges.append(f"    {node} -->{'|timeout|' if emit.timeout else ''} {action}")
            if new:
                for name in results(emit.capability, emit.action):
                    edges.append(f"    {action} --> {event(name)}")
    lines = ["flowchart LR"]
    if external:
        lines.append('    X(("external"))')
    lines += [f'    {node}(["{_text(name)}"])' for name, node in events.items()]
    for pattern in choreography.patterns:
        lines.append(f'    {patterns[pattern.id]}["{_text(pattern.id)}{_kind(pattern)}"]')
    lines += [f'    {node}{{{{"{_text(action)} @ {_text(capability)}"}}}}'
              for (action, capability), node in actions.items()]
    return "\n".join(lines + edges) + "\n"


def _edge_label(pattern: Pattern, listen: Listen) -> str:
    parts = [] if listen.role == "on" else [listen.role]
    parts += [f"when {c.source}" for c in listen.spec.conditions]
    parts += ["match" for _ in listen.spec.filters]
    return f'|"{_text(" · ".join(parts))}"|' if parts else ""


def _kind(pattern: Pattern) -> str:
    if isinstance(pattern, ThresholdPattern):
        return f"<br/>threshold: {pattern.count} in {_duration(pattern.window)}"
    if isinstance(pattern, TemporalPattern):
        return f"<br/>temporal: all within {_duration(pattern.window)}"
    if isinstance(pattern, SequencePattern):
        return f"<br/>sequence: steps within {_duration(pattern.max_interval)}"
    if isinstance(pattern, AbsencePattern):
        return f"<br/>absence: within {_duration(pattern.within)}"
    return ""


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _text(value: str) -> str:
    """Text safe inside a quoted Mermaid label."""
    return (value.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
            .replace(">", "#gt;"))
