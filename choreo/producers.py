"""Who publishes which event types: `produces` of each capability and `[events] external`.

```toml
[events]
external = ["order_received", "checkout_started"]   # published by producers outside the file

[capabilities.payment_processing]
produces = ["payment_successful", "payment_failed"]  # every action of the capability

[capabilities.customer_communication.produces]       # or per action
send_tracking_notification = ["tracking_notification_sent"]
```

These declarations are read only by `choreo check --static` and `choreo graph`; the engine
does not enforce them at run time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

EVENT_TYPE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
GLOB = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]+$")
EVENTS_FIELDS = ("external",)
# What every capability worker publishes besides its handlers' results (agents/worker.py).
LIFECYCLE = ("action.started", "action.completed", "action.failed",
             "circuit_breaker.state.changed")

Fail = Callable[[str, str, str], None]  # (pattern id, field, reason)


@dataclass(frozen=True)
class Production:
    """The declared result events of each (capability, action), and the external types."""

    by_action: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    declared: frozenset[str] = frozenset()  # capabilities that declare `produces`
    external: tuple[str, ...] = ()  # event types or globs

    def results(self, capability: str, action: str) -> tuple[str, ...]:
        """The event types this action may publish besides the lifecycle events."""
        return self.by_action.get((capability, action), ())


def parse_production(capabilities: object, events: object,
                     sends: Mapping[str, tuple[str, ...]], fail: Fail) -> Production:
    """Read `produces` from each `[capabilities.<name>]` and `[events]`.

    `sends` maps each capability to the actions patterns send it; the capability names
    themselves are checked by worker_policy.parse_worker_policies.
    """
    by_action: dict[tuple[str, str], tuple[str, ...]] = {}
    declared: set[str] = set()
    if isinstance(capabilities, dict):
        for name, table in capabilities.items():
            if not isinstance(table, dict) or "produces" not in table or name not in sends:
                continue
            declared.add(name)
            where = f"capabilities.{name}.produces"
            value = table["produces"]
            if isinstance(value, list):
                types = _types(value, where, fail)
                for action in sends[name]:
                    by_action[(name, action)] = types
            elif isinstance(value, dict):
                for action, listed in value.items():
                    if action not in sends[name]:
                        fail("-", f"{where}.{action}",
                             f"no pattern sends {action!r} to {name!r}; it is sent "
                             f"{', '.join(sends[name])}")
                        continue
                    if not isinstance(listed, list):
                        fail("-", f"{where}.{action}", "must be a list of event types")
                        continue
                    by_action[(name, action)] = _types(listed, f"{where}.{action}", fail)
            else:
                fail("-", where, "must be a list of event types, or a table of action -> list")
    external: tuple[str, ...] = ()
    if events is not None:
        if not isinstance(events, dict):
            fail("-", "events", "must be a table")
        else:
            for key in events:
                if key not in EVENTS_FIELDS:
                    fail("-", f"events.{key}", "unknown field; expected external")
            raw = events.get("external", [])
            if not isinstance(raw, list):
                fail("-", "events.external", "must be a list of event types or globs")
            else:
                external = _types(raw, "events.external", fail, pattern=GLOB)
    return Production(by_action, frozenset(declared), external)


def _types(values: list[object], where: str, fail: Fail,
           pattern: re.Pattern[str] = EVENT_TYPE
           ) -> tuple[str, ...]:
    out = []
    for index, value in enumerate(values):
        if not isinstance(value, str) or not pattern.match(value):
            what = "an event type or a glob" if pattern is GLOB else "an event type"
            fail("-", f"{where}[{index}]", f"must be {what}, got {value!r}")
        else:
            out.append(value)
    return tuple(dict.fromkeys(out))
