"""kill -9 of the orchestrator at each step of the loan saga: it resumes, never half-done.

The orchestrator runs alone (CHOREO_WORKERS=none, RocksDB state) and the capability workers
in a process of their own whose handlers take a second each and log every run. For each
step (and once during the compensations) an instance is started and the orchestrator is
killed with SIGKILL while that step's handler runs, then restarted. Each instance must end
completed or compensated, with every step applied at most once and, when compensated,
every applied step undone exactly once, in reverse order.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest

from choreo.settings import BUNDLED_CONFIG
from tests.faults.flow import FAST_FAILOVER
from tests.integration.conftest import Worker, wait_until
from tests.integration.test_workflows import APPLICATION, effects, ended, ledger_lines, start

CONFIG = (BUNDLED_CONFIG.parent / "workflows.toml").read_text()
HANDLERS = "tests.integration.workflow_handlers:HANDLERS"
STEPS = ["credit_check", "risk_assessment", "approval"]
# (step or compensation whose handler is running at the kill, instance input)
KILLS = [
    ("check_credit", {}),
    ("assess_risk", {"fail_at": "approval"}),
    ("approve_loan", {}),
    ("cancel_assessment", {"fail_at": "approval"}),
]


def kill9(worker: Worker) -> None:
    assert worker.process is not None
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()


def running(ledger: Path, instance: str, action: str) -> bool:
    return any(what == "start" and name == action
               for what, _, _, name, _ in ledger_lines(ledger, instance))


@pytest.mark.timeout(600)
def test_orchestrator_killed_at_each_step_of_a_saga_resumes(make_worker, tmp_path):  # noqa: ANN001
    prefix = f"wfkill-{uuid.uuid4().hex[:8]}"
    ledger = tmp_path / "ledger.log"
    workers = make_worker(CONFIG, prefix=prefix, env={
        "CHOREO_ENGINE": "off", "CHOREO_HANDLERS": HANDLERS, "CHOREO_WF_LEDGER": str(ledger),
        "CHOREO_WF_DELAY": "1.0", **FAST_FAILOVER})
    orchestrator = make_worker(CONFIG, prefix=prefix,
                               env={"CHOREO_WORKERS": "none", **FAST_FAILOVER})
    instances = []
    restarts = []
    for action, extra in KILLS:
        instance = start(orchestrator, "loan_approval", {**APPLICATION, **extra})
        instances.append((instance, extra))
        wait_until(lambda i=instance, a=action: running(ledger, i, a), timeout=120, every=0.1)
        kill9(orchestrator)
        began = time.monotonic()
        orchestrator.start(timeout=180)
        restarts.append(round(time.monotonic() - began, 1))
    views = ended(orchestrator, *(i for i, _ in instances), timeout=180)
    print(f"\nkills at {[a for a, _ in KILLS]}, restarts took {restarts} s")
    for instance, extra in instances:
        status = views[instance]["status"]
        applied = effects(ledger, instance)
        forward = [s for s, _, comp in applied if not comp]
        undone = [s for s, _, comp in applied if comp]
        starts = [a for what, a, *_ in ledger_lines(ledger, instance) if what == "start"]
        assert len(starts) == len(set(starts)), f"{instance}: a handler ran twice for one id"
        if extra.get("fail_at"):
            assert status == "compensated", (instance, status)
            assert forward == STEPS[:2]
            assert undone == list(reversed(forward)), (instance, applied)
        else:
            assert status == "completed", (instance, status)
            assert forward == STEPS and undone == []
    workers.stop()
