"""Loading `[[workflows]]`: every error names the workflow, the step and the field."""

from __future__ import annotations

import pytest

from choreo.config import ConfigError, load_choreography, parse_choreography
from choreo.settings import BUNDLED_CONFIG

WORKFLOWS = BUNDLED_CONFIG.parent / "workflows.toml"

GOOD = """
[[workflows]]
name = "wf"
[[workflows.steps]]
name = "a"
capability = "calc"
action = "inc"
params = { x = "$input.x" }
"""


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_choreography(text)
    return [str(issue) for issue in info.value.issues]


def one(text: str) -> str:
    found = issues(text)
    assert len(found) == 1, found
    return found[0]


def test_the_bundled_workflows_load() -> None:
    choreography = load_choreography(WORKFLOWS)
    names = [w.name for w in choreography.workflows]
    assert names == ["loan_approval", "content_creation", "medical_diagnosis"]
    loan = choreography.workflows[0]
    assert loan.strategy == "saga" and all(s.compensation for s in loan.steps)
    assert all(s.on_error == "compensate" for s in loan.steps)
    assert "credit_bureau" in choreography.capabilities
    assert choreography.sends["credit_bureau"] == ("check_credit", "release_credit_check")


def test_a_good_workflow_loads_and_its_capability_gets_a_topic() -> None:
    choreography = parse_choreography(GOOD)
    assert choreography.capabilities == ("calc",)
    step = choreography.workflows[0].steps[0]
    assert (step.strategy, step.on_error, step.retry.retries, step.timeout) == (
        "sequential", "fail", 0, 60.0)


@pytest.mark.parametrize(("change", "expected"), [
    ('name = "a"', "workflow 'wf', step 'a', field 'name': duplicate step name"),
    ('capabilty = "calc"', "workflow 'wf', step 'b', field 'capabilty': unknown field of a "
                           "sequential step; did you mean 'capability'?"),
    ('params = { y = "$results.zz" }', "workflow 'wf', step 'b', field 'params.y': "
                                       "$results.zz: no earlier step named 'zz'"),
    ('params = { y = "$results.b" }', "workflow 'wf', step 'b', field 'params.y': $results.b: "
                                      "a step cannot use its own result"),
    ('params = { y = "$item" }', "workflow 'wf', step 'b', field 'params.y': $item: $item is "
                                 "only defined in a map_reduce step's call"),
    ('params = { y = "$nope" }', "workflow 'wf', step 'b', field 'params.y': '$nope': unknown "
                                 "reference"),
    ('timeout = "soon"', "workflow 'wf', step 'b', field 'timeout': 'soon' is not a duration"),
    ('retries = -1', "workflow 'wf', step 'b', field 'retries': must be a whole number from 0 "
                     "to 100"),
    ('on_error = "ignore"', "workflow 'wf', step 'b', field 'on_error': must be one of fail, "
                            "skip, compensate"),
    ('compensation = { action = "undo" }', "workflow 'wf', step 'b', field "
                                           "'compensation.capability': required: the "
                                           "compensation's capability"),
    ('compensation = { capability = "calc", action = "undo", params = { r = "$item" } }',
     "workflow 'wf', step 'b', field 'compensation.params.r': $item: $item is only defined"),
    ('strategy = "fan_out"', "workflow 'wf', step 'b', field 'strategy': must be one of"),
])
def test_step_errors_name_workflow_step_and_field(change: str, expected: str) -> None:
    text = GOOD + f"""
[[workflows.steps]]
name = "b"
capability = "calc"
action = "inc"
{change}
"""
    if change.startswith("name"):
        text = text.replace('name = "b"\n', "", 1)
    if change.startswith("capabilty"):
        text = text.replace('capability = "calc"\naction = "inc"\ncapabilty', 'action = "inc"'
                            '\ncapabilty', 1)
    found = issues(text)
    assert any(issue.startswith(expected) for issue in found), found


def test_a_reference_to_a_later_step_is_refused() -> None:
    text = GOOD.replace('x = "$input.x"', 'x = "$results.b"') + """
[[workflows.steps]]
name = "b"
capability = "calc"
action = "inc"
"""
    assert one(text) == ("workflow 'wf', step 'a', field 'params.x': $results.b: step 'b' "
                         "runs after this one")


def test_workflow_level_errors() -> None:
    found = issues("""
[[workflows]]
name = "bad name!"
strategy = "chain"
trigger = "workflow.start"
steps = []
""")
    assert "workflow '#1', field 'name': required: letters, digits, '_', '-' and '.'" in found
    assert any(f.startswith("workflow '#1', field 'strategy': must be one of sequential, saga")
               for f in found)
    assert any("field 'trigger': 'workflow.start': workflow.* events are the orchestrator's"
               in f for f in found)
    assert any("field 'steps': required: at least one" in f for f in found)


def test_duplicate_workflows_and_unknown_fields() -> None:
    found = issues(GOOD + GOOD.replace("[[workflows]]\n", "[[workflows]]\ntimout = '1s'\n"))
    assert "workflow 'wf', field 'name': duplicate workflow name" in found
    assert any(f.startswith("workflow 'wf', field 'timout': unknown workflow field; did you "
                            "mean 'timeout'?") for f in found)


def test_parallel_and_conditional_branches() -> None:
    found = issues("""
[[workflows]]
name = "wf"
[[workflows.steps]]
name = "p"
strategy = "parallel"
branches = [{ capability = "calc", action = "inc" }]
[[workflows.steps]]
name = "c"
strategy = "conditional"
branches = [{ capability = "calc", action = "inc", when = "payload.x > 1" },
            { capability = "calc" , action = "inc" }]
default = { capability = "calc" }
""")
    assert any(f.startswith("workflow 'wf', step 'p', field 'branches': required: a list of "
                            "at least 2") for f in found)
    assert any(f.startswith("workflow 'wf', step 'c', field 'branches[0].when': unknown "
                            "variable 'payload'; conditions see input, results, previous")
               for f in found)
    assert any(f.startswith("workflow 'wf', step 'c', field 'branches[1].when': required")
               for f in found)
    assert any(f.startswith("workflow 'wf', step 'c', field 'default.action': required")
               for f in found)


def test_map_reduce_and_recursive_fields() -> None:
    found = issues("""
[[workflows]]
name = "wf"
[[workflows.steps]]
name = "m"
strategy = "map_reduce"
capability = "calc"
action = "sq"
over = "items"
reduce = { capability = "calc", action = "sum", params = { i = "$item" } }
[[workflows.steps]]
name = "r"
strategy = "recursive"
capability = "calc"
action = "solve"
max_depth = 50
""")
    assert any(f.startswith("workflow 'wf', step 'm', field 'over': 'items' is not a "
                            "reference") for f in found)
    assert any(f.startswith("workflow 'wf', step 'm', field 'reduce.params.i': $item")
               for f in found)
    assert any(f.startswith("workflow 'wf', step 'r', field 'combine': required") for f in found)
    assert any(f.startswith("workflow 'wf', step 'r', field 'max_depth': must be a whole number "
                            "from 1 to 10") for f in found)


def test_workflow_steps_refuse_unknown_workflows_and_cycles() -> None:
    found = issues("""
[[workflows]]
name = "a"
[[workflows.steps]]
name = "call_b"
strategy = "workflow"
workflow = "b"
[[workflows]]
name = "b"
[[workflows.steps]]
name = "call_a"
strategy = "workflow"
workflow = "a"
[[workflows]]
name = "c"
[[workflows.steps]]
name = "call_x"
strategy = "workflow"
workflow = "bb"
""")
    assert "workflow 'c', step 'call_x', field 'workflow': no workflow named 'bb'; did you " \
           "mean 'b'?" in found
    assert ("workflow 'a', step 'call_b', field 'workflow': workflows call each other in a "
            "cycle: a -> b -> a") in found
    assert ("workflow 'b', step 'call_a', field 'workflow': workflows call each other in a "
            "cycle: b -> a -> b") in found


def test_workflows_mix_with_patterns_in_one_file() -> None:
    choreography = parse_choreography("""
[[patterns]]
id = "p"
kind = "event"
on = "order_received"
action = "check"
capability = "inventory"
""" + GOOD + """
[capabilities.calc]
max_retries = 0
""")
    assert choreography.capabilities == ("inventory", "calc")
    assert choreography.workers.for_capability("calc").max_retries == 0
