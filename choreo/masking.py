"""Masking of sensitive fields (`[security] mask`) in logs, dead-letter records and views.

A path names a field of the envelope: `payload.card_number`, `payload.payment.card_number`,
`metadata.customer_email`. A segment that meets a list applies the rest of the path to each
element (`payload.items.sku`), and `*` stands for any key (`payload.*.card_number`). In an
action (`action.requested`), `payload.<path>` also masks `payload.data.<path>`, the copy of
the triggering event's payload the action carries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson

MASK = "[masked]"
PATH = re.compile(r"^(payload|metadata)(\.([A-Za-z0-9_\-]+|\*))+$")
MIN_SCRUB = 4  # shorter values are not scrubbed out of free text (too many false hits)


def _walk(node: Any, path: tuple[str, ...], visit: Callable[[dict, str], None]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, path, visit)
        return
    if not isinstance(node, dict) or not path:
        return
    head, rest = path[0], path[1:]
    names = list(node) if head == "*" else [head] if head in node else []
    for name in names:
        if rest:
            _walk(node[name], rest, visit)
        else:
            visit(node, name)


class Masker:
    """Masks the configured paths in envelope-shaped data."""

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self.paths = tuple(dict.fromkeys(paths))
        self._split = [tuple(p.split(".")) for p in self.paths]

    def __bool__(self) -> bool:
        return bool(self.paths)

    def _targets(self, data: dict) -> list[tuple[str, tuple[str, ...]]]:
        out = [(p, s) for p, s in zip(self.paths, self._split, strict=True)]
        if data.get("event_type") == "action.requested":
            out += [(p, ("payload", "data", *s[1:])) for p, s in out if s[0] == "payload"]
        return out

    def mask(self, data: Any) -> list[str]:
        """Mask `data` (a decoded envelope) in place; return the paths that were present."""
        if not self.paths or not isinstance(data, dict):
            return []
        hit: dict[str, None] = {}
        for name, split in self._targets(data):
            def replace(parent: dict, key: str, _name: str = name) -> None:
                parent[key] = MASK
                hit[_name] = None
            _walk(data, split, replace)
        return list(hit)

    def masked(self, data: Any) -> Any:
        """A masked deep copy of `data`."""
        if not self.paths or not isinstance(data, dict):
            return data
        copy = orjson.loads(orjson.dumps(data))
        self.mask(copy)
        return copy

    def mask_bytes(self, raw: bytes | None) -> tuple[bytes | None, list[str]]:
        """The value with the paths masked if it is a JSON object that has them."""
        if not self.paths or not raw:
            return raw, []
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw, []
        paths = self.mask(data)
        return (orjson.dumps(data), paths) if paths else (raw, [])

    def secrets(self, data: Any) -> list[str]:
        """The values at the masked paths as text, longest first, to scrub from messages."""
        if not self.paths or not isinstance(data, dict):
            return []
        found: dict[str, None] = {}

        def collect(parent: dict, key: str) -> None:
            value = parent[key]
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                text = str(value)
                if len(text) >= MIN_SCRUB:
                    found[text] = None
            elif value is not None:
                text = orjson.dumps(value).decode()
                if len(text) >= MIN_SCRUB:
                    found[text] = None

        for _name, split in self._targets(data):
            _walk(data, split, collect)
        return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of the secrets replaced by the mask."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
