"""The replay as a Faust app command: `faust -A topology replay --help`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import faust
from faust.cli import AppCommand, option

from choreo.replay import ReplayerFactory, ReplayError, ReplayOptions, run_replay
from choreo.settings import Settings


class _ExitCodeCommand(AppCommand):
    """Runs the command in a loop of its own and exits with its return code (Faust's own
    commands run inside a worker service, which always exits 0 when they return)."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        try:
            code = asyncio.run(self.run(*self.args, **self.kwargs))
        except ReplayError as exc:
            self.stderr.write(f"replay: {exc}\n")
            code = 2
        sys.exit(code)


def register_replay_command(app: faust.App, settings: Settings,
                            replayer_factory: ReplayerFactory) -> Any:
    """Add `replay` to the app's commands; `replayer_factory` runs the engine's code offline
    (streams/replay.py `Replayer`)."""

    @app.command(
        option("--what-if", "what_if", type=click.Path(exists=True, dir_okay=False),
               help="another choreography file: print how its actions differ from those sent"),
        option("--from-offset", help="first offset: N for every partition, or P:N,P:N"),
        option("--to-offset", help="end offset (exclusive): N, or P:N,P:N"),
        option("--from-time", help="first record time: ISO 8601 with a zone, or epoch seconds"),
        option("--to-time", help="end record time (exclusive)"),
        option("--correlation-id", help="replay only this correlation's events"),
        option("--types", "event_types", help="replay only event types matching this glob"),
        option("--emit", help="send the replay's actions to this topic ({capability} is "
                              "filled in); nothing is sent otherwise"),
        option("--fail-on-diff", is_flag=True, default=False,
               help="exit 1 when the state or the actions differ"),
        option("--json", "as_json", is_flag=True, default=False, help="the report as JSON"),
        option("--group", help="the live engine's consumer group (default: its app id)"),
        option("--no-progress", "no_progress", is_flag=True, default=False,
               help="no progress bars"),
        base=_ExitCodeCommand,
    )
    async def replay(self: AppCommand, what_if: str | None, from_offset: str | None,
                     to_offset: str | None, from_time: str | None, to_time: str | None,
                     correlation_id: str | None, event_types: str | None, emit: str | None,
                     fail_on_diff: bool, as_json: bool, group: str | None,
                     no_progress: bool) -> int:
        """Re-run stored events through the engine: rebuild the pattern state and compare it
        with the live state, or (--what-if FILE) diff the actions another file would send."""
        opts = ReplayOptions(
            what_if=Path(what_if) if what_if else None, from_offset=from_offset,
            to_offset=to_offset, from_time=from_time, to_time=to_time,
            correlation_id=correlation_id, event_types=event_types, emit=emit,
            fail_on_diff=fail_on_diff, as_json=as_json, group=group, progress=not no_progress)
        return await run_replay(opts, settings, replayer_factory)

    return replay
