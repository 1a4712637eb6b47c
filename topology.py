"""The composition root: `faust -A topology worker -l info`.

Settings come from CHOREO_* environment variables (see choreo/settings.py and docs/operations.md).
`wire` adds every agent, table, timer and view to the app and returns what it built
(`Components`); nothing in choreo/, streams/, agents/ or tables/ imports this module.
The worker's app (`topology.app`) is built when it is first asked for: a choreography file
that does not load stops the worker there, before it joins the group, with every problem
listed by pattern id, field and reason.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import weakref
from dataclasses import dataclass
from typing import Any

import faust

from agents.registry import Presence, agent_identity, register_presence
from agents.views import register_agent_views, register_worker_views
from agents.worker import CapabilityWorker, register_workers
from choreo import rocksdb_memory
from choreo.app import Runtime, create_app
from choreo.config import ConfigError
from choreo.memory import FREED, freeze_startup_objects
from choreo.replay_command import register_replay_command
from choreo.settings import Settings
from streams.agents import AgentRegistry, register_registry
from streams.keyed import KeyedEngine
from streams.match_events import Matching, register_matcher
from streams.orchestrate import Orchestrator, register_orchestrator
from streams.replay import Replayer
from streams.runtime_metrics import register_memory_view, register_runtime_metrics
from streams.tasks import register_tasks
from streams.ui import DeadLetterReader, GraphPicture, register_ui
from streams.views import register_views
from streams.workflow_views import register_workflow_views
from tables.expiring import ExpiringTable
from tables.timers import open_indexes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    """Everything `wire` built around a runtime; None where this process runs no such part
    (CHOREO_ENGINE=off, no workflows, no [agents])."""

    runtime: Runtime
    workers: dict[str, CapabilityWorker]  # the capability workers this process runs
    graph_picture: GraphPicture
    dead_letter_reader: DeadLetterReader
    matching: Matching | None = None
    orchestrator: Orchestrator | None = None
    registry: AgentRegistry | None = None
    tasks: ExpiringTable | None = None
    presence: Presence | None = None

    @property
    def app(self) -> faust.App:
        return self.runtime.app

    @property
    def keyed(self) -> KeyedEngine | None:
        return self.matching.keyed if self.matching else None

    @property
    def seen_events(self) -> ExpiringTable | None:
        return self.matching.seen_events if self.matching else None


def load_handlers(spec: str) -> Any:
    """The handlers named by `module:attribute` (CHOREO_HANDLERS); several, comma-separated,
    are merged (a later one's capabilities win)."""
    merged: dict[str, Any] = {}
    for part in spec.split(","):
        module, _, attribute = part.strip().partition(":")
        if module:
            merged.update(getattr(importlib.import_module(module), attribute or "HANDLERS"))
    return merged


def wire(runtime: Runtime, workers: str = "*") -> Components:
    """Register the matching agent, the orchestrator, the registry, the capability workers
    and the web views on the runtime's app; return what was built."""
    settings = runtime.settings
    registry_on = runtime.choreography.agents.enabled  # [agents] or explicit routing
    matching = orchestrator = registry = tasks = None
    if settings.engine:
        matching = register_matcher(runtime)
        orchestrator = register_orchestrator(runtime)
        if registry_on:
            registry = register_registry(runtime)
            tasks = register_tasks(runtime)
    agent_id = agent_identity(runtime) if registry_on else ""
    started = register_workers(runtime, load_handlers(settings.handlers), select=workers,
                               agent_id=agent_id)
    presence = register_presence(runtime, started, agent_id) if registry_on else None
    keyed = matching.keyed if matching else None
    register_views(runtime, keyed)
    register_worker_views(runtime)
    register_workflow_views(runtime, orchestrator)
    register_runtime_metrics(runtime, keyed)
    register_memory_view(runtime)
    picture, reader = register_ui(runtime, keyed)
    register_agent_views(runtime, registry.view if registry else None)
    if settings.gc_freeze:
        runtime.app.task(_freeze_startup_objects)
    FREED.threshold = settings.release_after  # one count per process
    if settings.store.startswith("rocksdb"):
        _ROCKSDB_APPS.add(runtime.app)
        FREED.on_release(_shed_rocksdb)
    return Components(runtime, started, picture, reader, matching, orchestrator, registry,
                      tasks, presence)


_ROCKSDB_APPS: weakref.WeakSet[faust.App] = weakref.WeakSet()


def _shed_rocksdb() -> None:
    """After a mass expiry: RocksDB's memtables and cache let go of the expired keys."""
    stores = [db for app in list(_ROCKSDB_APPS) for table in app.tables.values()
              for db in getattr(table.data, "_dbs", {}).values()]
    rocksdb_memory.shed([*stores, *open_indexes()])


async def _freeze_startup_objects() -> None:
    log.info("left %d objects made at start out of garbage collection",
             freeze_startup_objects())


@functools.cache
def main() -> Components:
    """The worker's components, from the CHOREO_* environment, with the `replay` command."""
    settings = Settings.from_env()
    try:
        components = wire(create_app(settings), workers=os.environ.get("CHOREO_WORKERS", "*"))
    except ConfigError as exc:
        sys.stderr.write(f"choreo: cannot start, the choreography file is invalid: {exc}\n")
        raise SystemExit(2) from None
    register_replay_command(components.app, settings, Replayer)
    return components


def __getattr__(name: str) -> Any:
    """`topology.app` (what `faust -A topology` loads) is built on first use, so that
    importing `wire` builds nothing."""
    if name == "app":
        return main().app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
