"""Workers for the workflow integration tests.

CHOREO_HANDLERS=tests.integration.workflow_handlers:HANDLERS.

The bundled loan, content and medical handlers plus a small `calc` capability for the
strategies, each wrapped to append `start|done <action id> <instance> <step> <action>
<compensation>` to the file named by CHOREO_WF_LEDGER (line-buffered, so a kill -9 of
another process loses nothing). CHOREO_WF_DELAY makes every handler take that long.
"""

from __future__ import annotations

import asyncio
import os

from agents import content, loan, medical
from agents.worker import ActionRefused, Handler, Result
from choreo.envelope import Event

_ledger = None


def _write(what: str, action: Event) -> None:
    global _ledger
    path = os.environ.get("CHOREO_WF_LEDGER")
    if not path:
        return
    if _ledger is None:
        _ledger = open(path, "a", buffering=1)  # noqa: SIM115
    info = action.payload.get("workflow") or {}
    _ledger.write(f"{what} {action.event_id} {info.get('instance_id')} {info.get('step')} "
                  f"{action.payload.get('action')} {int(bool(info.get('compensation')))}\n")


def ledgered(handler: Handler) -> Handler:
    async def run(action: Event) -> list[Result]:
        _write("start", action)
        delay = float(os.environ.get("CHOREO_WF_DELAY", "0") or 0)
        data = action.payload.get("data")
        if isinstance(data, dict) and isinstance(data.get("sleep"), int | float):
            delay = float(data["sleep"])
        if delay:
            await asyncio.sleep(delay)
        results = await handler(action)
        _write("done", action)
        return results
    return run


def _x(action: Event) -> int:
    return int((action.payload.get("data") or {}).get("x", 0))


async def inc(action: Event) -> list[Result]:
    return [Result("calc.done", {"x": _x(action) + 1})]


async def double(action: Event) -> list[Result]:
    return [Result("calc.done", {"x": _x(action) * 2})]


async def total(action: Event) -> list[Result]:
    return [Result("calc.done", {"x": sum(v["x"] for v in action.payload["data"]["values"])})]


async def solve(action: Event) -> list[Result]:
    numbers = action.payload["data"]["numbers"]
    if action.payload["workflow"]["may_decompose"] and len(numbers) > 1:
        half = len(numbers) // 2
        return [Result("calc.split", {"subtasks": [{"numbers": numbers[:half]},
                                                   {"numbers": numbers[half:]}]})]
    return [Result("calc.done", {"x": sum(numbers)})]


async def refuse(action: Event) -> list[Result]:
    raise ActionRefused("refused on purpose")


_ALL: dict[str, dict[str, Handler]] = {
    **loan.HANDLERS, **content.HANDLERS, **medical.HANDLERS,
    "calc": {"inc": inc, "double": double, "total": total, "solve": solve, "refuse": refuse,
             "wait": inc},
}
HANDLERS = {capability: {name: ledgered(h) for name, h in actions.items()}
            for capability, actions in _ALL.items()}

STRATEGIES = """
[[workflows]]
name = "route"
[[workflows.steps]]
name = "decide"
strategy = "conditional"
branches = [{ name = "big", when = "input.x > 100", capability = "calc", action = "double" }]
default = { capability = "calc", action = "inc" }  # without params: the data is the input

[[workflows]]
name = "mapred"
[[workflows.steps]]
name = "doubled"
strategy = "map_reduce"
over = "$input.items"
capability = "calc"
action = "double"
params = { x = "$item" }
reduce = { capability = "calc", action = "total", params = { values = "$previous" } }

[[workflows]]
name = "recurse"
[[workflows.steps]]
name = "sum"
strategy = "recursive"
capability = "calc"
action = "solve"
max_depth = 2
combine = { capability = "calc", action = "total", params = { values = "$previous" } }

[[workflows]]
name = "nested"
[[workflows.steps]]
name = "route_it"
strategy = "workflow"
workflow = "route"
[[workflows.steps]]
name = "plus_one"
capability = "calc"
action = "inc"
params = { x = "$previous.x" }

[[workflows]]
name = "waiting"
strategy = "saga"
[[workflows.steps]]
name = "first"
capability = "calc"
action = "inc"
params = { x = 1 }
compensation = { capability = "calc", action = "double", params = { x = "$result.x" } }
[[workflows.steps]]
name = "slow"
capability = "calc"
action = "wait"
timeout = "2s"
retries = 1
backoff_base = "500ms"
params = { sleep = "$input.sleep" }
"""
