"""Workflow definitions: the `[[workflows]]` tables, loaded into frozen dataclasses.

Validation collects every problem, each naming the workflow, the step and the field, as
the rest of the choreography file does. Besides the seed material's WorkflowValidator checks
(a name, at least one step, a name per step, a capability and action per call and per
compensation) it refuses unknown fields, references to steps that do not exist or run later,
`$item` outside a map step, conditions that do not compile, calls to unknown workflows and
workflows that call each other in a cycle.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from choreo.conditions import Condition, ConditionError, compile_condition
from choreo.durations import parse_duration
from choreo.workflows.params import ParamError, Ref, compile_params, parse_ref, refs_in

NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
EVENT_TYPE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
STRATEGIES = ("sequential", "parallel", "conditional", "map_reduce", "recursive", "workflow")
WORKFLOW_STRATEGIES = ("sequential", "saga")
ON_ERROR = ("fail", "skip", "compensate")
CONDITION_VARIABLES = ("input", "results", "previous")
MAX_RETRIES = 100
MAX_ITEMS = 1000  # the most a map step may fan out to (every item is a task in the state)
MAX_DEPTH = 10  # recursive steps, and workflows started by workflow steps


@dataclass(frozen=True)
class WorkflowIssue:
    """One problem in a `[[workflows]]` table (duck-types config.ConfigIssue)."""

    pattern_id: str  # the workflow's name
    field: str
    reason: str
    step: str = ""

    def __str__(self) -> str:
        step = f", step {self.step!r}" if self.step else ""
        return f"workflow {self.pattern_id!r}{step}, field {self.field!r}: {self.reason}"


@dataclass(frozen=True)
class Call:
    """An action sent to a capability, its data built from `params` (None: the default)."""

    capability: str
    action: str
    params: Any = None


@dataclass(frozen=True)
class Branch:
    name: str
    call: Call
    when: Condition | None = None


@dataclass(frozen=True)
class Retry:
    """Attempts after the first, and the exponential backoff between them."""

    retries: int = 0
    backoff_base: float = 1.0
    backoff_max: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based)."""
        factor: float = 2 ** (attempt - 1)
        return min(self.backoff_max, self.backoff_base * factor)


@dataclass(frozen=True)
class Step:
    name: str
    strategy: str = "sequential"
    call: Call | None = None  # sequential, map_reduce (per item), recursive (solve)
    branches: tuple[Branch, ...] = ()  # parallel, conditional
    default: Call | None = None  # conditional: when no branch matches
    over: Ref | None = None  # map_reduce: the list
    reduce: Call | None = None  # map_reduce
    combine: Call | None = None  # recursive
    max_depth: int = 3  # recursive
    max_items: int = 100  # map_reduce items, recursive subtasks
    workflow: str | None = None  # workflow: the workflow it runs
    params: Any = None  # workflow: the child's input
    timeout: float = 60.0
    retry: Retry = field(default_factory=Retry)
    on_error: str = "fail"
    compensation: Call | None = None

    def calls(self) -> Iterator[Call]:
        for call in (self.call, self.default, self.reduce, self.combine, self.compensation):
            if call is not None:
                yield call
        for branch in self.branches:
            yield branch.call


@dataclass(frozen=True)
class Workflow:
    name: str
    steps: tuple[Step, ...]
    strategy: str = "sequential"
    triggers: tuple[str, ...] = ()
    description: str = ""
    version: str = "1"
    output: Any = None
    retention: float = 24 * 3600.0

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def index(self, name: str) -> int:
        return next(i for i, s in enumerate(self.steps) if s.name == name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "strategy": self.strategy, "triggers": list(self.triggers),
                "description": self.description, "version": self.version,
                "steps": [{"name": s.name, "strategy": s.strategy, "on_error": s.on_error,
                           "timeout": s.timeout, "retries": s.retry.retries,
                           "capabilities": sorted({c.capability for c in s.calls()}),
                           **({"workflow": s.workflow} if s.workflow else {}),
                           "compensation": (f"{s.compensation.capability}."
                                            f"{s.compensation.action}"
                                            if s.compensation else None)}
                          for s in self.steps]}


WORKFLOW_FIELDS = {"name", "description", "version", "strategy", "trigger", "timeout",
                   "retries", "backoff_base", "backoff_max", "on_error", "output", "retention",
                   "steps"}
CALL_FIELDS = {"capability", "action", "params"}
BRANCH_FIELDS = CALL_FIELDS | {"name", "when"}
STEP_COMMON = {"name", "strategy", "timeout", "retries", "backoff_base", "backoff_max",
               "on_error", "compensation"}
STEP_FIELDS = {
    "sequential": CALL_FIELDS,
    "parallel": {"branches"},
    "conditional": {"branches", "default"},
    "map_reduce": CALL_FIELDS | {"over", "reduce", "max_items"},
    "recursive": CALL_FIELDS | {"combine", "max_depth", "max_items"},
    "workflow": {"workflow", "params"},
}

Report = Callable[[WorkflowIssue], None]


def parse_workflows(raw: object, report: Report) -> tuple[Workflow, ...]:
    """Validate the `[[workflows]]` array; report every problem and keep going."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        report(WorkflowIssue("-", "workflows", "write workflows as [[workflows]] tables"))
        return ()
    loaded: list[Workflow] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        parser = _WorkflowParser(f"#{index + 1}", report)
        workflow = parser.workflow(entry, seen)
        if workflow is not None:
            loaded.append(workflow)
    names = {w.name for w in loaded}
    for workflow in loaded:
        for step in workflow.steps:
            if step.workflow is not None and step.workflow not in names:
                report(WorkflowIssue(workflow.name, "workflow",
                                     _unknown_name(step.workflow, names, "workflow"),
                                     step.name))
    _check_cycles(loaded, report)
    return tuple(loaded)


def _unknown_name(name: str, known: set[str], what: str) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"no {what} named {name!r}{hint}"


def _unknown_field(key: str, allowed: set[str], what: str) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hint = (f"; did you mean {close[0]!r}?" if close
            else f"; expected one of {', '.join(sorted(allowed))}")
    return f"unknown {what}{hint}"


def _check_cycles(workflows: list[Workflow], report: Report) -> None:
    """Workflows that start each other through `workflow` steps would never end."""
    calls = {w.name: [(s.name, s.workflow) for s in w.steps if s.workflow] for w in workflows}
    for workflow in workflows:
        for step_name, target in calls[workflow.name]:
            path = _path_back(target, workflow.name, calls, [workflow.name])
            if path is not None:
                chain = " -> ".join([*path, workflow.name])
                report(WorkflowIssue(workflow.name, "workflow",
                                     f"workflows call each other in a cycle: {chain}",
                                     step_name))


def _path_back(node: str | None, goal: str, calls: dict[str, list[tuple[str, str]]],
               path: list[str]) -> list[str] | None:
    if node is None or node not in calls:
        return None
    if node == goal:
        return path
    if node in path:
        return None
    for _, target in calls[node]:
        found = _path_back(target, goal, calls, [*path, node])
        if found is not None:
            return found
    return None


class _WorkflowParser:
    def __init__(self, name: str, report: Report) -> None:
        self.name = name
        self.report = report
        self.step_name = ""
        self.all_steps: set[str] = set()

    def fail(self, field_name: str, reason: str) -> None:
        self.report(WorkflowIssue(self.name, field_name, reason, self.step_name))

    def workflow(self, entry: object, seen: set[str]) -> Workflow | None:
        if not isinstance(entry, dict):
            self.fail("-", "each workflow is a table")
            return None
        name = entry.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            self.fail("name", "required: letters, digits, '_', '-' and '.'")
        else:
            self.name = name
            if name in seen:
                self.fail("name", "duplicate workflow name")
            seen.add(name)
        for key in entry:
            if key not in WORKFLOW_FIELDS:
                self.fail(key, _unknown_field(key, WORKFLOW_FIELDS, "workflow field"))
        strategy = entry.get("strategy", "sequential")
        if strategy not in WORKFLOW_STRATEGIES:
            self.fail("strategy", f"must be one of {', '.join(WORKFLOW_STRATEGIES)} (the "
                                  "steps' own strategies are set per step); got "
                                  f"{strategy!r}")
            strategy = "sequential"
        defaults = self.step_defaults(entry, "compensate" if strategy == "saga" else "fail")
        triggers = self.triggers(entry.get("trigger"))
        for text in ("description", "version"):
            if text in entry and not isinstance(entry[text], str | int | float):
                self.fail(text, "must be a string")
        retention = self.duration("retention", entry.get("retention", "24h"), positive=True)
        raw_steps = entry.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            self.fail("steps", "required: at least one [[workflows.steps]] table")
            raw_steps = []
        self.all_steps = {s["name"] for s in raw_steps
                          if isinstance(s, dict) and isinstance(s.get("name"), str)}
        steps: list[Step] = []
        names: list[str] = []
        for index, raw in enumerate(raw_steps):
            self.step_name = f"#{index + 1}"
            step = self.step(raw, names, defaults)
            if step is not None:
                steps.append(step)
        self.step_name = ""
        output = self.params("output", entry.get("output"), names, names, set())
        return Workflow(self.name, tuple(steps), strategy, triggers,
                        str(entry.get("description", "")), str(entry.get("version", "1")),
                        output, retention or 24 * 3600.0)

    def triggers(self, value: object) -> tuple[str, ...]:
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            self.fail("trigger", "must be an event type or a list of them")
            return ()
        for item in items:
            if not EVENT_TYPE.match(item):
                self.fail("trigger", f"{item!r} is not an event type (dot-separated words)")
            elif item.startswith("workflow."):
                self.fail("trigger", f"{item!r}: workflow.* events are the orchestrator's own")
        return tuple(items)

    def duration(self, name: str, value: object, positive: bool = False) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(name, str(exc))
            return None
        if positive and seconds <= 0:
            self.fail(name, "must be longer than zero")
            return None
        return seconds

    def count(self, name: str, value: object, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(name, f"must be a whole number from {low} to {high}, got {value!r}")
            return None
        return value

    def step_defaults(self, entry: dict[str, Any], on_error: str) -> dict[str, Any]:
        """Timeout, retries, backoff and error policy: a workflow's values are its steps'
        defaults."""
        out: dict[str, Any] = {"timeout": 60.0, "retries": 0, "backoff_base": 1.0,
                               "backoff_max": 60.0, "on_error": on_error}
        return self.policy(entry, out)

    def policy(self, entry: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key in ("timeout", "backoff_base", "backoff_max"):
            if key in entry:
                seconds = self.duration(key, entry[key], positive=key != "backoff_base")
                if seconds is not None:
                    out[key] = seconds
        if "retries" in entry:
            retries = self.count("retries", entry["retries"], 0, MAX_RETRIES)
            if retries is not None:
                out["retries"] = retries
        if "on_error" in entry:
            if entry["on_error"] not in ON_ERROR:
                self.fail("on_error", f"must be one of {', '.join(ON_ERROR)}; got "
                                      f"{entry['on_error']!r}")
            else:
                out["on_error"] = entry["on_error"]
        if out["backoff_max"] < out["backoff_base"]:
            self.fail("backoff_max", "must not be shorter than backoff_base")
        return out

    def step(self, raw: object, names: list[str], defaults: dict[str, Any]) -> Step | None:
        if not isinstance(raw, dict):
            self.fail("-", "each step is a table")
            return None
        name = raw.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            self.fail("name", "required: letters, digits, '_', '-' and '.'")
            name = self.step_name
        else:
            self.step_name = name
            if name in names:
                self.fail("name", "duplicate step name in this workflow")
        earlier = list(names)
        names.append(name)
        strategy = raw.get("strategy", "sequential")
        if strategy not in STRATEGIES:
            self.fail("strategy", f"must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
            return None
        allowed = STEP_COMMON | STEP_FIELDS[strategy]
        for key in raw:
            if key not in allowed:
                self.fail(key, _unknown_field(key, allowed, f"field of a {strategy} step"))
        policy = self.policy(raw, defaults)
        values: dict[str, Any] = {
            "name": name, "strategy": strategy, "timeout": policy["timeout"],
            "retry": Retry(policy["retries"], policy["backoff_base"], policy["backoff_max"]),
            "on_error": policy["on_error"],
        }
        extra = {"item", "index"} if strategy == "map_reduce" else set()
        if strategy == "recursive":
            extra = {"depth"}
        if strategy in ("sequential", "map_reduce", "recursive"):
            values["call"] = self.call("", raw, earlier, extra)
        if strategy in ("parallel", "conditional"):
            values["branches"] = self.branches(raw.get("branches"), earlier,
                                               conditional=strategy == "conditional")
        if strategy == "conditional" and "default" in raw:
            values["default"] = self.call("default.", raw["default"], earlier, set())
        if strategy == "map_reduce":
            values["over"] = self.over(raw.get("over"), earlier)
            if "reduce" in raw:
                values["reduce"] = self.call("reduce.", raw["reduce"], earlier, set())
        if strategy in ("map_reduce", "recursive"):
            values["max_items"] = self.count("max_items", raw.get("max_items", 100), 1,
                                             MAX_ITEMS) or 100
        if strategy == "recursive":
            if "combine" not in raw:
                self.fail("combine", "required: the call that combines the subtasks' results")
            else:
                values["combine"] = self.call("combine.", raw["combine"], earlier, {"depth"})
            values["max_depth"] = self.count("max_depth", raw.get("max_depth", 3), 1,
                                             MAX_DEPTH) or 3
        if strategy == "workflow":
            target = raw.get("workflow")
            if not isinstance(target, str) or not NAME.match(target):
                self.fail("workflow", "required: the name of the workflow this step runs")
            else:
                values["workflow"] = target
            values["params"] = self.params("params", raw.get("params"), earlier, earlier,
                                           set())
        if "compensation" in raw:
            values["compensation"] = self.call("compensation.", raw["compensation"],
                                               [*earlier, name], {"result"})
        return Step(**values)

    def call(self, prefix: str, raw: object, earlier: list[str], extra: set[str]
             ) -> Call | None:
        if not isinstance(raw, dict):
            self.fail(prefix.rstrip(".") or "-", "must be a table with capability, action "
                                                 "and optional params")
            return None
        if prefix:  # a nested table: its own fields are checked here
            for key in raw:
                if key not in CALL_FIELDS:
                    self.fail(prefix + key, _unknown_field(key, CALL_FIELDS, "call field"))
        return self.call_fields(prefix, raw, earlier, extra)

    def call_fields(self, prefix: str, raw: dict[str, Any], earlier: list[str], extra: set[str]
                    ) -> Call | None:
        ok = True
        for name in ("capability", "action"):
            value = raw.get(name)
            if not isinstance(value, str) or not NAME.match(value):
                what = "the compensation's" if prefix == "compensation." else "the"
                self.fail(prefix + name, f"required: {what} {name} (letters, digits, '_', "
                                         "'-' and '.')")
                ok = False
        params = self.params(prefix + "params", raw.get("params"), earlier,
                             [*earlier, self.step_name] if "result" in extra else earlier, extra)
        return Call(raw["capability"], raw["action"], params) if ok else None

    def params(self, name: str, raw: object, earlier: list[str], allowed_steps: list[str],
               extra: set[str]) -> Any:
        if raw is None:
            return None
        try:
            template = compile_params(raw)
        except ParamError as exc:
            self.fail(f"{name}.{exc.where}" if exc.where else name, str(exc))
            return None
        for where, ref in refs_in(template):
            self.check_ref(f"{name}.{where}" if where else name, ref, earlier,
                           allowed_steps, extra)
        return template

    def check_ref(self, name: str, ref: Ref, earlier: list[str], allowed_steps: list[str],
                  extra: set[str]) -> None:
        if ref.root in ("item", "index", "result", "depth") and ref.root not in extra:
            where = {"item": "a map_reduce step's call", "index": "a map_reduce step's call",
                     "result": "a compensation", "depth": "a recursive step"}[ref.root]
            self.fail(name, f"{ref.text}: ${ref.root} is only defined in {where}")
        step = ref.step
        if step is None or step in allowed_steps:
            return
        if step == self.step_name:
            self.fail(name, f"{ref.text}: a step cannot use its own result (in a "
                            "compensation, write $result)")
        elif step in self.all_steps:
            self.fail(name, f"{ref.text}: step {step!r} runs after this one")
        else:
            self.fail(name, f"{ref.text}: " + _unknown_name(step, set(earlier), "earlier step"))

    def branches(self, raw: object, earlier: list[str], conditional: bool
                 ) -> tuple[Branch, ...]:
        minimum = 1 if conditional else 2
        if not isinstance(raw, list) or len(raw) < minimum:
            self.fail("branches", f"required: a list of at least {minimum} tables "
                                  "(capability, action, params"
                                  + (", when)" if conditional else ")"))
            return ()
        out: list[Branch] = []
        for index, entry in enumerate(raw):
            prefix = f"branches[{index}]."
            if not isinstance(entry, dict):
                self.fail(prefix[:-1], "must be a table")
                continue
            for key in entry:
                if key not in BRANCH_FIELDS:
                    self.fail(prefix + key, _unknown_field(key, BRANCH_FIELDS, "branch field"))
            label = entry.get("name", str(index))
            if not isinstance(label, str) or not NAME.match(label):
                self.fail(prefix + "name", "letters, digits, '_', '-' and '.'")
                label = str(index)
            when = None
            if conditional:
                if "when" not in entry:
                    self.fail(prefix + "when", "required: a CEL condition over input, "
                                               "results and previous (use default for the "
                                               "fallback)")
                else:
                    try:
                        when = compile_condition(entry["when"], CONDITION_VARIABLES)
                    except ConditionError as exc:
                        self.fail(prefix + "when", str(exc))
            elif "when" in entry:
                self.fail(prefix + "when", "only conditional steps take conditions")
            call = self.call_fields(prefix, entry, earlier, set())
            if call is not None:
                out.append(Branch(label, call, when))
        return tuple(out)

    def over(self, raw: object, earlier: list[str]) -> Ref | None:
        if not isinstance(raw, str):
            self.fail("over", "required: a reference to a list, such as \"$input.documents\"")
            return None
        try:
            ref = parse_ref(raw)
        except ParamError as exc:
            self.fail("over", str(exc))
            return None
        self.check_ref("over", ref, earlier, earlier, set())
        return ref


def workflow_capabilities(workflows: tuple[Workflow, ...]) -> dict[str, dict[str, None]]:
    """capability -> the actions workflows send it (compensations included), in order."""
    out: dict[str, dict[str, None]] = {}
    for workflow in workflows:
        for step in workflow.steps:
            for call in step.calls():
                out.setdefault(call.capability, {})[call.action] = None
    return out
