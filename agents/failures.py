"""Failure injection for the example workflow workers, driven by the workflow's input.

An input with `fail_at = "<step>"` makes that step's handler refuse (not retried by the
worker; the orchestrator then applies the step's retries and error policy, so a saga
compensates). `flaky = { <step> = n }` makes the step's first n orchestrator attempts raise.
Compensations never fail unless `fail_compensation = "<step>"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.worker import ActionRefused
from choreo.envelope import Event


class InjectedError(RuntimeError):
    """A transient failure asked for by the input (`flaky`)."""


def _inputs(data: Any) -> list[Mapping[str, Any]]:
    """The action's data and the dicts one level down (where $input is usually passed)."""
    if not isinstance(data, Mapping):
        return []
    return [data, *(v for v in data.values() if isinstance(v, Mapping))]


def check_injected(action: Event) -> None:
    """Raise if the workflow's input asks this step (or its compensation) to fail."""
    info = action.payload.get("workflow") or {}
    step, attempt = info.get("step"), int(info.get("attempt", 1))
    compensation = bool(info.get("compensation"))
    for found in _inputs(action.payload.get("data")):
        if compensation:
            if found.get("fail_compensation") == step:
                raise ActionRefused(f"injected failure of the compensation of {step}")
            continue
        if found.get("fail_at") == step:
            raise ActionRefused(f"injected failure at {step}")
        flaky = found.get("flaky")
        if isinstance(flaky, Mapping) and attempt <= int(flaky.get(step, 0)):
            raise InjectedError(f"injected transient failure at {step}, attempt {attempt}")


def instance_of(action: Event) -> str:
    return str((action.payload.get("workflow") or {}).get("instance_id", action.correlation_id))


def action_data(action: Event) -> dict[str, Any]:
    """The action's `payload.data`, after any failure its input asks for (`check_injected`)."""
    check_injected(action)
    data = action.payload.get("data")
    if not isinstance(data, dict):
        raise ActionRefused("the action's data is not an object")
    return data
