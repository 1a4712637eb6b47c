"""`[security] mask` in the workflow views: an instance's input and what quotes it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest

from choreo.envelope import new_event
from choreo.kafka_io import send_events
from choreo.settings import BUNDLED_CONFIG
from tests.integration.conftest import Worker, wait_until

CONFIG = (BUNDLED_CONFIG.parent / "workflows.toml").read_text() + """
[security]
mask = ["payload.ssn", "payload.pin"]
"""
SSN, PIN = "078-05-1120", "Z9q"  # a 3-character value is masked too
APPLICATION = {"applicant_id": "a-7", "amount": 20000, "annual_income": 60000,
               "credit_score": 720, "ssn": SSN, "pin": PIN}


@pytest.fixture(scope="module")
def worker(make_worker, tmp_path_factory: pytest.TempPathFactory) -> Worker:  # noqa: ANN001
    ledger: Path = tmp_path_factory.mktemp("ledger") / "handled.log"
    return make_worker(CONFIG, env={"CHOREO_HANDLERS": "tests.integration.workflow_handlers:"
                                                       "HANDLERS",
                                    "CHOREO_WF_LEDGER": str(ledger)})


def test_the_instance_view_masks_the_input_its_trigger_carried(worker: Worker):
    correlation = f"loan-{uuid.uuid4().hex[:8]}"
    trigger = new_event("loan_application_submitted", APPLICATION, source="bank.web",
                        correlation_id=correlation)
    asyncio.run(send_events(worker.broker.bootstrap, worker.choreography.topics.events_topic,
                            [trigger.as_dict()]))
    instance = f"loan_approval-{correlation}"

    def ended() -> bytes:
        try:
            body = worker.get(f"/workflows/{instance}/")
        except Exception:  # noqa: BLE001 - 404 until it starts
            return b""
        return body if orjson.loads(body)["status"] not in ("running", "compensating") else b""

    body = wait_until(ended, timeout=90, every=0.5)
    view = orjson.loads(body)
    assert view["status"] == "completed"
    assert view["input"]["ssn"] == "[masked]" and view["input"]["pin"] == "[masked]"
    assert view["input"]["applicant_id"] == "a-7", "the rest is shown"
    assert SSN.encode() not in body and PIN.encode() not in body
    listing = worker.get("/workflows/")
    assert SSN.encode() not in listing and PIN.encode() not in listing
