"""A correlation's trail as a causal tree: events, the actions they fired, and their results."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LIFECYCLE = frozenset({"action.started", "action.completed", "action.failed"})


@dataclass
class Node:
    data: dict[str, Any]
    children: list[Node] = field(default_factory=list)

    @property
    def is_action(self) -> bool:
        return self.data.get("event_type") == "action.requested"

    def label(self) -> str:
        payload = self.data.get("payload") or {}
        if self.is_action:
            return f"-> {payload.get('action')} @{payload.get('capability')}"
        return str(self.data.get("event_type"))


def build_trail(envelopes: Iterable[dict[str, Any]], *, lifecycle: bool = False) -> list[Node]:
    """Roots (events with no known cause) with their effects below them, in arrival order.

    Duplicated ids appear once. Lifecycle events are left out unless asked for.
    """
    nodes: dict[str, Node] = {}
    order: list[Node] = []
    for data in envelopes:
        event_id = data.get("event_id")
        if not isinstance(event_id, str) or event_id in nodes:
            continue
        if not lifecycle and data.get("event_type") in LIFECYCLE:
            continue
        nodes[event_id] = node = Node(data)
        order.append(node)
    roots = []
    for node in order:
        cause = (node.data.get("metadata") or {}).get("causation_id")
        parent = nodes.get(cause) if isinstance(cause, str) else None
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    for node in order:
        # Actions fired by one event go out highest priority first.
        node.children.sort(key=lambda n: -(n.data.get("payload") or {}).get("priority", 0)
                           if n.is_action else 0)
    return roots


def render(roots: list[Node], indent: str = "  ") -> list[str]:
    """One line per node, indented by depth."""
    lines: list[str] = []

    def walk(node: Node, depth: int) -> None:
        lines.append(indent * depth + node.label())
        for child in node.children:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return lines
