"""Prometheus metrics, one registry per process.

Every label value is bounded, so that no input can grow `/metrics` without end: values are
cut to MAX_LABEL_LENGTH characters; a label with a `LabelBound` (event_type, workflow) keeps
the values the choreography declares plus the first `spare` others and counts the rest as
OTHER; and a metric has at most MAX_SERIES label sets, later new ones counted as OTHER.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

REGISTRY = CollectorRegistry(auto_describe=True)
OTHER = "other"
MAX_LABEL_LENGTH = 100
MAX_SERIES = 1000
UNKNOWN_EVENT_TYPES = 100


class LabelBound:
    """The values one label may take: the declared ones, then the first `spare` others;
    anything else is OTHER."""

    def __init__(self, spare: int) -> None:
        self.spare = spare
        self.declared: frozenset[str] = frozenset()
        self.others: set[str] = set()
        self._lock = threading.Lock()

    def declare(self, values: Iterable[str], spare: int | None = None) -> None:
        """Set the declared values (cut like any label value) and, optionally, the spare."""
        self.declared = frozenset(_cut(str(v)) for v in values)
        if spare is not None:
            self.spare = spare
        self.others = set(list(self.others)[:self.spare]) - self.declared

    def __call__(self, value: str) -> str:
        if value in self.declared or value in self.others:
            return value
        with self._lock:
            if len(self.others) < self.spare:
                self.others.add(value)
                return value
        return OTHER


# Label name -> its bound. Event types come from the events read; workflow names from
# `workflow.start` payloads, so only the declared ones are kept (streams/runtime_metrics.py
# declares both from the choreography).
LABEL_BOUNDS = {"event_type": LabelBound(UNKNOWN_EVENT_TYPES), "workflow": LabelBound(0)}


def _cut(value: str) -> str:
    return value if len(value) <= MAX_LABEL_LENGTH else value[:MAX_LABEL_LENGTH - 3] + "..."


def bounded_labels(metric: Any, values: tuple[object, ...]) -> tuple[str, ...]:
    """The label values `metric` records for `values`: cut, bounded, OTHER past the caps."""
    out = []
    for name, value in zip(metric._labelnames, values, strict=False):  # noqa: SLF001
        text = _cut(str(value))
        bound = LABEL_BOUNDS.get(name)
        out.append(bound(text) if bound is not None else text)
    labels = tuple(out)
    series = metric._metrics  # noqa: SLF001
    if labels not in series and len(series) >= MAX_SERIES:
        return (OTHER,) * len(labels)
    return labels


class _Bounded:
    """`labels()` through `bounded_labels`."""

    def labels(self, *values: object, **by_name: object) -> Any:
        if by_name and not values and sorted(by_name) == sorted(self._labelnames):
            values = tuple(by_name[name] for name in self._labelnames)
            by_name = {}
        if by_name:
            return super().labels(*values, **by_name)  # type: ignore[misc] # its own error
        return super().labels(*bounded_labels(self, values))  # type: ignore[misc]


class Counter(_Bounded, prometheus_client.Counter):
    pass


class Gauge(_Bounded, prometheus_client.Gauge):
    pass


class Histogram(_Bounded, prometheus_client.Histogram):
    pass


_CHILDREN: dict[tuple[object, tuple[str, ...]], object] = {}


def child(metric: M, *labels: str) -> M:
    """`metric.labels(*labels)`, looked up once: `labels()` takes a lock and checks its
    arguments on every call, 2% of the timer's time when it ran a deadline backlog. Only
    label values within the bounds are remembered."""
    found = _CHILDREN.get((metric, labels))
    if found is None:
        found = metric.labels(*labels)
        if found._labelvalues == labels:  # noqa: SLF001 - not cut nor counted as OTHER
            _CHILDREN[(metric, labels)] = found
    return found  # type: ignore[return-value]

EVENTS_IN = Counter("choreo_events_in_total", "Valid events read, by type.", ["event_type"],
                    registry=REGISTRY)
DEAD_LETTERED = Counter("choreo_dead_lettered_total", "Records sent to a dead-letter topic.",
                        ["reason"], registry=REGISTRY)
DUPLICATES = Counter("choreo_duplicates_total", "Events dropped as duplicates.", ["stage"],
                     registry=REGISTRY)
ACTIONS_SENT = Counter("choreo_actions_sent_total", "Action events sent, by pattern.",
                       ["pattern_id", "capability"], registry=REGISTRY)
CONDITION_ERRORS = Counter("choreo_condition_errors_total",
                           "Conditions that could not be evaluated (the pattern did not fire).",
                           ["pattern_id"], registry=REGISTRY)
WORKER_ACTIONS = Counter("choreo_worker_actions_total", "Actions handled by workers.",
                         ["capability", "outcome"], registry=REGISTRY)
WORKER_SECONDS = Histogram("choreo_worker_action_seconds", "Time a worker took for an action.",
                           ["capability"], registry=REGISTRY)
ACTION_LATENCY = Histogram(
    "choreo_event_to_action_seconds",
    "Wall time from the triggering event's timestamp to its action being sent.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
LATE_EVENTS = Counter("choreo_late_events_total",
                      "Events older than the watermark minus allowed_lateness, not applied.",
                      ["pattern_id"], registry=REGISTRY)
UNKEYED = Counter("choreo_unkeyed_events_total",
                  "Events a keyed pattern listens to that carry no key for it (not counted).",
                  ["pattern_id"], registry=REGISTRY)
TIMERS_FIRED = Counter("choreo_deadlines_run_total",
                       "Deadlines reached: sequence steps, absence windows, windows closing, and "
                       "correlation summaries expiring (pattern_id ~correlation).",
                       ["pattern_id"], registry=REGISTRY)
EXPIRED_ENTRIES = Counter("choreo_expired_entries_total",
                          "Entries swept from an expiring table (de-duplication, task "
                          "progress) once past its horizon.", ["table"], registry=REGISTRY)
SWEEP_BACKLOG = Gauge("choreo_sweep_backlog_partitions",
                      "Partitions of an expiring table whose sweep stopped at its limit (or "
                      "whose sweep index is still being built) with expired entries left; "
                      "the engine's timer works off seen-events and seen-rekeyed, other "
                      "tables go on at their next sweep.", ["table"], registry=REGISTRY)
STATE_ENTRIES = Gauge("choreo_pattern_state_entries",
                      "Keys in flight in the pattern-state table on this worker (incl. "
                      "correlation summaries).", registry=REGISTRY)
STATE_DROPPED = Counter("choreo_pattern_state_dropped_total",
                        "Pattern-state entries deleted because the choreography file has no "
                        "place for them: their pattern was removed (removed), has another "
                        "kind (kind_changed), or a definition the state no longer fits "
                        "(window_changed, steps_changed).", ["reason"], registry=REGISTRY)
STATE_CARRIED = Counter("choreo_pattern_state_carried_total",
                        "Pattern-state entries moved to a pattern's new id (renamed_from).",
                        ["pattern_id"], registry=REGISTRY)
TIMER_ERRORS = Counter("choreo_timer_errors_total",
                       "Timer entries whose handling failed (a stored state the code cannot "
                       "run: corrupt, an old format, a bug): dropped from pattern-state, or "
                       "parked off the timer in workflow-instances; the state goes to the "
                       "events dead-letter topic (timer_error).", ["table"], registry=REGISTRY)
WATERMARK = Gauge("choreo_watermark_seconds", "Event-time watermark of each partition.",
                  ["partition"], registry=REGISTRY)
WORKER_RETRIES = Counter("choreo_worker_retries_total",
                         "Failed action attempts that were retried after a backoff.",
                         ["capability"], registry=REGISTRY)
BREAKER_STATE = Gauge("choreo_circuit_breaker_state",
                      "1 for the state each capability's circuit breaker is in, else 0.",
                      ["capability", "state"], registry=REGISTRY)
ALERTS = Counter("choreo_alerts_total", "Alerts raised by the flow monitor.", ["alert"],
                 registry=REGISTRY)
WORKFLOW_EXECUTIONS = Counter("choreo_workflow_executions_total",
                              "Workflow instances started and ended, by workflow and status "
                              "(started, completed, failed, compensated, cancelled, "
                              "compensation_failed).", ["workflow", "status"], registry=REGISTRY)
WORKFLOW_SECONDS = Histogram("choreo_workflow_duration_seconds",
                             "Time from an instance's start to its end, by workflow and status.",
                             ["workflow", "status"],
                             buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400),
                             registry=REGISTRY)
WORKFLOW_ACTIVE = Gauge("choreo_workflow_active_instances",
                        "Instances running or compensating on this worker's partitions.",
                        ["workflow"], registry=REGISTRY)
WORKFLOW_STEPS = Counter("choreo_workflow_step_actions_total",
                         "Actions the orchestrator sent for workflow steps (retries and "
                         "compensations included).", ["workflow", "kind"], registry=REGISTRY)
CONSUMER_LAG = Gauge("choreo_consumer_lag",
                     "Records on an assigned partition not yet processed: the partition's "
                     "highwater minus the next offset this worker will process.",
                     ["topic", "partition"], registry=REGISTRY)
TABLE_ENTRIES = Gauge("choreo_table_entries",
                      "Entries in each table on this worker (its active partitions), counted "
                      "every few seconds.", ["table"], registry=REGISTRY)
ROCKSDB_MEMORY = Gauge("choreo_rocksdb_memory_bytes",
                       "Bytes held by RocksDB's shared block cache and by all memtables "
                       "(CHOREO_ROCKSDB_CACHE_MB, CHOREO_ROCKSDB_WRITE_BUFFER_MB).", ["kind"],
                       registry=REGISTRY)
PATTERN_KEYS = Gauge("choreo_pattern_keys_in_flight",
                     "Keys with state in flight per keyed pattern on this worker "
                     "(~correlation: correlation summaries).", ["pattern_id"], registry=REGISTRY)
AGENTS = Gauge("choreo_agents", "Agents in the registry, by capability and status (up, down).",
               ["capability", "status"], registry=REGISTRY)
AGENT_TRANSITIONS = Counter("choreo_agent_transitions_total",
                            "agent.up / agent.down verdicts published by this worker.",
                            ["status"], registry=REGISTRY)
ACTIONS_ROUTED = Counter("choreo_actions_routed_total",
                         "Actions sent to one agent's inbox by explicit routing.",
                         ["capability", "agent_id"], registry=REGISTRY)
ROUTE_FALLBACKS = Counter("choreo_routing_fallbacks_total",
                          "Explicitly routed actions sent to the capability topic instead.",
                          ["capability", "reason"], registry=REGISTRY)
ACTIONS_REROUTED = Counter("choreo_actions_rerouted_total",
                           "Actions drained from a down agent's inbox and routed again.",
                           ["capability"], registry=REGISTRY)
