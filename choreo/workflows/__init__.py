"""Workflows: orchestration over the same capability topics and workers as the patterns.

`definitions` loads and validates `[[workflows]]`, `params` resolves `$input`, `$results...`
references, and `machine` runs an instance as a pure state machine; the Faust agent is in
streams/orchestrate.py and the instance table in tables/workflows.py.
"""

from choreo.workflows.definitions import Workflow, WorkflowIssue, parse_workflows
from choreo.workflows.machine import Command, Orchestration, Outcome

__all__ = ["Command", "Orchestration", "Outcome", "Workflow", "WorkflowIssue",
           "parse_workflows"]
