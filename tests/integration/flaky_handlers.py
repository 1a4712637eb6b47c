"""Handlers that fail on purpose, for the worker failure tests (CHOREO_HANDLERS)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from agents.worker import Result
from choreo.envelope import Event

_attempts: Counter[str] = Counter()


def _data(action: Event) -> dict:
    return dict(action.payload.get("data") or {})


async def fail_then_succeed(action: Event) -> list[Result]:
    """Fails `fail_times` times for each action id, then succeeds."""
    _attempts[action.event_id] += 1
    if _attempts[action.event_id] <= int(_data(action).get("fail_times", 0)):
        raise ConnectionError(f"attempt {_attempts[action.event_id]}: downstream unreachable")
    return [Result("flaky.done", {**_data(action), "attempts": _attempts[action.event_id]})]


async def fail_until_fixed(action: Event) -> list[Result]:
    """Fails until the file named by `fixed_when` exists (the "fix" a redrive follows)."""
    if not Path(_data(action)["fixed_when"]).exists():
        raise RuntimeError("downstream is down")
    return [Result("flaky.done", _data(action))]


async def dicts_until_fixed(action: Event) -> list[dict]:
    """Breaks the handler contract (dicts, not Results) until `fixed_when` exists."""
    if not Path(_data(action)["fixed_when"]).exists():
        return [{"event_type": "flaky.done", "payload": _data(action)}]  # type: ignore[list-item]
    return [Result("flaky.done", _data(action))]  # type: ignore[list-item]


async def succeed(action: Event) -> list[Result]:
    return [Result("flaky.done", _data(action))]


HANDLERS = {
    "flaky": {"fail_then_succeed": fail_then_succeed, "fail_until_fixed": fail_until_fixed,
              "dicts_until_fixed": dicts_until_fixed},
    "fragile": {"fail_until_fixed": fail_until_fixed, "succeed": succeed},
}

CHOREOGRAPHY = """
[topics]
prefix = ""

[workers]
max_retries = 3
backoff_base = "50ms"
backoff_max = "200ms"
breaker_threshold = 0
timeout = "5s"

[capabilities.fragile]
max_retries = 1
breaker_threshold = 2
breaker_cooldown = "2s"

[[patterns]]
id = "retry"
kind = "event"
on = "test.retry"
action = "fail_then_succeed"
capability = "flaky"

[[patterns]]
id = "until-fixed"
kind = "event"
on = "test.until_fixed"
action = "fail_until_fixed"
capability = "flaky"

[[patterns]]
id = "wrong-type"
kind = "event"
on = "test.wrong_type"
action = "dicts_until_fixed"
capability = "flaky"

[[patterns]]
id = "fragile-down"
kind = "event"
on = "test.fragile_down"
action = "fail_until_fixed"
capability = "fragile"

[[patterns]]
id = "fragile-ok"
kind = "event"
on = "test.fragile_ok"
action = "succeed"
capability = "fragile"
"""
