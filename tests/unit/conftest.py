"""Factory fixtures for the unit tests: events, wire envelopes, pattern tables, choreographies."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from choreo.config import Choreography, load_choreography, parse_choreography
from choreo.envelope import Event, new_event
from choreo.settings import BUNDLED_CONFIG

TIMESTAMP = "2024-05-01T12:00:00Z"

# A valid table for each kind; tests override or omit the fields they are about.
PATTERN_DEFAULTS: dict[str, dict[str, Any]] = {
    "event": {"on": "order_received"},
    "threshold": {"on": "payment_failed", "count": 3, "window": "10m",
                  "group_by": "payload.customer_id"},
    "temporal": {"all_of": ["payment_successful", "inventory_confirmed"], "window": "5m"},
    "sequence": {"steps": ["cart.created", "checkout.started"], "max_interval": "30m"},
    "absence": {"after": "cart.updated", "expect": "order_received", "within": "1h"},
}

_BARE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def toml_value(value: Any) -> str:
    """Write a value in TOML: strings, numbers, booleans, arrays and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def toml_table(header: str, fields: Mapping[str, Any]) -> str:
    return "\n".join([header, *(f"{toml_key(k)} = {toml_value(v)}" for k, v in fields.items())])


@pytest.fixture
def event_factory() -> Callable[..., Event]:
    """Build a valid Event; ids count up unless given, correlation defaults to 'ord-1'."""
    counter = itertools.count(1)

    def make(event_type: str = "order_received", payload: Mapping[str, Any] | None = None, *,
             event_id: str | None = None, correlation_id: str | None = "ord-1",
             causation_id: str | None = None, source: str = "shop.checkout",
             timestamp: str = TIMESTAMP, metadata: Mapping[str, Any] | None = None) -> Event:
        return new_event(event_type, payload or {}, source=source,
                         correlation_id=correlation_id, causation_id=causation_id,
                         event_id=event_id or f"evt-{next(counter)}", timestamp=timestamp,
                         metadata=metadata)

    return make


@pytest.fixture
def envelope_factory() -> Callable[..., dict[str, Any]]:
    """A valid envelope as plain data, as a producer would put it on the wire.

    Keyword arguments replace fields; `omit` names fields to leave out.
    """

    def make(*, omit: Iterable[str] = (), **fields: Any) -> dict[str, Any]:
        envelope: dict[str, Any] = {
            "event_id": "evt-1",
            "event_type": "order_received",
            "timestamp": TIMESTAMP,
            "source": "shop.checkout",
            "payload": {"order_id": "ord-1", "order_value": 54.9},
            "metadata": {"correlation_id": "ord-1"},
        }
        envelope.update(fields)
        for name in omit:
            envelope.pop(name, None)
        return envelope

    return make


@pytest.fixture
def pattern_factory() -> Callable[..., dict[str, Any]]:
    """A valid `[[patterns]]` table of the given kind, as a user writes it.

    Keyword arguments replace fields; `omit` names fields to leave out.
    """

    def make(kind: str = "event", *, omit: Iterable[str] = (), **fields: Any) -> dict[str, Any]:
        table: dict[str, Any] = {
            "id": f"{kind}-pattern",
            "kind": kind,
            "action": "do_something",
            "capability": "some_capability",
            **PATTERN_DEFAULTS.get(kind, {}),
        }
        table.update(fields)
        for name in omit:
            table.pop(name, None)
        return table

    return make


@pytest.fixture
def toml_factory() -> Callable[..., str]:
    """A choreography file's text from pattern tables and optional other tables."""

    def make(*patterns: Mapping[str, Any], sequences: Iterable[Mapping[str, Any]] = (),
             topics: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None,
             extra: str = "") -> str:
        parts = []
        if topics is not None:
            parts.append(toml_table("[topics]", topics))
        if defaults is not None:
            parts.append(toml_table("[defaults]", defaults))
        parts += [toml_table("[[patterns]]", p) for p in patterns]
        parts += [toml_table("[[sequences]]", s) for s in sequences]
        if extra:
            parts.append(extra)
        return "\n\n".join(parts) + "\n"

    return make


@pytest.fixture
def choreography_factory(toml_factory: Callable[..., str]) -> Callable[..., Choreography]:
    """Load a choreography from pattern tables through the real loader."""

    def make(*patterns: Mapping[str, Any], **tables: Any) -> Choreography:
        return parse_choreography(toml_factory(*patterns, **tables))

    return make


@pytest.fixture(scope="session")
def ecommerce() -> Choreography:
    """The bundled e-commerce choreography."""
    return load_choreography(BUNDLED_CONFIG)
