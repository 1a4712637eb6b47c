"""Masking of sensitive fields (`[security] mask`) in logs, dead-letter records and views.

A path names a field of the envelope: `payload.card_number`, `payload.payment.card_number`,
`metadata.customer_email`. A segment that meets a list applies the rest of the path to each
element (`payload.items.sku`), and `*` stands for any key (`payload.*.card_number`). In an
action (`action.requested`), `payload.<path>` also masks `payload.data.<path>`, the copy of
the triggering event's payload the action carries.

A value that is not a JSON object (a trailing comma, a truncated record) is masked as text:
each `"<name>": <value>` whose name is the last named segment of a path has its value, up to
where it ends (a string's closing quote, an object's or list's closing bracket, else the
next `,`, `}`, `]` or newline), replaced by `"[masked]"`. Either way a changed value keeps
the SHA-256 of the original (`MaskedRecord.digest`), to find the original by.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

MASK = "[masked]"
PATH = re.compile(r"^(payload|metadata)(\.([A-Za-z0-9_\-]+|\*))+$")
# Shorter values are scrubbed out of free text only where they stand alone (not inside a
# longer word or number): a 3-digit CVV is masked, the "123" of "order-1234" is not.
MIN_SCRUB = 4
MASKED_JSON = b'"' + MASK.encode() + b'"'
CLOSING = {ord("{"): ord("}"), ord("["): ord("]")}
DELIMITER = re.compile(rb"[,}\]\r\n]")  # where a bare (unquoted) value ends


@dataclass(frozen=True)
class MaskedRecord:
    """A record value after masking: the paths (or, as text, the names) masked, the SHA-256
    of the original value when it changed, and the values masked, to scrub from text."""

    value: bytes | None
    paths: tuple[str, ...] = ()
    digest: str | None = None
    secrets: tuple[str, ...] = ()
    as_text: bool = False

    def headers(self, prefix: str) -> list[tuple[str, bytes]]:
        """`<prefix>masked` (the paths), `<prefix>sha256` and, for a value masked as text,
        `<prefix>masked-as: text`; none when nothing was masked."""
        if self.digest is None:
            return []
        out = [(prefix + "masked", ",".join(self.paths).encode()),
               (prefix + "sha256", self.digest.encode())]
        if self.as_text:
            out.append((prefix + "masked-as", b"text"))
        return out

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)


def _walk(node: Any, path: tuple[str, ...], visit: Callable[[dict[str, Any], str], None]) -> None:
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
        # For text: the last named segment of each path (`payload.cards.*` -> `cards`).
        names = {n: p for p, s in zip(self.paths, self._split, strict=True)
                 for n in [next(x for x in reversed(s) if x != "*")]}
        self._names = names
        self._text = re.compile(rb'"(' + b"|".join(re.escape(n.encode()) for n in names)
                                + rb')"\s*:\s*') if names else None

    def __bool__(self) -> bool:
        return bool(self.paths)

    def _targets(self, data: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
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
            def replace(parent: dict[str, Any], key: str, _name: str = name) -> None:
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
        """The value with the paths masked, JSON or not (`mask_record`)."""
        masked = self.mask_record(raw)
        return masked.value, list(masked.paths)

    def mask_record(self, raw: bytes | None) -> MaskedRecord:
        """`raw` masked: as an envelope if it is a JSON object, else as text."""
        if not self.paths or not raw:
            return MaskedRecord(raw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            return self.mask_text(raw)
        secrets = self.secrets(data)
        paths = self.mask(data)
        if not paths:
            return MaskedRecord(raw)
        return MaskedRecord(orjson.dumps(data), tuple(paths), _digest(raw), tuple(secrets))

    def mask_text(self, raw: bytes) -> MaskedRecord:
        """Mask `"<name>": <value>` for every configured name in bytes that are not JSON."""
        if self._text is None:
            return MaskedRecord(raw)
        out: list[bytes] = []
        at = 0
        hit: dict[str, None] = {}  # ordered sets
        secrets: dict[str, None] = {}
        for found in self._text.finditer(raw):
            start = found.end()
            if start < at:
                continue  # inside a value already masked
            end = _value_end(raw, start)
            if end == start:
                continue
            out += [raw[at:start], MASKED_JSON]
            at = end
            hit[self._names[found.group(1).decode()]] = None
            text = raw[start:end].strip().decode("utf-8", "replace")
            secrets[text] = None
            if text.startswith('"'):
                secrets[text.strip('"')] = None
        if not hit:
            return MaskedRecord(raw)
        out.append(raw[at:])
        return MaskedRecord(b"".join(out), tuple(hit), _digest(raw),
                            tuple(sorted((s for s in secrets if s), key=len, reverse=True)),
                            as_text=True)

    def mask_names(self, data: Any, secrets: Iterable[str] = ()) -> Any:
        """A copy of `data` of any shape (a workflow's input, results, history: not an
        envelope) with the value of every key named like the last named segment of a path
        masked, at any depth, and `secrets` scrubbed from its strings."""
        secrets = tuple(secrets)
        if not self.paths:
            return data

        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: MASK if k in self._names else walk(v) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            if isinstance(node, str) and secrets:
                return scrub(node, secrets)
            return node

        return walk(data)

    def secrets(self, data: Any) -> list[str]:
        """The values at the masked paths as text, longest first, to scrub from messages."""
        if not self.paths or not isinstance(data, dict):
            return []
        found: dict[str, None] = {}

        def collect(parent: dict[str, Any], key: str) -> None:
            value = parent[key]
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                text = str(value)
            elif value is not None:
                text = orjson.dumps(value).decode()
            else:
                return
            if text:
                found[text] = None

        for _name, split in self._targets(data):
            _walk(data, split, collect)
        return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of the secrets replaced by the mask; one shorter than
    MIN_SCRUB only where it stands alone (no letter or digit on either side)."""
    for secret in secrets:
        if secret not in text:
            continue
        if len(secret) >= MIN_SCRUB:
            text = text.replace(secret, MASK)
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, text)
    return text


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _value_end(raw: bytes, start: int) -> int:
    """Where the JSON-ish value starting at `start` ends: after a string's closing quote or
    an object's or list's closing bracket (or at the end), else at the next delimiter."""
    n = len(raw)
    if start >= n:
        return start
    first = raw[start]
    if first == ord('"'):
        i = start + 1
        while i < n:
            if raw[i] == ord("\\"):
                i += 2
                continue
            if raw[i] == ord('"'):
                return i + 1
            i += 1
        return n
    if first in CLOSING:
        depth, i, in_string = 0, start, False
        while i < n:
            c = raw[i]
            if in_string:
                if c == ord("\\"):
                    i += 1
                elif c == ord('"'):
                    in_string = False
            elif c == ord('"'):
                in_string = True
            elif c in (ord("{"), ord("[")):
                depth += 1
            elif c in (ord("}"), ord("]")):
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    match = DELIMITER.search(raw, start)
    end = match.start() if match else n
    while end > start and raw[end - 1] in b" \t":
        end -= 1
    return end
