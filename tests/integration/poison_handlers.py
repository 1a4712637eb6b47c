"""Handlers for the poison-mix test (CHOREO_HANDLERS=tests.integration.poison_handlers:HANDLERS).

`record` appends `done <action id>` to the file named by CHOREO_POISON_LOG and returns no
results; `broken` breaks the handler contract by returning plain dicts.
"""

from __future__ import annotations

import os

from agents.worker import Result
from choreo.envelope import Event

_log = None


async def record(action: Event) -> list[Result]:
    global _log
    if _log is None:
        _log = open(os.environ["CHOREO_POISON_LOG"], "a", buffering=1)  # noqa: SIM115
    _log.write(f"done {action.event_id}\n")
    return []


async def broken(action: Event) -> list[Result]:
    return [{"event_type": "oops", "payload": {}}]  # type: ignore[list-item]


HANDLERS = {"audit": {"record": record, "broken": broken}, "orders": {"complete": record}}
