"""Handlers for the fault tests (CHOREO_HANDLERS=tests.faults.handlers:HANDLERS).

Each run of a handler appends `start <action id>` and `done <action id>` to the file named
by CHOREO_FAULTS_LOG, with the write flushed to the kernel at once, so a kill -9 loses no
line. CHOREO_FAULTS_DELAY makes every handler sleep that long in between (in-flight work).
"""

from __future__ import annotations

import asyncio
import os

from agents.worker import Result
from choreo.envelope import Event

_log = None


def _note(what: str, action: Event) -> None:
    global _log
    if _log is None:
        _log = open(os.environ["CHOREO_FAULTS_LOG"], "a", buffering=1)  # noqa: SIM115
    _log.write(f"{what} {action.event_id} {os.getpid()}\n")


async def record(action: Event) -> list[Result]:
    _note("start", action)
    delay = float(os.environ.get("CHOREO_FAULTS_DELAY", "0") or 0)
    if delay:
        await asyncio.sleep(delay)
    _note("done", action)
    return []


HANDLERS = {"audit": {"record": record}, "orders": {"complete": record}}
