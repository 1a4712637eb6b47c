"""Workflows with `[security]`: the views mask an instance's input and what quotes it; a
signed start keyed otherwise is forwarded to its instance's partition signed for its new key."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest

from choreo.envelope import new_event
from choreo.kafka_io import send_all
from choreo.settings import BUNDLED_CONFIG, Settings
from choreo.signing import Key, Keyring, sign
from tables.pattern_state import partition_for
from tests.integration.conftest import Worker, wait_until

CONFIG = (BUNDLED_CONFIG.parent / "workflows.toml").read_text() + """
[security]
require_signatures = true
mask = ["payload.ssn", "payload.pin"]
"""
SECRET = "k1-workflow-secret-0123456789abc"
RING = Keyring({"k1": Key(SECRET.encode())}, signing="k1")
SSN, PIN = "078-05-1120", "Z9q"  # a 3-character value is masked too
APPLICATION = {"applicant_id": "a-7", "amount": 20000, "annual_income": 60000,
               "credit_score": 720, "ssn": SSN, "pin": PIN}


@pytest.fixture(scope="module")
def worker(make_worker, tmp_path_factory: pytest.TempPathFactory) -> Worker:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("wf")
    keys = tmp / "keys.toml"
    keys.write_text(f'sign_with = "k1"\n[keys]\nk1 = "{SECRET}"\n')
    return make_worker(CONFIG, env={"CHOREO_HANDLERS": "tests.integration.workflow_handlers:"
                                                       "HANDLERS",
                                    "CHOREO_WF_LEDGER": str(tmp / "handled.log"),
                                    "CHOREO_SIGNING_KEYS_FILE": str(keys)})


def send_signed(worker: Worker, key: str, envelope: dict) -> None:
    topic, raw = worker.choreography.topics.events_topic, orjson.dumps(envelope)
    asyncio.run(send_all(worker.broker.bootstrap, topic, [
        (key.encode(), raw, sign(RING, topic, key.encode(), raw, time.time()))]))


def ended(worker: Worker, instance: str) -> bytes:
    def check() -> bytes:
        try:
            body = worker.get(f"/workflows/{instance}/")
        except Exception:  # noqa: BLE001 - 404 until it starts
            return b""
        return body if orjson.loads(body)["status"] not in ("running", "compensating") else b""

    return wait_until(check, timeout=90, every=0.5)


def test_the_instance_view_masks_the_input_its_trigger_carried(worker: Worker):
    correlation = f"loan-{uuid.uuid4().hex[:8]}"
    trigger = new_event("loan_application_submitted", APPLICATION, source="bank.web",
                        correlation_id=correlation)
    send_signed(worker, correlation, trigger.as_dict())
    body = ended(worker, f"loan_approval-{correlation}")
    view = orjson.loads(body)
    assert view["status"] == "completed"
    assert view["input"]["ssn"] == "[masked]" and view["input"]["pin"] == "[masked]"
    assert view["input"]["applicant_id"] == "a-7", "the rest is shown"
    assert SSN.encode() not in body and PIN.encode() not in body
    listing = worker.get("/workflows/")
    assert SSN.encode() not in listing and PIN.encode() not in listing


def test_a_signed_start_keyed_for_another_partition_is_forwarded_and_runs(worker: Worker):
    instance = f"loan_approval-{uuid.uuid4().hex[:8]}"
    partitions = Settings().partitions  # the workers' (CHOREO_PARTITIONS is not set)
    key = next(k for k in (f"elsewhere-{i}" for i in range(100))
               if partition_for(k, partitions) != partition_for(instance, partitions))
    start = new_event("workflow.start", {"workflow": "loan_approval", "instance_id": instance,
                                         "input": APPLICATION},
                      source="bank.web", correlation_id=key)
    send_signed(worker, key, start.as_dict())
    view = orjson.loads(ended(worker, instance))
    assert view["status"] == "completed" and view["input"]["ssn"] == "[masked]"
