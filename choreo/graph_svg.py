"""The choreography as an SVG picture for the web page: five columns, left to right.

Event types -> patterns -> actions -> capabilities -> result events. Each node may carry a
count (events read, times fired, actions sent, actions handled). The layout is layered:
fixed columns, and within a column nodes ordered by the mean position of the nodes that
point to them, so most edges run straight. No JavaScript and nothing fetched: the worker
renders it and the page drops it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape

from choreo.config import Choreography
from choreo.static_check import emits, listens, overlaps

COLUMNS = ("event", "pattern", "action", "capability", "result")
TITLES = ("event types", "patterns", "actions", "capabilities", "result events")
NODE_H = 28
GAP_Y = 10
GAP_X = 70
CHAR_W = 7.0
TOP = 40
LEFT = 10


@dataclass
class Node:
    id: str  # "event:order_received", "pattern:order-received", ...
    column: int
    label: str
    detail: str = ""
    ins: list[str] = field(default_factory=list)
    y: float = 0.0


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, css class)

    def node(self, column: str, name: str, label: str | None = None, detail: str = "") -> str:
        node_id = f"{column}:{name}"
        if node_id not in self.nodes:
            self.nodes[node_id] = Node(node_id, COLUMNS.index(column), label or name, detail)
        return node_id

    def edge(self, a: str, b: str, css: str = "") -> None:
        if (a, b, css) not in self.edges:
            self.edges.append((a, b, css))
            self.nodes[b].ins.append(a)


def build_graph(choreography: Choreography) -> Graph:
    """Nodes and edges of the five columns, in the file's order."""
    g = Graph()
    production = choreography.production
    for pattern in choreography.patterns:
        pid = g.node("pattern", pattern.id, detail=pattern.kind)
        for listen in listens(pattern):
            ev = g.node("event", listen.spec.on)
            g.edge(ev, pid, "" if listen.fires else "stops")
        for emit in emits(pattern):
            aid = g.node("action", f"{emit.action}@{emit.capability}", emit.action,
                         detail="timeout" if emit.timeout else "")
            g.edge(pid, aid, "timeout" if emit.timeout else "")
            cid = g.node("capability", emit.capability)
            g.edge(aid, cid)
            for result in production.results(emit.capability, emit.action):
                g.edge(cid, g.node("result", result))
    # A result event that some pattern listens to leads back to the first column.
    for node in list(g.nodes.values()):
        if node.column == COLUMNS.index("result"):
            name = node.id.split(":", 1)[1]
            node.detail = "listened to" if any(
                overlaps(n.id.split(":", 1)[1], name) for n in g.nodes.values()
                if n.column == 0) else ""
    return g


def _layout(g: Graph) -> tuple[list[float], float]:
    """Columns' x offsets and the picture's height; sets each node's y."""
    columns: list[list[Node]] = [[] for _ in COLUMNS]
    for node in g.nodes.values():
        columns[node.column].append(node)
    for index, nodes in enumerate(columns):
        if index:
            def weight(n: Node) -> float:
                ys = [g.nodes[i].y for i in n.ins]
                return sum(ys) / len(ys) if ys else 0.0
            nodes.sort(key=weight)
        for row, node in enumerate(nodes):
            node.y = TOP + row * (NODE_H + GAP_Y)
    widths = [max([_width(n) for n in nodes] + [len(TITLES[i]) * CHAR_W + 16])
              for i, nodes in enumerate(columns)]
    xs: list[float] = []
    x: float = LEFT
    for w in widths:
        xs.append(x)
        x += w + GAP_X
    xs.append(x - GAP_X + LEFT)
    height = TOP + max(len(c) for c in columns) * (NODE_H + GAP_Y) + 10
    return xs, height


def _width(node: Node) -> float:
    return max(len(node.label) * CHAR_W + 16, 60) + 44  # room for the count


def render_svg(choreography: Choreography, counts: Mapping[str, float] | None = None) -> str:
    """The SVG text; `counts` maps node ids ("pattern:order-received") to numbers."""
    g = build_graph(choreography)
    counts = counts or {}
    xs, height = _layout(g)
    col_w = [xs[i + 1] - xs[i] - GAP_X for i in range(len(COLUMNS))]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="choreo-graph" '
             f'width="{xs[-1]:.0f}" height="{height:.0f}" viewBox="0 0 {xs[-1]:.0f} '
             f'{height:.0f}">',
             '<style>.node rect{stroke:#334;stroke-width:1}.node text{font:12px sans-serif;'
             'fill:#111}.node .count{font-weight:bold;fill:#0b5}.edge{fill:none;stroke:#889;'
             'stroke-width:1.3}.edge.timeout{stroke:#d70;stroke-dasharray:5 3}'
             '.edge.stops{stroke:#c33;stroke-dasharray:2 3}.title{font:bold 12px sans-serif;'
             'fill:#556}.event rect{fill:#dbeafe}.pattern rect{fill:#fde68a}'
             '.action rect{fill:#e9d5ff}.capability rect{fill:#bbf7d0}'
             '.result rect{fill:#dbeafe}</style>']
    for i, title in enumerate(TITLES):
        parts.append(f'<text class="title" x="{xs[i]:.0f}" y="20">{title}</text>')
    for a, b, css in g.edges:
        na, nb = g.nodes[a], g.nodes[b]
        x1, y1 = xs[na.column] + col_w[na.column], na.y + NODE_H / 2
        x2, y2 = xs[nb.column], nb.y + NODE_H / 2
        mid = (x1 + x2) / 2
        parts.append(f'<path class="edge {css}" data-from="{escape(a)}" data-to="{escape(b)}" '
                     f'd="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} '
                     f'{x2:.0f},{y2:.0f}"/>')
    for node in g.nodes.values():
        x, w = xs[node.column], col_w[node.column]
        kind = COLUMNS[node.column]
        count = counts.get(node.id)
        shown = "" if count is None else f"{count:g}"
        tip = f"{node.id} ({node.detail})" if node.detail else node.id
        rx = 14 if kind in ("event", "result") else 3
        parts.append(
            f'<g class="node {kind}" data-id="{escape(node.id)}" data-count="{shown}">'
            f'<title>{escape(tip)}</title>'
            f'<rect x="{x:.0f}" y="{node.y:.0f}" width="{w:.0f}" height="{NODE_H}" rx="{rx}"/>'
            f'<text x="{x + 8:.0f}" y="{node.y + 18:.0f}">{escape(node.label)}</text>'
            f'<text class="count" text-anchor="end" x="{x + w - 8:.0f}" '
            f'y="{node.y + 18:.0f}">{shown}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)
