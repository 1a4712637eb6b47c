"""Step parameters: JSON templates whose `$...` strings refer to earlier data.

A string that is exactly a reference is replaced by the value it names (any JSON):

| reference | the value |
| --- | --- |
| `$input`, `$input.applicant.id` | the workflow's input |
| `$results.research`, `$results.quality_checks[1].score` | a named earlier step's result |
| `$previous` | the previous step's result (the input for the first step) |
| `$item`, `$index` | in a map step: the current item and its position |
| `$result` | in a compensation: the result of the step it undoes |
| `$depth` | in a recursive step: how deep this instance is (0 at the top) |

Paths are `.name` and `[n]` (negative `n` counts from the end). A path that does not exist
resolves to null, as in the seed material. `$$...` is a literal string starting with `$`.
The seed material's spellings are accepted: `$context.results.x` is `$results.x`,
`$context.input` is `$input`, and `$current` is the item in a map step and otherwise the
previous result. References are parsed when the file loads, never evaluated as code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

ROOTS = ("input", "results", "previous", "item", "index", "result", "depth", "current")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(-?\d+)\]")
_ALIASES = {"context.results": "results", "context.input": "input"}


class ParamError(ValueError):
    """A reference that does not parse; str() says why, `where` is its place in the template."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class Ref:
    """A parsed reference: its root name and its path of keys and list indexes."""

    root: str
    path: tuple[str | int, ...]
    text: str

    @property
    def step(self) -> str | None:
        """The step a `$results.<step>` reference names."""
        if self.root == "results" and self.path and isinstance(self.path[0], str):
            return self.path[0]
        return None


def parse_ref(text: str) -> Ref:
    """Parse `$root.path[1].more`; raise ParamError."""
    if not text.startswith("$"):
        raise ParamError(f"{text!r} is not a reference (they start with $)")
    body = text[1:]
    for alias, root in _ALIASES.items():
        if body == alias or body.startswith(alias + ".") or body.startswith(alias + "["):
            body = root + body[len(alias):]
            break
    found = _NAME.match(body)
    if not found or found[0] not in ROOTS:
        raise ParamError(f"{text!r}: unknown reference; use one of "
                         + ", ".join(f"${r}" for r in ROOTS))
    root, rest = found[0], body[found.end():]
    path: list[str | int] = []
    position = 0
    while position < len(rest):
        token = _TOKEN.match(rest, position)
        if token is None:
            raise ParamError(f"{text!r}: cannot read the path at {rest[position:]!r}; "
                             "write .name or [index]")
        path.append(token[1] if token[1] is not None else int(token[2]))
        position = token.end()
    if root == "results" and (not path or not isinstance(path[0], str)):
        raise ParamError(f"{text!r}: name the step, as in $results.<step>")
    if root in ("index", "depth") and path:
        raise ParamError(f"{text!r}: ${root} is a number and has no fields")
    return Ref(root, tuple(path), text)


def compile_params(value: Any, where: str = "") -> Any:
    """The template with each reference string parsed into a Ref; raises ParamError."""
    if isinstance(value, str):
        if value.startswith("$$"):
            return value[1:]
        if value.startswith("$"):
            try:
                return parse_ref(value)
            except ParamError as exc:
                raise ParamError(str(exc), where) from None
        return value
    if isinstance(value, Mapping):
        return {str(k): compile_params(v, f"{where}.{k}" if where else str(k))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [compile_params(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def refs_in(template: Any, where: str = "") -> Iterator[tuple[str, Ref]]:
    """Every reference in a compiled template, with the field path it sits at."""
    if isinstance(template, Ref):
        yield where, template
    elif isinstance(template, dict):
        for key, value in template.items():
            yield from refs_in(value, f"{where}.{key}" if where else key)
    elif isinstance(template, list):
        for index, value in enumerate(template):
            yield from refs_in(value, f"{where}[{index}]")


def lookup(value: Any, path: tuple[str | int, ...]) -> Any:
    """Follow a path of keys and indexes; None where it does not exist."""
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or not -len(value) <= part < len(value):
                return None
            value = value[part]
        else:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
    return value


def resolve(template: Any, scope: Mapping[str, Any]) -> Any:
    """Fill a compiled template from `scope` (input, results, previous, item, ...)."""
    if isinstance(template, Ref):
        root = template.root
        if root == "current":
            root = "item" if "item" in scope else "previous"
        return lookup(scope.get(root), template.path)
    if isinstance(template, dict):
        return {key: resolve(value, scope) for key, value in template.items()}
    if isinstance(template, list):
        return [resolve(value, scope) for value in template]
    return template


def describe(template: Any) -> Any:
    """The template as it was written (references back to their text), for views."""
    if isinstance(template, Ref):
        return template.text
    if isinstance(template, dict):
        return {key: describe(value) for key, value in template.items()}
    if isinstance(template, list):
        return [describe(value) for value in template]
    if isinstance(template, str) and template.startswith("$"):
        return "$" + template
    return template
