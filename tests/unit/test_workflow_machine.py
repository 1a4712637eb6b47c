"""The workflow state machine, per strategy: commands out, events back in, no Kafka."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.bundled import HANDLERS as BUNDLED
from agents.worker import ActionRefused, Result
from choreo.config import load_choreography, parse_choreography
from choreo.envelope import Event
from choreo.settings import BUNDLED_CONFIG
from choreo.workflows.machine import END_TYPES, Orchestration, make_id, start_request
from tests.unit.workflow_sim import Simulation

LEDGER: list[tuple[str, str]] = []


def _x(action: Event) -> int:
    return int((action.payload["data"] or {}).get("x", 0))


async def inc(action: Event) -> list[Result]:
    return [Result("calc.done", {"x": _x(action) + 1})]


async def double(action: Event) -> list[Result]:
    return [Result("calc.done", {"x": _x(action) * 2})]


async def total(action: Event) -> list[Result]:
    values = action.payload["data"]["values"]
    return [Result("calc.done", {"x": sum(v["x"] for v in values)})]


async def refuse(action: Event) -> list[Result]:
    raise ActionRefused("no")


async def solve(action: Event) -> list[Result]:
    numbers = action.payload["data"]["numbers"]
    if action.payload["workflow"]["may_decompose"] and len(numbers) > 1:
        half = len(numbers) // 2
        return [Result("calc.split", {"subtasks": [{"numbers": numbers[:half]},
                                                   {"numbers": numbers[half:]}]})]
    return [Result("calc.done", {"x": sum(numbers)})]


async def do(action: Event) -> list[Result]:
    step = action.payload["workflow"]["step"]
    if action.payload["data"].get("fail_at") == step:
        raise ActionRefused(f"fail at {step}")
    LEDGER.append(("do", step))
    return [Result("ledger.done", {"ref": f"ref-{step}"})]


async def undo(action: Event) -> list[Result]:
    LEDGER.append(("undo", action.payload["data"]["ref"]))
    return [Result("ledger.undone", {"ref": action.payload["data"]["ref"]})]


HANDLERS = {"calc": {"inc": inc, "double": double, "total": total, "refuse": refuse,
                     "solve": solve, "slow": inc},
            "ledger": {"do": do, "undo": undo}}

CONFIG = """
[[workflows]]
name = "chain"
output = { result = "$previous.x", first = "$results.one.x" }
[[workflows.steps]]
name = "one"
capability = "calc"
action = "inc"
params = { x = "$input.x" }
[[workflows.steps]]
name = "two"
capability = "calc"
action = "double"
[[workflows.steps]]
name = "three"
capability = "calc"
action = "inc"

[[workflows]]
name = "fan"
[[workflows.steps]]
name = "checks"
strategy = "parallel"
branches = [{ capability = "calc", action = "inc", params = { x = "$input.x" } },
            { capability = "calc", action = "double", params = { x = "$input.x" } },
            { capability = "calc", action = "double", params = { x = 100 } }]
[[workflows.steps]]
name = "pick"
capability = "calc"
action = "inc"
params = { x = "$results.checks[1].x" }

[[workflows]]
name = "route"
[[workflows.steps]]
name = "decide"
strategy = "conditional"
branches = [{ name = "big", when = "input.x > 100", capability = "calc", action = "double" },
            { name = "odd", when = "input.x % 2 == 1", capability = "calc", action = "inc" }]
default = { capability = "calc", action = "inc", params = { x = 1000 } }

[[workflows]]
name = "route_no_default"
[[workflows.steps]]
name = "decide"
strategy = "conditional"
branches = [{ when = "input.x > 100", capability = "calc", action = "double" }]
[[workflows.steps]]
name = "after"
capability = "calc"
action = "inc"
params = { x = 5 }

[[workflows]]
name = "mapred"
[[workflows.steps]]
name = "squares"
strategy = "map_reduce"
over = "$input.items"
capability = "calc"
action = "double"
params = { x = "$item", position = "$index" }
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
name = "outer"
[[workflows.steps]]
name = "inner"
strategy = "workflow"
workflow = "chain"
params = { x = "$input.n" }
[[workflows.steps]]
name = "last"
capability = "calc"
action = "inc"
params = { x = "$previous.result" }

[[workflows]]
name = "saga"
strategy = "saga"
[[workflows.steps]]
name = "s1"
capability = "ledger"
action = "do"
compensation = { capability = "ledger", action = "undo", params = { ref = "$result.ref" } }
[[workflows.steps]]
name = "s2"
capability = "ledger"
action = "do"
params = { fail_at = "$input.fail_at" }
compensation = { capability = "ledger", action = "undo", params = { ref = "$result.ref" } }
[[workflows.steps]]
name = "s3"
capability = "ledger"
action = "do"
params = { fail_at = "$input.fail_at" }
compensation = { capability = "ledger", action = "undo", params = { ref = "$result.ref" } }
[[workflows.steps]]
name = "s4"
capability = "ledger"
action = "do"
params = { fail_at = "$input.fail_at" }

[[workflows]]
name = "retrying"
[[workflows.steps]]
name = "flaky"
capability = "calc"
action = "slow"
timeout = "10s"
retries = 2
backoff_base = "1s"
params = { x = 1 }

[[workflows]]
name = "skipping"
[[workflows.steps]]
name = "bad"
capability = "calc"
action = "refuse"
on_error = "skip"
[[workflows.steps]]
name = "good"
capability = "calc"
action = "inc"
params = { x = 1 }
"""


@pytest.fixture
def sim() -> Iterator[Simulation]:
    LEDGER.clear()
    simulation = Simulation(parse_choreography(CONFIG).workflows, HANDLERS)
    yield simulation
    simulation.close()


def test_sequential_each_output_feeds_the_next(sim: Simulation) -> None:
    sim.start("chain", "c1", {"x": 4})
    sim.run()
    state = sim.states["c1"]
    assert state["status"] == "completed"
    assert state["results"] == {"one": {"x": 5}, "two": {"x": 10}, "three": {"x": 11}}
    assert state["output"] == {"result": 11, "first": 5}
    assert [e.event_type for e in sim.ends()] == ["workflow.completed"]
    assert sim.ends()[0].payload["output"] == {"result": 11, "first": 5}


def test_parallel_fans_out_and_in_in_declaration_order(sim: Simulation) -> None:
    sim.start("fan", "f1", {"x": 3})
    sim.run()
    state = sim.states["f1"]
    assert state["results"]["checks"] == [{"x": 4}, {"x": 6}, {"x": 200}]
    assert state["results"]["pick"] == {"x": 7}  # $results.checks[1].x + 1
    first_three = sim.actions_sent("f1")[:3]
    assert [a[0] for a in first_three] == ["inc", "double", "double"]


@pytest.mark.parametrize(("x", "branch", "result"), [(101, "big", 202), (7, "odd", 8),
                                                      (8, "default", 1001)])
def test_conditional_takes_the_first_matching_branch_or_the_default(
        sim: Simulation, x: int, branch: str, result: int) -> None:
    sim.start("route", "r1", {"x": x})
    sim.run()
    state = sim.states["r1"]
    assert state["results"]["decide"] == {"x": result}
    assert [h["branch"] for h in state["history"] if h["what"] == "branch_chosen"] == [branch]


def test_conditional_without_a_match_or_default_gives_null(sim: Simulation) -> None:
    sim.start("route_no_default", "r2", {"x": 1})
    sim.run()
    assert sim.states["r2"]["results"] == {"decide": None, "after": {"x": 6}}


@pytest.mark.parametrize(("items", "expected"), [([1, 2, 3], 12), ([], 0)])
def test_map_reduce_over_a_list_in_the_input(sim: Simulation, items: list, expected: int
                                             ) -> None:
    sim.start("mapred", "m1", {"items": items})
    sim.run()
    assert sim.states["m1"]["results"]["squares"] == {"x": expected}
    mapped = [c.event.payload["data"] for c in sim.sent
              if c.event.event_type == "action.requested"
              and c.event.payload["action"] == "double"]
    assert mapped == [{"x": v, "position": i} for i, v in enumerate(items)]


def test_map_reduce_refuses_what_is_not_a_list(sim: Simulation) -> None:
    sim.start("mapred", "m2", {"items": "nope"})
    sim.run()
    state = sim.states["m2"]
    assert state["status"] == "failed"
    assert state["error"] == {"step": "squares", "reason": "over: $input.items is not a list"}


def test_recursive_decomposition_solves_subtasks_with_the_same_workflow(sim: Simulation
                                                                        ) -> None:
    numbers = list(range(1, 11))
    sim.start("recurse", "t1", {"numbers": numbers})
    sim.run()
    state = sim.states["t1"]
    assert state["status"] == "completed"
    assert state["results"]["sum"] == {"x": 55}
    children = sorted(i for i in sim.states if i.startswith("t1:"))
    # depth 1: 2 children, depth 2: 4 grandchildren, who may not decompose further
    assert len(children) == 6
    assert {sim.states[c]["depth"] for c in children} == {1, 2}
    assert all(sim.states[c]["status"] == "completed" for c in children)


def test_a_workflow_step_runs_another_workflow_as_a_child(sim: Simulation) -> None:
    sim.start("outer", "o1", {"n": 1})
    sim.run()
    state = sim.states["o1"]
    assert state["results"]["inner"] == {"result": 5, "first": 2}
    assert state["results"]["last"] == {"x": 6}
    assert sim.states["o1:inner:0"]["parent"] == {"instance_id": "o1", "step": "inner",
                                                   "key": "0"}


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_a_saga_failing_at_step_k_compensates_the_completed_steps_in_reverse(
        sim: Simulation, k: int) -> None:
    sim.start("saga", f"s{k}", {"fail_at": f"s{k}"})
    sim.run()
    state = sim.states[f"s{k}"]
    assert state["status"] == "compensated"
    done = [f"s{i}" for i in range(1, k)]
    undoable = [s for s in done if s != "s4"]
    assert LEDGER == [("do", s) for s in done] + [("undo", f"ref-{s}")
                                                   for s in reversed(undoable)]
    assert state["compensation"]["done"] == list(reversed(undoable))
    assert [e.event_type for e in sim.ends()] == ["workflow.compensated"]


def test_a_saga_without_failure_completes_and_compensates_nothing(sim: Simulation) -> None:
    sim.start("saga", "ok", {})
    sim.run()
    assert sim.status("ok") == "completed"
    assert LEDGER == [("do", s) for s in ("s1", "s2", "s3", "s4")]


def test_retries_back_off_exponentially_with_new_action_ids(sim: Simulation) -> None:
    sim.hold.add("slow")
    sim.start("retrying", "x1", {})
    sim.run()
    first = sim.states["x1"]["tasks"]["0"]["action_id"]
    sim.advance(10)  # attempt 1 times out; retry after 1 s
    assert sim.states["x1"]["tasks"]["0"]["status"] == "retry"
    sim.advance(1)
    sim.advance(10)  # attempt 2 times out; retry after 2 s
    sim.advance(1)
    assert sim.states["x1"]["tasks"]["0"]["status"] == "retry"
    sim.hold.clear()
    sim.advance(1)
    state = sim.states["x1"]
    assert state["status"] == "completed"
    assert sim.actions_sent("x1") == [("slow", "flaky", 1), ("slow", "flaky", 2),
                                      ("slow", "flaky", 3)]
    assert first == make_id("x1", "step", "flaky", "0", 1)
    cancels = [c.event.payload["action_id"] for c in sim.sent
               if c.event.event_type == "action.cancel"]
    assert cancels == [make_id("x1", "step", "flaky", "0", n) for n in (1, 2)]
    delays = [h["delay"] for h in state["history"] if h["what"] == "retry_scheduled"]
    assert delays == [1.0, 2.0]
    assert state["timings"]["flaky"]["attempts"] == 3


def test_retries_exhausted_fail_the_workflow(sim: Simulation) -> None:
    sim.hold.add("slow")
    sim.start("retrying", "x2", {})
    sim.run()
    for _ in range(3):
        sim.advance(10)
        sim.advance(4)
    state = sim.states["x2"]
    assert state["status"] == "failed"
    assert state["error"] == {"step": "flaky", "reason": "timed out after 10s"}


def test_a_refused_action_is_not_retried_and_skip_goes_on(sim: Simulation) -> None:
    sim.start("skipping", "k1", {})
    sim.run()
    state = sim.states["k1"]
    assert state["status"] == "completed"
    assert state["results"] == {"bad": None, "good": {"x": 2}}
    assert state["timings"]["bad"]["status"] == "skipped"
    assert sim.actions_sent("k1") == [("refuse", "bad", 1), ("inc", "good", 1)]


def test_cancel_sends_cancels_for_work_in_flight(sim: Simulation) -> None:
    sim.hold.add("slow")
    sim.start("retrying", "c1", {})
    sim.run()
    sim.cancel("c1", reason="user")
    sim.run()
    state = sim.states["c1"]
    assert state["status"] == "cancelled"
    cancel = [c for c in sim.sent if c.event.event_type == "action.cancel"]
    assert [(c.capability, c.event.payload["action_id"]) for c in cancel] == [
        ("calc", make_id("c1", "step", "flaky", "0", 1))]
    assert sim.ends()[0].event_type == "workflow.cancelled"


def test_cancelling_a_saga_compensates_what_it_did(sim: Simulation) -> None:
    sim.hold_steps.add("s2")
    sim.start("saga", "cs", {})
    sim.run()
    in_flight = sim.states["cs"]["tasks"]["0"]["action_id"]
    sim.cancel("cs", reason="customer withdrew")
    sim.run()
    state = sim.states["cs"]
    assert state["status"] == "cancelled"
    assert LEDGER == [("do", "s1"), ("undo", "ref-s1")]
    assert [c.event.payload["action_id"] for c in sim.sent
            if c.event.event_type == "action.cancel"] == [in_flight]
    assert sim.ends()[0].payload["compensated_steps"] == ["s1"]


def test_cancel_without_compensation_and_a_second_cancel_is_ignored(sim: Simulation) -> None:
    sim.hold_steps.add("s2")
    sim.start("saga", "cn", {})
    sim.run()
    sim.cancel("cn", compensate=False)
    sim.cancel("cn")
    sim.run()
    assert sim.status("cn") == "cancelled"
    assert LEDGER == [("do", "s1")]
    assert len(sim.ends()) == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=40, max_size=40), st.integers(1, 4))
def test_duplicated_events_change_nothing(dups: list[bool], k: int) -> None:
    """Each event read once or twice: the same end, the same actions, the same ledger."""
    results = []
    for duplicate in (False, True):
        LEDGER.clear()
        sim = Simulation(parse_choreography(CONFIG).workflows, HANDLERS)
        sim.start("saga", "d1", {"fail_at": f"s{k}"})
        i = 0
        while sim.events or sim.actions:
            if sim.events:
                event = sim.events.popleft()
                sim.deliver(event)
                if duplicate and dups[i % len(dups)]:
                    sim.deliver(event)
                i += 1
            else:
                sim.work(sim.actions.popleft())
        results.append((sim.status("d1"), list(LEDGER),
                        [c.event.event_id for c in sim.sent]))
        sim.close()
    assert results[0] == results[1]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60), st.integers(1, 4))
def test_a_crash_before_the_state_is_stored_repeats_the_same_commands(crash_at: int, k: int
                                                                      ) -> None:
    """Replaying an event onto the state stored before it gives the same command ids."""
    LEDGER.clear()
    sim = Simulation(parse_choreography(CONFIG).workflows, HANDLERS)
    sim.start("saga", "r1", {"fail_at": f"s{k}"})
    n = 0
    while sim.events or sim.actions:
        if sim.events:
            event = sim.events.popleft()
            before = dict(sim.states)
            outcome = sim.deliver(event)
            if n == crash_at and outcome is not None:
                sim.states = before  # the write never happened
                if "r1" in before:
                    again = sim.machine.on_event(before["r1"], event, sim.now + 5)
                else:
                    again = sim.machine.start(start_request(event, sim.machine.workflows),
                                              sim.now + 5)
                assert [c.event.event_id for c in again.commands] == \
                    [c.event.event_id for c in outcome.commands]
                sim.apply("r1", again)
            n += 1
        else:
            sim.work(sim.actions.popleft())
    assert sim.status("r1") == "compensated"
    undone = [ref for what, ref in LEDGER if what == "undo"]
    assert len(undone) == len(set(undone)) == min(k - 1, 3)
    sim.close()


def test_the_bundled_workflows_run_to_completion() -> None:
    choreography = load_choreography(BUNDLED_CONFIG.parent / "workflows.toml")
    sim = Simulation(choreography.workflows, BUNDLED)
    application = {"applicant_id": "a-1", "amount": 20000, "annual_income": 60000,
                   "credit_score": 720}
    sim.start("loan_approval", "l1", application)
    sim.start("content_creation", "c1", {"topic": "Event sourcing", "style": "blog",
                                         "length": 300, "keywords": ["event"]})
    sim.start("medical_diagnosis", "m1", {"xray": {"marks": ["fracture"]},
                                          "mri": {"marks": ["fracture", "edema"]}})
    sim.run()
    assert {i: sim.status(i) for i in ("l1", "c1", "m1")} == {
        "l1": "completed", "c1": "completed", "m1": "completed"}
    assert sim.states["l1"]["output"]["approved"] is True
    assert sim.states["c1"]["output"]["ready"] is True
    assert sim.states["m1"]["output"]["condition"] == "fracture"
    sim.close()


def test_deadline_is_the_earliest_timeout_or_retry_then_forgetting() -> None:
    machine = Orchestration(parse_choreography(CONFIG).workflows)
    assert Orchestration.deadline(None) is None
    sim = Simulation(machine.workflows.values(), HANDLERS)
    sim.start("chain", "z", {"x": 1})
    sim.run()
    state = sim.states["z"]
    assert Orchestration.deadline(state) == state["retain_until"] == sim.now + 24 * 3600
    assert machine.on_deadline(state, sim.now + 24 * 3600).state is None
    assert set(END_TYPES) >= {"completed", "failed", "compensated", "cancelled"}
    sim.close()
