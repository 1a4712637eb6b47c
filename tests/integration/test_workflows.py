"""Workflows on a real broker: each strategy, each bundled workflow, sagas, cancel, views."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from choreo.envelope import new_event
from choreo.kafka_io import collect, send_events
from choreo.settings import BUNDLED_CONFIG
from tests.integration.conftest import Worker, wait_until
from tests.integration.workflow_handlers import STRATEGIES

CONFIG = (BUNDLED_CONFIG.parent / "workflows.toml").read_text() + STRATEGIES
HANDLERS = "tests.integration.workflow_handlers:HANDLERS"
APPLICATION = {"applicant_id": "a-7", "amount": 20000, "annual_income": 60000,
               "credit_score": 720}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ledger") / "handled.log"


@pytest.fixture(scope="module")
def worker(make_worker, ledger: Path) -> Worker:  # noqa: ANN001
    return make_worker(CONFIG, env={"CHOREO_HANDLERS": HANDLERS,
                                    "CHOREO_WF_LEDGER": str(ledger)})


def start(worker: Worker, workflow: str, data: dict, instance_id: str | None = None) -> str:
    instance_id = instance_id or f"{workflow}-{uuid.uuid4().hex[:8]}"
    event = new_event("workflow.start", {"workflow": workflow, "instance_id": instance_id,
                                         "input": data},
                      source="test", correlation_id=instance_id)
    send(worker, event.as_dict())
    return instance_id


def send(worker: Worker, *events: dict) -> None:
    asyncio.run(send_events(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                            list(events)))


def view(worker: Worker, instance_id: str) -> dict | None:
    try:
        return orjson.loads(worker.get(f"/workflows/{instance_id}/"))
    except Exception:  # noqa: BLE001 - 404 until it starts, 503 while moving
        return None


def ended(worker: Worker, *instance_ids: str, timeout: float = 90) -> dict[str, dict]:
    def check() -> dict[str, dict] | None:
        views = {i: view(worker, i) for i in instance_ids}
        if all(v and v["status"] not in ("running", "compensating") for v in views.values()):
            return views  # type: ignore[return-value]
        return None
    return wait_until(check, timeout=timeout, every=0.5)


def ledger_lines(ledger: Path, instance_id: str) -> list[tuple[str, str, str, str, bool]]:
    """(start|done, action id, step, action, compensation) for one instance."""
    out = []
    for line in ledger.read_text().splitlines() if ledger.exists() else []:
        what, action_id, instance, step, action, comp = line.split()
        if instance == instance_id:
            out.append((what, action_id, step, action, comp == "1"))
    return out


def effects(ledger: Path, instance_id: str) -> list[tuple[str, str, bool]]:
    return [(step, action, comp) for what, _, step, action, comp
            in ledger_lines(ledger, instance_id) if what == "done"]


def test_the_bundled_workflows_run_to_completion(worker: Worker, ledger: Path) -> None:
    loan = start(worker, "loan_approval", APPLICATION)
    content = start(worker, "content_creation", {"topic": "Stream processing",
                                                 "style": "tutorial", "length": 400,
                                                 "keywords": ["stream", "kafka"]})
    medical = start(worker, "medical_diagnosis", {"xray": {"marks": ["fracture"]},
                                                  "mri": {"marks": ["edema", "fracture"]}})
    views = ended(worker, loan, content, medical)
    assert {i: v["status"] for i, v in views.items()} == dict.fromkeys(views, "completed")
    assert views[loan]["output"]["approved"] is True
    assert views[loan]["output"]["interest_rate"] == 4.5
    assert views[content]["output"]["ready"] is True
    assert list(views[content]["results"]["quality_checks"][1]) == ["claims", "verified",
                                                                    "sources_used"]
    assert views[medical]["output"]["condition"] == "fracture"
    assert [s for s, _, _ in effects(ledger, medical)][2:] == ["diagnosis", "treatment_plan"]
    assert [s for s, _, _ in effects(ledger, medical)][:2] == ["image_analysis"] * 2
    timings = views[content]["timings"]
    assert list(timings) == ["research", "content_generation", "quality_checks",
                             "final_review"]
    assert all(t["status"] == "completed" and t["duration_seconds"] >= 0
               for t in timings.values())
    assert views[content]["history"][0]["what"] == "started"


def test_a_trigger_event_starts_its_workflow(worker: Worker) -> None:
    correlation = f"post-{uuid.uuid4().hex[:8]}"
    send(worker, new_event("content_requested", {"topic": "Sagas", "style": "short",
                                                 "length": 100, "keywords": ["saga"]},
                           source="cms", correlation_id=correlation).as_dict())
    views = ended(worker, f"content_creation-{correlation}")
    assert views[f"content_creation-{correlation}"]["status"] == "completed"


def test_conditional_map_reduce_recursive_and_nested_workflows(worker: Worker) -> None:
    big = start(worker, "route", {"x": 500})
    small = start(worker, "route", {"x": 5})
    mapped = start(worker, "mapred", {"items": [1, 2, 3, 4]})
    recursive = start(worker, "recurse", {"numbers": list(range(1, 9))})
    nested = start(worker, "nested", {"x": 500})
    views = ended(worker, big, small, mapped, recursive, nested)
    assert {i: v["status"] for i, v in views.items()} == dict.fromkeys(views, "completed")
    assert views[big]["output"] == {"x": 1000}
    assert views[small]["output"] == {"x": 6}
    assert views[mapped]["output"] == {"x": 20}
    assert views[recursive]["output"] == {"x": 36}
    assert views[nested]["output"] == {"x": 1001}
    children = [view(worker, f"{recursive}:sum:{i}") for i in (0, 1)]
    assert [c["depth"] for c in children] == [1, 1]  # type: ignore[index]
    grandchild = view(worker, f"{recursive}:sum:0:sum:1")
    assert grandchild is not None and grandchild["depth"] == 2
    assert grandchild["parent"]["instance_id"] == f"{recursive}:sum:0"


@pytest.mark.parametrize("fail_at", ["credit_check", "risk_assessment", "approval"])
def test_a_saga_failing_at_each_step_ends_fully_compensated_twice_the_same(
        worker: Worker, ledger: Path, fail_at: str) -> None:
    runs = [start(worker, "loan_approval", {**APPLICATION, "fail_at": fail_at})
            for _ in range(2)]
    views = ended(worker, *runs)
    steps = ["credit_check", "risk_assessment", "approval"]
    done = steps[:steps.index(fail_at)]
    outcomes = []
    for run in runs:
        assert views[run]["status"] == "compensated"
        assert views[run]["error"]["step"] == fail_at
        applied = effects(ledger, run)
        forward = [(s, a) for s, a, comp in applied if not comp]
        undone = [s for s, _, comp in applied if comp]
        assert [s for s, _ in forward] == done
        assert undone == list(reversed(done))  # each compensation applied once, in reverse
        assert views[run]["compensation"]["done"] == list(reversed(done))
        outcomes.append(applied)
    assert outcomes[0] == outcomes[1]


def test_step_retries_after_a_transient_failure(worker: Worker, ledger: Path) -> None:
    run = start(worker, "loan_approval", {**APPLICATION, "flaky": {"risk_assessment": 1}})
    views = ended(worker, run)
    assert views[run]["status"] == "completed"
    assert views[run]["timings"]["risk_assessment"]["attempts"] == 2
    assert [h["what"] for h in views[run]["history"]].count("retry_scheduled") == 1


def test_a_step_that_times_out_is_retried_then_the_saga_compensates(worker: Worker,
                                                                    ledger: Path) -> None:
    run = start(worker, "waiting", {"sleep": 3})
    views = ended(worker, run, timeout=60)
    assert views[run]["status"] == "compensated"
    assert views[run]["error"]["reason"] == "timed out after 2s"
    assert views[run]["timings"]["slow"]["attempts"] == 2
    assert [(s, a) for s, a, comp in effects(ledger, run) if comp] == [("first", "double")]
    cancels = [orjson.loads(r.value) for r in worker.read(
        worker.choreography.topics.capability_topic("calc"))
        if b"action.cancel" in (r.value or b"")]
    assert len([c for c in cancels if c["payload"]["instance_id"] == run]) == 2


def test_cancel_reaches_the_workers_and_the_saga_undoes_its_steps(worker: Worker,
                                                                  ledger: Path) -> None:
    run = start(worker, "waiting", {"sleep": 1.5})
    wait_until(lambda: any(s == "slow" for _, _, s, _, _ in ledger_lines(ledger, run)),
               timeout=30, every=0.2)
    send(worker, new_event("workflow.cancel", {"instance_id": run, "reason": "test"},
                           source="test", correlation_id=run).as_dict())
    views = ended(worker, run)
    assert views[run]["status"] == "cancelled"
    assert [(s, comp) for s, _, comp in effects(ledger, run)][-1] == ("first", True)
    topic = worker.choreography.topics.capability_topic("calc")
    cancels = [orjson.loads(r.value) for r in worker.read(topic)
               if b"action.cancel" in (r.value or b"")]
    assert [c["payload"]["step"] for c in cancels if c["payload"]["instance_id"] == run] == [
        "slow"]


def test_a_worker_skips_an_action_whose_cancel_it_has_read(worker: Worker,
                                                          ledger: Path) -> None:
    run = f"manual-{uuid.uuid4().hex[:8]}"
    action = new_event("action.requested", {"action": "inc", "capability": "calc",
                                            "pattern_id": "workflow:manual",
                                            "data": {"x": 1},
                                            "workflow": {"instance_id": run, "step": "s"}},
                       source="test", correlation_id=run)
    cancel = new_event("action.cancel", {"action_id": action.event_id, "action": "inc",
                                         "capability": "calc", "instance_id": run,
                                         "step": "s", "reason": "test"},
                       source="test", correlation_id=run)
    topic = worker.choreography.topics.capability_topic("calc")
    asyncio.run(send_events(worker.broker.bootstrap, topic,
                            [cancel.as_dict(), action.as_dict(), action.as_dict()]))
    probe = new_event("action.requested", {"action": "inc", "capability": "calc",
                                           "pattern_id": "workflow:manual", "data": {"x": 1},
                                           "workflow": {"instance_id": run, "step": "probe"}},
                      source="test", correlation_id=run)
    asyncio.run(send_events(worker.broker.bootstrap, topic, [probe.as_dict()]))
    wait_until(lambda: any(s == "probe" for _, _, s, _, _ in ledger_lines(ledger, run)),
               timeout=30, every=0.5)
    assert [s for _, _, s, _, _ in ledger_lines(ledger, run)] == ["probe", "probe"]


def test_an_unknown_workflow_is_rejected_with_a_reason(worker: Worker) -> None:
    run = start(worker, "no_such_flow", {})

    def rejected() -> list[dict]:
        return [e for e in worker.events() if e["event_type"] == "workflow.rejected"
                and e["payload"]["instance_id"] == run]
    found = wait_until(rejected, timeout=30)
    assert found[0]["payload"]["reason"].startswith("no workflow named 'no_such_flow'")


def test_list_view_and_metrics(worker: Worker) -> None:
    body = orjson.loads(worker.get("/workflows/"))
    assert {w["name"] for w in body["workflows"]} >= {"loan_approval", "content_creation",
                                                      "medical_diagnosis"}
    assert body["instances"] and {"instance_id", "workflow", "status"} <= set(
        body["instances"][0])
    assert worker.metric("choreo_workflow_executions_total", workflow="loan_approval",
                         status="compensated") >= 6
    assert worker.metric("choreo_workflow_executions_total", workflow="loan_approval",
                         status="completed") >= 2
    assert worker.metric("choreo_workflow_duration_seconds_count",
                         workflow="medical_diagnosis") >= 1
    assert worker.metric("choreo_workflow_active_instances") == 0
    records = asyncio.run(collect(worker.broker.bootstrap,
                                  [worker.choreography.topics.events_topic], idle=1.0))
    ends = Counter(orjson.loads(r.value)["event_type"] for r in records
                   if b'"workflow.' in (r.value or b""))
    assert ends["workflow.completed"] >= 8 and ends["workflow.compensated"] >= 6
