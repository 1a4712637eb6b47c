"""Event schemas: the `[schemas]` table, JSON Schemas compiled once at load.

```toml
[schemas]
folder = "schemas/"            # relative to the choreography file: <type or glob>.json files
base = { required = ["metadata"] }          # optional: the whole envelope of every event
[schemas.types."order_received"]            # inline: the payload of one type (or a glob)
required = ["order_id"]
```

The base schema validates the whole envelope; a type schema validates the payload. Every
schema whose name is the event's type or a glob matching it applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.validators import validator_for

from choreo.envelope import Event, InvalidEvent

SCHEMA_FIELDS = ("folder", "base", "types")
NAME = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]+$")
# Event types seen are cached with the schemas that apply to them, up to this many.
CACHE_LIMIT = 4096
# An invalid event's errors are listed up to this many; the most relevant one is reported.
MAX_ERRORS = 50

Fail = Callable[[str, str, str], None]  # (pattern id, field, reason)


@dataclass(frozen=True)
class TypeSchema:
    """One compiled schema and what it applies to."""

    name: str  # an event type, a glob, or "base"
    origin: str  # "inline" or the file it came from
    validator: Any  # a jsonschema Validator instance

    def violation(self, instance: object, scope: str) -> str | None:
        """A readable validation error (path: message), or None when the instance is valid."""
        try:
            errors = list(islice(self.validator.iter_errors(instance), MAX_ERRORS))
        except Exception as exc:  # an unresolvable $ref, for example
            return f"schema {self.name} could not be applied: {type(exc).__name__}: {exc}"[:500]
        if not errors:
            return None
        error: ValidationError = best_match(errors)
        path = scope + "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                               for part in error.absolute_path)
        more = f"; {len(errors) - 1}{'+' if len(errors) == MAX_ERRORS else ''} more" \
            if len(errors) > 1 else ""
        return (f"{path.lstrip('.') or 'envelope'}: {error.message[:300]} "
                f"(schema {self.name}{more})")


class SchemaRegistry:
    """The schemas of a choreography; `check(event)` raises InvalidEvent on a violation."""

    def __init__(self, base: TypeSchema | None, types: Mapping[str, TypeSchema]) -> None:
        self.base = base
        self.exact = {name: s for name, s in types.items() if not _is_glob(name)}
        self.globs = tuple(s for name, s in sorted(types.items()) if _is_glob(name))
        self._cache: dict[str, tuple[TypeSchema, ...]] = {}

    def __len__(self) -> int:
        return len(self.exact) + len(self.globs) + (self.base is not None)

    def for_type(self, event_type: str) -> tuple[TypeSchema, ...]:
        """The payload schemas that apply to a type: its own, then the globs matching it."""
        found = self._cache.get(event_type)
        if found is None:
            own = self.exact.get(event_type)
            found = ((own,) if own else ()) + tuple(
                s for s in self.globs if fnmatchcase(event_type, s.name))
            if len(self._cache) < CACHE_LIMIT:
                self._cache[event_type] = found
        return found

    def violation(self, event: Event) -> str | None:
        """The first violation of the event's schemas, or None."""
        if self.base is not None:
            problem = self.base.violation(event.as_dict(), "")
            if problem:
                return problem
        for schema in self.for_type(event.event_type):
            problem = schema.violation(event.payload, "payload")
            if problem:
                return problem
        return None

    def check(self, event: Event) -> None:
        """Raise InvalidEvent("schema_violation", ...) when the event violates a schema."""
        problem = self.violation(event)
        if problem:
            raise InvalidEvent("schema_violation", problem)

    def describe(self) -> dict[str, Any]:
        return {"base": self.base.origin if self.base else None,
                "types": {s.name: s.origin for s in (*self.exact.values(), *self.globs)}}


def parse_schemas(raw: object, base_dir: Path, fail: Fail) -> SchemaRegistry | None:
    """Read the `[schemas]` table; report each problem through `fail` and keep going."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        fail("-", "schemas", "must be a table")
        return None
    for key in raw:
        if key not in SCHEMA_FIELDS:
            fail("-", f"schemas.{key}",
                 f"unknown field; expected one of {', '.join(SCHEMA_FIELDS)}")
    found: dict[str, TypeSchema] = {}
    folder = raw.get("folder")
    if folder is not None:
        if not isinstance(folder, str) or not folder:
            fail("-", "schemas.folder", "must be a path (a string)")
        else:
            path = base_dir / folder
            if not path.is_dir():
                fail("-", "schemas.folder", f"{path} is not a folder")
            else:
                for file in sorted(path.glob("*.json")):
                    name = file.name[: -len(".json")]
                    schema = _read_json(file, name, fail)
                    if schema is not None:
                        _add(found, name, str(file), schema, fail)
    types = raw.get("types", {})
    if not isinstance(types, dict):
        fail("-", "schemas.types", 'must be a table of [schemas.types."<type>"] tables')
        types = {}
    for name, schema in types.items():
        if not isinstance(schema, dict):
            fail("-", f"schemas.{name}", "must be a table (a JSON Schema)")
            continue
        _add(found, name, "inline", schema, fail)
    base = None
    if "base" in raw:
        value = raw["base"]
        if isinstance(value, str):
            value = _read_json(base_dir / value, "base", fail)
        elif not isinstance(value, dict):
            fail("-", "schemas.base", "must be a table (a JSON Schema) or the path of a .json file")
            value = None
        if value is not None:
            base = _compile("base", "inline" if isinstance(raw["base"], dict) else raw["base"],
                            value, fail)
    return SchemaRegistry(base, found)


def _add(found: dict[str, TypeSchema], name: str, origin: str, schema: object,
         fail: Fail) -> None:
    if not NAME.match(name):
        fail("-", f"schemas.{name}", "must be named for an event type or a glob such as 'order.*'")
        return
    if name in found:
        fail("-", f"schemas.{name}", f"defined twice: in {found[name].origin} and {origin}")
        return
    compiled = _compile(name, origin, schema, fail)
    if compiled is not None:
        found[name] = compiled


def _read_json(path: Path, name: str, fail: Fail) -> object | None:
    try:
        data: object = orjson.loads(path.read_bytes())
        return data
    except OSError as exc:
        fail("-", f"schemas.{name}", f"cannot read {path}: {exc.strerror}")
    except orjson.JSONDecodeError as exc:
        fail("-", f"schemas.{name}", f"{path} is not JSON: {exc}")
    return None


def _compile(name: str, origin: str, schema: object, fail: Fail) -> TypeSchema | None:
    """Check a schema against its meta-schema and build its validator once."""
    where = f"schemas.{name}"
    if not isinstance(schema, dict | bool):
        fail("-", where, "a JSON Schema is an object (or true/false)")
        return None
    cls: Any = Draft202012Validator
    if isinstance(schema, dict) and "$schema" in schema:
        cls = validator_for(schema, default=None)
        if cls is None:
            fail("-", where, f"unknown $schema {str(schema['$schema'])[:100]!r}; use a JSON Schema "
                             "draft URI such as https://json-schema.org/draft/2020-12/schema")
            return None
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        at = "/".join(str(p) for p in exc.absolute_path)
        fail("-", where, f"not a valid JSON Schema{' at ' + at if at else ''}: "
                         f"{exc.message[:300]}")
        return None
    return TypeSchema(name, origin, cls(schema))


def _is_glob(name: str) -> bool:
    return any(ch in name for ch in "*?[")
