"""Load and validate the choreography file (TOML) into frozen definitions.

Every problem is collected and reported together, each naming the pattern, the field and
the reason, so a bad file stops the worker at start with everything that needs fixing.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from choreo.conditions import Condition, ConditionError, compile_condition
from choreo.content_filter import ContentFilter, FilterError, compile_filter
from choreo.durations import parse_duration
from choreo.envelope import MAX_DEPTH_LIMIT, MAX_EVENT_DEPTH, MAX_FUTURE_SKEW
from choreo.errors import ConfigError, ConfigIssue
from choreo.monitor import MonitorSettings, parse_monitor
from choreo.patterns import (
    KINDS,
    AbsencePattern,
    EventPattern,
    EventSpec,
    Pattern,
    SequencePattern,
    TemporalPattern,
    ThresholdPattern,
)
from choreo.producers import Production, parse_production
from choreo.registry import AgentSettings, parse_agent_settings
from choreo.routing import Routing, parse_routing
from choreo.schemas import SchemaRegistry, parse_schemas
from choreo.security import SecuritySettings, parse_security
from choreo.worker_policy import WorkerPolicies, parse_worker_policies
from choreo.workflows.definitions import Workflow, parse_workflows, workflow_capabilities

NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
GLOB = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]+$")
# Builds the EventSpec of one step from its value and name (`_Loader.pattern`'s `spec`).
SpecFn = Callable[[object, str], EventSpec]
# A hopping window of length w and hop h puts each event in w/h windows, each a counter in
# the key's state; past this the state of one key would grow with the ratio.
MAX_WINDOWS_PER_EVENT = 100
# Deepest nesting of tables and arrays a file may have: far beyond any real choreography, and
# well inside the recursion of everything that walks the values afterwards.
MAX_DEPTH = 64
GROUP_BY = re.compile(r"^(payload|metadata)(\.[A-Za-z0-9_\-]+)+$|^source$")


@dataclass(frozen=True)
class Topics:
    prefix: str = ""
    events: str = "events"
    dead_letter: str = "events.dlq"
    capability: str = "capability.{capability}"
    rekeyed: str = "events.rekeyed"
    alerts: str = "alerts"
    capability_dead_letter: str = "capability.{capability}.dlq"
    agents: str = "agents"  # the agent registry: announces, heartbeats, verdicts (compacted)
    tasks: str = "events.tasks"  # internal: task.progress events keyed by task id

    @property
    def agents_topic(self) -> str:
        return self.prefix + self.agents

    @property
    def tasks_topic(self) -> str:
        return self.prefix + self.tasks

    def inbox_topic(self, capability: str, agent_id: str) -> str:
        """The topic only `agent_id` reads, for actions routed to it explicitly."""
        return f"{self.capability_topic(capability)}.{agent_id}"

    @property
    def events_topic(self) -> str:
        return self.prefix + self.events

    @property
    def alerts_topic(self) -> str:
        """Where the flow monitor publishes slow-flow and rate-spike alerts."""
        return self.prefix + self.alerts

    @property
    def rekeyed_topic(self) -> str:
        """Internal: events re-sent keyed by a pattern's key when it is not their partition's."""
        return self.prefix + self.rekeyed

    @property
    def dead_letter_topic(self) -> str:
        return self.prefix + self.dead_letter

    def capability_topic(self, capability: str) -> str:
        return self.prefix + self.capability.format(capability=capability)

    def capability_dead_letter_topic(self, capability: str) -> str:
        """Where a capability's workers put actions that failed every attempt."""
        return self.prefix + self.capability_dead_letter.format(capability=capability)


@dataclass(frozen=True)
class Defaults:
    allowed_lateness: float = 0.0
    dedup_horizon: float = 24 * 3600.0
    idle_timeout: float = 30.0
    max_event_bytes: int = 1024 * 1024
    correlation_ttl: float = 24 * 3600.0
    max_event_depth: int = MAX_EVENT_DEPTH  # nesting levels; deeper events: `too_deep`
    max_future_skew: float = MAX_FUTURE_SKEW  # seconds ahead of the wall clock: `future`


@dataclass(frozen=True)
class Choreography:
    topics: Topics = field(default_factory=Topics)
    defaults: Defaults = field(default_factory=Defaults)
    patterns: tuple[Pattern, ...] = ()
    source: str = ""
    workers: WorkerPolicies = field(default_factory=WorkerPolicies)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    # None when the file has no [schemas] table: ingest then validates nothing more.
    schemas: SchemaRegistry | None = None
    production: Production = field(default_factory=Production)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    agents: AgentSettings = field(default_factory=AgentSettings)
    routing: Routing = field(default_factory=Routing)
    workflows: tuple[Workflow, ...] = ()
    # Pattern id -> the id it had before (`renamed_from`): its stored state carries over.
    renamed_from: Mapping[str, str] = field(default_factory=dict)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Every capability an action may go to (patterns' and workflows'), first-seen order."""
        seen: dict[str, None] = {}
        for pattern in self.patterns:
            seen[pattern.capability] = None
            timeout_cap = getattr(pattern, "timeout_capability", None)
            if getattr(pattern, "timeout_action", None):
                seen[timeout_cap or pattern.capability] = None
        for capability in workflow_capabilities(self.workflows):
            seen[capability] = None
        return tuple(seen)

    @property
    def sends(self) -> dict[str, tuple[str, ...]]:
        """The actions patterns send to each capability, timeout actions included."""
        out: dict[str, dict[str, None]] = {}
        for pattern in self.patterns:
            out.setdefault(pattern.capability, {})[pattern.action] = None
            timeout_action = getattr(pattern, "timeout_action", None)
            if timeout_action:
                capability = getattr(pattern, "timeout_capability", None) or pattern.capability
                out.setdefault(capability, {})[timeout_action] = None
        for capability, actions in workflow_capabilities(self.workflows).items():
            out.setdefault(capability, {}).update(actions)
        return {capability: tuple(actions) for capability, actions in out.items()}

    def pattern(self, pattern_id: str) -> Pattern | None:
        return next((p for p in self.patterns if p.id == pattern_id), None)


def load_choreography(path: str | Path) -> Choreography:
    """Read and validate a choreography file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue("-", "-", f"cannot read {path}: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("-", "-", f"cannot read {path}: not UTF-8 text")]) from None
    return parse_choreography(text, source=str(path))


def parse_choreography(text: str, source: str = "") -> Choreography:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue("-", "-", f"not valid TOML: {exc}")], source) from None
    except RecursionError:  # tomllib recurses once per nested inline table or array
        raise ConfigError([ConfigIssue("-", "-", "tables or arrays nested too deeply to "
                                       f"read (at most {MAX_DEPTH} levels)")],
                          source) from None
    deep = _too_deep(data)
    if deep is not None:
        raise ConfigError([ConfigIssue(*deep, f"nested more than {MAX_DEPTH} levels deep")],
                          source)
    loader = _Loader()
    choreography = loader.load(data, source)
    if loader.issues:
        raise ConfigError(loader.issues, source)
    return choreography


# The fields each kind takes, beyond the common ones.
COMMON = {"id", "kind", "action", "capability", "priority", "when", "match", "group_by",
          "allowed_lateness", "renamed_from"}
KIND_FIELDS = {
    "event": {"on"},
    "threshold": {"on", "count", "window", "window_kind", "hop"},
    "temporal": {"all_of", "window"},
    "sequence": {"steps", "max_interval", "within", "timeout_action", "timeout_capability"},
    "absence": {"after", "expect", "within"},
}
SPEC_FIELDS = {"on", "when", "match"}
TOPIC_FIELDS = {"prefix", "events", "dead_letter", "capability", "capability_dead_letter",
                "rekeyed", "alerts", "agents", "tasks"}


class _Loader:
    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []
        self.renamed_from: dict[str, str] = {}  # pattern id -> its id before

    def fail(self, pattern_id: str, field_name: str, reason: str) -> None:
        self.issues.append(ConfigIssue(pattern_id, field_name, reason))

    def load(self, data: dict[str, Any], source: str) -> Choreography:
        known = {"topics", "defaults", "patterns", "sequences", "workers", "capabilities",
                 "monitor", "schemas", "events", "security", "agents", "workflows"}
        for key in data:
            if key not in known:
                self.fail("-", key, _unknown(key, known, "top-level table"))
        topics = self.topics(data.get("topics", {}))
        defaults = self.defaults(data.get("defaults", {}))
        raw_patterns = data.get("patterns", [])
        if not isinstance(raw_patterns, list):
            self.fail("-", "patterns", "write patterns as [[patterns]] tables")
            raw_patterns = []
        raw_sequences = data.get("sequences", [])
        if not isinstance(raw_sequences, list):
            self.fail("-", "sequences", "write sequences as [[sequences]] tables")
            raw_sequences = []
        entries = [_from_seed_pattern(p) for p in raw_patterns]
        entries += [_from_seed_sequence(s) for s in raw_sequences]
        patterns: list[Pattern] = []
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            pattern_id = f"#{index + 1}"
            if not isinstance(entry, dict):
                self.fail(pattern_id, "-", "each pattern is a table")
                continue
            raw_id = entry.get("id")
            if not isinstance(raw_id, str) or not NAME.match(raw_id):
                self.fail(pattern_id, "id", "required: letters, digits, '_', '-' and '.'")
            else:
                pattern_id = raw_id
                if raw_id in seen:
                    self.fail(pattern_id, "id", "duplicate pattern id")
                seen.add(raw_id)
            pattern = self.pattern(pattern_id, entry, defaults)
            if pattern is not None:
                patterns.append(pattern)
                self.renamed(pattern_id, entry)
        self.check_renames(seen)
        workflows = parse_workflows(data.get("workflows"), self.issues.append)  # type: ignore[arg-type]
        choreography = Choreography(topics, defaults, tuple(patterns), source,
                                    workflows=workflows)
        workers = parse_worker_policies(data.get("workers", {}), data.get("capabilities", {}),
                                        choreography.capabilities, self.fail)
        monitor = parse_monitor(data.get("monitor"), self.fail)
        base_dir = Path(source).parent if source else Path.cwd()
        schemas = parse_schemas(data.get("schemas"), base_dir, self.fail)
        production = parse_production(data.get("capabilities", {}), data.get("events"),
                                      choreography.sends, self.fail)
        security = parse_security(data.get("security"), base_dir, defaults.dedup_horizon,
                                  self.fail)
        agents = parse_agent_settings(data.get("agents"), self.fail)
        routing = parse_routing(data.get("capabilities", {}), self.fail)
        if any(r.explicit for r in routing.routes.values()) and not agents.enabled:
            if data.get("agents") is None:
                agents = replace(agents, enabled=True)  # routing needs the registry
            else:
                self.fail("-", "agents.enabled", "explicit routing needs the agent registry")
        return Choreography(topics, defaults, tuple(patterns), source, workers, monitor,
                            schemas, production, security=security, agents=agents,
                            routing=routing, workflows=workflows,
                            renamed_from=dict(self.renamed_from))

    def renamed(self, pid: str, entry: dict[str, Any]) -> None:
        """Note `renamed_from`: the id whose stored state this pattern takes over."""
        old = entry.get("renamed_from")
        if old is None:
            return
        if not isinstance(old, str) or not NAME.match(old):
            self.fail(pid, "renamed_from", "must be the pattern's previous id: letters, "
                                           "digits, '_', '-' and '.'")
        elif old == pid:
            self.fail(pid, "renamed_from", "names the pattern's own id; remove it")
        else:
            self.renamed_from[pid] = old

    def check_renames(self, ids: set[str]) -> None:
        """An old id must be no current pattern's, and carried over to one pattern only."""
        taken: dict[str, str] = {}
        for pid, old in self.renamed_from.items():
            if old in ids:
                self.fail(pid, "renamed_from", f"{old!r} is the id of a pattern in this file: "
                                               f"its state stays with it; name an id that "
                                               f"is gone")
            elif old in taken:
                self.fail(pid, "renamed_from", f"pattern {taken[old]!r} is renamed from "
                                               f"{old!r} already; one pattern takes its state")
            taken.setdefault(old, pid)

    def topics(self, raw: object) -> Topics:
        if not isinstance(raw, dict):
            self.fail("-", "topics", "must be a table")
            return Topics()
        default = Topics()
        values: dict[str, str] = {}
        for key, value in raw.items():
            if key not in TOPIC_FIELDS:
                self.fail("-", f"topics.{key}", _unknown(key, TOPIC_FIELDS, "topics field"))
            elif not isinstance(value, str) or (key != "prefix" and not value):
                self.fail("-", f"topics.{key}", "must be a non-empty string")
            else:
                values[key] = value
        topics = Topics(**{**default.__dict__, **values})
        if "{capability}" not in topics.capability:
            self.fail("-", "topics.capability", "must contain the placeholder {capability}")
        else:
            try:
                sample = topics.capability_topic("x")
            except (KeyError, IndexError, ValueError):
                self.fail("-", "topics.capability",
                          "{capability} is the only placeholder it may contain")
            else:
                if not NAME.match(sample):
                    self.fail("-", "topics.capability",
                              f"gives {sample!r}, not a valid Kafka topic name")
        if "{capability}" not in topics.capability_dead_letter:
            self.fail("-", "topics.capability_dead_letter",
                      "must contain the placeholder {capability}")
        else:
            try:
                sample = topics.capability_dead_letter_topic("x")
            except (KeyError, IndexError, ValueError):
                self.fail("-", "topics.capability_dead_letter",
                          "{capability} is the only placeholder it may contain")
            else:
                if not NAME.match(sample):
                    self.fail("-", "topics.capability_dead_letter",
                              f"gives {sample!r}, not a valid Kafka topic name")
        for name in (topics.events_topic, topics.dead_letter_topic, topics.rekeyed_topic,
                     topics.alerts_topic, topics.agents_topic, topics.tasks_topic):
            if not NAME.match(name):
                self.fail("-", "topics", f"{name!r} is not a valid Kafka topic name")
        return topics

    def defaults(self, raw: object) -> Defaults:
        if not isinstance(raw, dict):
            self.fail("-", "defaults", "must be a table")
            return Defaults()
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key in ("allowed_lateness", "dedup_horizon", "idle_timeout", "correlation_ttl",
                       "max_future_skew"):
                out[key] = self.duration("-", f"defaults.{key}", value)
            elif key == "max_event_bytes":
                if isinstance(value, bool) or not isinstance(value, int) or value < 256:
                    self.fail("-", "defaults.max_event_bytes", "must be an integer >= 256")
                else:
                    out[key] = value
            elif key == "max_event_depth":
                if (isinstance(value, bool) or not isinstance(value, int)
                        or not 2 <= value <= MAX_DEPTH_LIMIT):
                    self.fail("-", "defaults.max_event_depth",
                              f"must be an integer from 2 to {MAX_DEPTH_LIMIT}")
                else:
                    out[key] = value
            else:
                self.fail("-", f"defaults.{key}", _unknown(key, set(Defaults.__dataclass_fields__),
                                                         "defaults field"))
        return Defaults(**{k: v for k, v in out.items() if v is not None})

    def duration(self, pattern_id: str, name: str, value: object) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(pattern_id, name, str(exc))
            return None
        return seconds

    def pattern(self, pid: str, entry: dict[str, Any], defaults: Defaults) -> Pattern | None:
        kind = entry.get("kind")
        if kind not in KINDS:
            self.fail(pid, "kind", f"must be one of {', '.join(KINDS)}; got {kind!r}")
            return None
        allowed = COMMON | KIND_FIELDS[kind]
        for key in entry:
            if key not in allowed:
                article = "an" if kind[0] in "aeiou" else "a"
                self.fail(pid, key, _unknown(key, allowed, f"field of {article} {kind} pattern"))
        common = self.common(pid, entry, defaults)
        pattern_conditions, pattern_filters = self.predicates(pid, "", entry)
        def spec(value: object, name: str) -> EventSpec:
            return self.spec(pid, name, value, pattern_conditions, pattern_filters)
        builders: dict[str, Callable[[], Pattern | None]] = {
            "event": lambda: EventPattern(**common, on=spec(entry.get("on"), "on")),
            "threshold": lambda: self.threshold(pid, entry, common, spec),
            "temporal": lambda: TemporalPattern(
                **common,
                all_of=self.spec_list(pid, "all_of", entry.get("all_of"), spec, minimum=2),
                window=self.required_duration(pid, entry, "window"),
            ),
            "sequence": lambda: self.sequence(pid, entry, common, spec),
            "absence": lambda: AbsencePattern(
                **common,
                after=spec(entry.get("after"), "after"),
                expect=spec(entry.get("expect"), "expect"),
                within=self.required_duration(pid, entry, "within"),
            ),
        }
        return builders[kind]()

    def common(self, pid: str, entry: dict[str, Any], defaults: Defaults) -> dict[str, Any]:
        out: dict[str, Any] = {"id": pid}
        for name in ("action", "capability"):
            value = entry.get(name)
            if not isinstance(value, str) or not NAME.match(value):
                self.fail(pid, name, "required: letters, digits, '_', '-' and '.'")
                value = "invalid"
            out[name] = value
        priority = entry.get("priority", 1)
        if isinstance(priority, bool) or not isinstance(priority, int):
            self.fail(pid, "priority", f"must be an integer, got {priority!r}")
            priority = 1
        out["priority"] = priority
        group_by = entry.get("group_by")
        if group_by is not None:
            if entry.get("kind") == "event":
                self.fail(pid, "group_by", "event patterns are not keyed; remove group_by")
            elif not isinstance(group_by, str) or not GROUP_BY.match(group_by):
                self.fail(pid, "group_by", "must name a field: payload.<path>, metadata.<path> "
                                           "or source")
                group_by = None
        out["group_by"] = group_by
        lateness = entry.get("allowed_lateness")
        out["allowed_lateness"] = (
            defaults.allowed_lateness if lateness is None
            else self.duration(pid, "allowed_lateness", lateness) or 0.0
        )
        return out

    def predicates(self, pid: str, prefix: str, entry: dict[str, Any]
                   ) -> tuple[tuple[Condition, ...], tuple[ContentFilter, ...]]:
        conditions, filters = [], []
        if "when" in entry:
            try:
                conditions.append(compile_condition(entry["when"]))
            except ConditionError as exc:
                self.fail(pid, prefix + "when", str(exc))
        if "match" in entry:
            if not isinstance(entry["match"], dict):
                self.fail(pid, prefix + "match", "must be a table (a content filter)")
            else:
                try:
                    filters.append(compile_filter(entry["match"]))
                except FilterError as exc:
                    self.fail(pid, prefix + "match", str(exc))
        return tuple(conditions), tuple(filters)

    def spec(self, pid: str, name: str, value: object, conditions: tuple[Condition, ...],
             filters: tuple[ContentFilter, ...]) -> EventSpec:
        if isinstance(value, dict):
            for key in value:
                if key not in SPEC_FIELDS:
                    self.fail(pid, f"{name}.{key}", _unknown(key, SPEC_FIELDS, "step field"))
            own_conditions, own_filters = self.predicates(pid, f"{name}.", value)
            on = value.get("on")
            field_name = f"{name}.on"
        else:
            own_conditions, own_filters, on, field_name = (), (), value, name
        if not isinstance(on, str) or not GLOB.match(on):
            self.fail(pid, field_name, "required: an event type or a glob such as 'order.*'")
            on = "invalid"
        return EventSpec(on, own_conditions + conditions, own_filters + filters)

    def spec_list(self, pid: str, name: str, value: object, spec: SpecFn, minimum: int
                  ) -> tuple[EventSpec, ...]:
        if not isinstance(value, list) or len(value) < minimum:
            self.fail(pid, name, f"required: a list of at least {minimum} event types or tables")
            return ()
        return tuple(spec(item, f"{name}[{i}]") for i, item in enumerate(value))

    def required_duration(self, pid: str, entry: dict[str, Any], name: str) -> float:
        if name not in entry:
            self.fail(pid, name, "required: a duration such as \"30s\" or \"5m\"")
            return 1.0
        seconds = self.duration(pid, name, entry[name])
        if seconds is not None and seconds <= 0:
            self.fail(pid, name, "must be longer than zero")
        return seconds or 1.0

    def threshold(self, pid: str, entry: dict[str, Any], common: dict[str, Any], spec: SpecFn
                  ) -> Pattern:
        count = entry.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            self.fail(pid, "count", f"required: a whole number of at least 1, got {count!r}")
            count = 1
        window_kind = entry.get("window_kind", "sliding")
        if window_kind not in ("sliding", "tumbling", "hopping"):
            self.fail(pid, "window_kind", "must be sliding, tumbling or hopping")
        before = len(self.issues)
        window = self.required_duration(pid, entry, "window")
        hop = None
        if window_kind == "hopping":
            hop = self.required_duration(pid, entry, "hop")
            if len(self.issues) == before:  # both durations are good
                if hop > window:
                    self.fail(pid, "hop", "must not be longer than window")
                elif window / hop > MAX_WINDOWS_PER_EVENT:
                    self.fail(pid, "hop", f"window/hop is {window / hop:g}: an event would fall "
                              f"in more than {MAX_WINDOWS_PER_EVENT} windows")
        elif "hop" in entry:
            self.fail(pid, "hop", "only hopping windows take a hop")
        return ThresholdPattern(**common, on=spec(entry.get("on"), "on"), count=count,
                                window=window, window_kind=window_kind, hop=hop)

    def sequence(self, pid: str, entry: dict[str, Any], common: dict[str, Any], spec: SpecFn
                 ) -> Pattern:
        steps = self.spec_list(pid, "steps", entry.get("steps"), spec, minimum=2)
        max_interval = self.required_duration(pid, entry, "max_interval")
        within = None
        if "within" in entry:
            within = self.required_duration(pid, entry, "within")
        timeout_action = entry.get("timeout_action")
        if timeout_action is not None and (not isinstance(timeout_action, str)
                                           or not NAME.match(timeout_action)):
            self.fail(pid, "timeout_action", "must be an action name")
            timeout_action = None
        timeout_capability = entry.get("timeout_capability")
        if timeout_capability is not None:
            if timeout_action is None:
                self.fail(pid, "timeout_capability", "needs timeout_action")
            elif not isinstance(timeout_capability, str) or not NAME.match(timeout_capability):
                self.fail(pid, "timeout_capability", "must be a capability name")
        return SequencePattern(**common, steps=steps, max_interval=max_interval, within=within,
                               timeout_action=timeout_action,
                               timeout_capability=timeout_capability)


def _too_deep(data: dict[str, Any]) -> tuple[str, str] | None:
    """(pattern, field) of the first value nested deeper than MAX_DEPTH, or None.

    Walked without recursion, so a file of any depth gets an answer.
    """
    stack: list[tuple[object, int, str, str]] = [(data, 0, "-", "")]
    while stack:
        value, depth, pattern_id, path = stack.pop()
        if depth > MAX_DEPTH:
            return pattern_id, re.split(r"[.\[]", path)[0] or "-"
        if isinstance(value, dict):
            items: Iterable[tuple[object, object]] = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        for key, item in items:
            if depth == 1 and path in ("patterns", "sequences") and isinstance(item, dict):
                name = item.get("id", item.get("sequence_id"))
                child_pid = name if isinstance(name, str) else f"#{key + 1}"  # type: ignore[operator]
                stack.append((item, depth + 1, child_pid, ""))
                continue
            child_path = f"{path}.{key}" if path and isinstance(key, str) else (
                f"{path}[{key}]" if path else str(key))
            stack.append((item, depth + 1, pattern_id, child_path))
    return None


def _unknown(key: str, allowed: set[str], what: str) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    if close:
        hint = f"; did you mean {close[0]!r}?"
    else:
        hint = f"; expected one of {', '.join(sorted(allowed))}"
    return f"unknown {what}{hint}"


def _seconds(value: object) -> object:
    """The seed material writes windows as whole seconds; turn them into duration strings."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value}s"
    return value


def _from_seed_pattern(entry: object) -> object:
    """Map the seed material's `type = ...` shorthand onto the kinds."""
    if not isinstance(entry, Mapping) or "type" not in entry or "kind" in entry:
        return entry
    entry = dict(entry)
    seed_type = entry.pop("type")
    if "target_capability" in entry:
        entry.setdefault("capability", entry.pop("target_capability"))
    if "condition" in entry:
        entry.setdefault("when", entry.pop("condition"))
    if "pattern_id" in entry:
        entry.setdefault("id", entry.pop("pattern_id"))
    if seed_type == "threshold_pattern":
        entry["kind"] = "threshold"
        entry.setdefault("on", entry.pop("event_type", None))
        entry.setdefault("count", entry.pop("threshold", None))
        entry.setdefault("window", _seconds(entry.pop("time_window", None)))
    elif seed_type == "temporal_sequence":
        entry["kind"] = "temporal"
        required = list(entry.pop("required_events", []) or [])
        trigger = entry.pop("trigger_event", None)
        if trigger and trigger not in required:
            required.append(trigger)
        entry.setdefault("all_of", required)
        entry.setdefault("window", _seconds(entry.pop("time_window", None)))
    elif seed_type == "state_transition":
        entry["kind"] = "event"
        entry.setdefault("on", entry.pop("event_type", None))
    else:
        entry["kind"] = seed_type
    return entry


def _from_seed_sequence(entry: object) -> object:
    """Map a seed `[[sequences]]` entry onto a sequence pattern."""
    if not isinstance(entry, Mapping):
        return entry
    entry = dict(entry)
    out: dict[str, Any] = {"kind": "sequence"}
    out["id"] = entry.pop("sequence_id", entry.pop("id", None))
    out["steps"] = entry.pop("events", entry.pop("steps", None))
    out["max_interval"] = _seconds(entry.pop("max_interval", 60))
    out["capability"] = entry.pop("target_capability", entry.pop("capability", None))
    out.update(entry)
    return out
