"""`choreo redrive` with signatures required: a genuine record goes back and acts."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest

from choreo import cli
from choreo.dead_letter import read_dead_letter_headers
from choreo.kafka_io import send_all
from choreo.signing import Key, Keyring, sign
from tests.integration.conftest import Worker, wait_until
from tests.integration.flaky_handlers import CHOREOGRAPHY

SECRET = "k1-redrive-secret-0123456789abcd"
RING = Keyring({"k1": Key(SECRET.encode())}, signing="k1")
SECURITY = """
[security]
require_signatures = true
max_age = "5m"
"""


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.toml"
    path.write_text(f'sign_with = "k1"\n[keys]\nk1 = "{SECRET}"\n')
    return path


@pytest.fixture(scope="module")
def worker(make_worker, keys_file: Path) -> Worker:  # noqa: ANN001
    return make_worker(CHOREOGRAPHY + SECURITY,
                       env={"CHOREO_HANDLERS": "tests.integration.flaky_handlers:HANDLERS",
                            "CHOREO_SIGNING_KEYS_FILE": str(keys_file)})


def kinds(worker: Worker, correlation: str) -> list[str]:
    return [e["event_type"] for e in worker.events()
            if e["metadata"].get("correlation_id") == correlation]


def test_a_signed_action_dead_lettered_by_its_handler_is_redriven_and_acts(
        worker: Worker, keys_file: Path, tmp_path: Path, monkeypatch, capsys):
    fixed = tmp_path / "fixed"
    correlation = f"until-fixed-{uuid.uuid4().hex[:8]}"
    event = {"event_id": str(uuid.uuid4()), "event_type": "test.until_fixed",
             "timestamp": "2026-11-21T10:00:00Z", "source": "test",
             "payload": {"fixed_when": str(fixed)}, "metadata": {"correlation_id": correlation}}
    topics = worker.choreography.topics
    key, raw = correlation.encode(), orjson.dumps(event)
    asyncio.run(send_all(worker.broker.bootstrap, topics.events_topic,
                         [(key, raw, sign(RING, topics.events_topic, key, raw, time.time()))]))
    wait_until(lambda: "action.failed" in kinds(worker, correlation), timeout=60)
    dlq = topics.capability_dead_letter_topic("flaky")
    [record] = [r for r in worker.read(dlq)
                if orjson.loads(r.value)["metadata"]["correlation_id"] == correlation]
    assert read_dead_letter_headers(record.headers)["reason"] == "handler_error"
    assert dict(record.headers)["choreo.sig.key"] == b"k1", "its signature is kept"

    fixed.write_text("deployed the fix")
    monkeypatch.setenv("CHOREO_BROKER", worker.broker.url)
    monkeypatch.setenv("CHOREO_CONFIG", str(worker.config_path))
    monkeypatch.setenv("CHOREO_SIGNING_KEYS_FILE", str(keys_file))
    assert cli.main(["redrive", "--capability", "flaky"]) == 0, capsys.readouterr().err
    assert "re-drove 1 record(s)" in capsys.readouterr().err
    wait_until(lambda: "action.completed" in kinds(worker, correlation), timeout=60)
    assert kinds(worker, correlation) == [
        "test.until_fixed", "action.started", "action.failed",
        "action.started", "flaky.done", "action.completed"]
