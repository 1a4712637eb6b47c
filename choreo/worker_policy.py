"""How capability workers treat failing actions: the `[workers]` and `[capabilities.*]` tables.

```toml
[workers]                      # defaults for every capability; all optional
timeout = "30s"                # per attempt
max_retries = 3                # attempts after the first; then the capability's DLQ
backoff_base = "500ms"         # delay before retry n is base * 2**(n-1), with full jitter,
backoff_max = "30s"            #   never above backoff_max
breaker_threshold = 5          # consecutive failed attempts that open the breaker (0: never)
breaker_cooldown = "30s"       # how long it stays open before a half-open trial

[capabilities.payment_processing]   # overrides for one capability
timeout = "5s"
max_retries = 5
```
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from choreo.durations import parse_duration

MAX_RETRIES_LIMIT = 100
DURATION_FIELDS = ("timeout", "backoff_base", "backoff_max", "breaker_cooldown")
INT_FIELDS = ("max_retries", "breaker_threshold")
# Fields of [capabilities.<name>] that other modules read (producers.py), not a policy.
OTHER_FIELDS = ("produces", "routing", "tag")  # routing, tag: choreo/routing.py


@dataclass(frozen=True)
class WorkerPolicy:
    """Timeout, retries, backoff and circuit breaker settings for one capability."""

    timeout: float = 30.0
    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0


@dataclass(frozen=True)
class WorkerPolicies:
    """The `[workers]` defaults and the per-capability overrides."""

    defaults: WorkerPolicy = field(default_factory=WorkerPolicy)
    overrides: Mapping[str, WorkerPolicy] = field(default_factory=dict)

    def for_capability(self, capability: str) -> WorkerPolicy:
        return self.overrides.get(capability, self.defaults)


Fail = Callable[[str, str, str], None]  # (pattern id, field, reason)


def parse_worker_policies(workers: object, capabilities: object, known: tuple[str, ...],
                          fail: Fail) -> WorkerPolicies:
    """Validate the two tables; report each problem through `fail` and keep going."""
    defaults = _policy(workers, "workers", WorkerPolicy(), fail)
    overrides: dict[str, WorkerPolicy] = {}
    if not isinstance(capabilities, dict):
        fail("-", "capabilities", "must be a table of [capabilities.<name>] tables")
        return WorkerPolicies(defaults)
    for name, raw in capabilities.items():
        where = f"capabilities.{name}"
        if name not in known:
            hint = f"; capabilities in this file: {', '.join(known)}" if known else ""
            fail("-", where, f"no pattern sends actions to {name!r}{hint}")
            continue
        overrides[name] = _policy(raw, where, defaults, fail)
    return WorkerPolicies(defaults, overrides)


def _policy(raw: object, where: str, base: WorkerPolicy, fail: Fail) -> WorkerPolicy:
    if not isinstance(raw, dict):
        fail("-", where, "must be a table")
        return base
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{where}.{key}"
        if key in OTHER_FIELDS and where.startswith("capabilities."):
            continue
        if key in DURATION_FIELDS:
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                fail("-", name, str(exc))
                continue
            if key in ("timeout", "breaker_cooldown") and seconds <= 0:
                fail("-", name, "must be longer than zero")
                continue
            values[key] = seconds
        elif key in INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail("-", name, f"must be a whole number of at least 0, got {value!r}")
            elif key == "max_retries" and value > MAX_RETRIES_LIMIT:
                fail("-", name, f"must be at most {MAX_RETRIES_LIMIT}, got {value}")
            else:
                values[key] = value
        else:
            allowed = list(WorkerPolicy.__dataclass_fields__)
            if where.startswith("capabilities."):
                allowed += OTHER_FIELDS
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = (f"did you mean {close[0]!r}?" if close
                    else f"expected one of {', '.join(allowed)}")
            fail("-", name, f"unknown worker setting; {hint}")
    policy = replace(base, **values)
    if policy.backoff_max < policy.backoff_base:
        fail("-", f"{where}.backoff_max", "must not be shorter than backoff_base")
    return policy
