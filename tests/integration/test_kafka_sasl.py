"""TLS/SASL settings for real: a broker with a SCRAM-SHA-512 listener, a worker through it.

The broker is a second scripts/kafka-local on free ports, with a SASL_PLAINTEXT listener and
a SCRAM user created when its storage is formatted (`kafka-storage format --add-scram`).
Skipped when the suite runs against a broker given by CHOREO_BROKER or Docker, since then
the local jars may not be there.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from choreo import cli
from choreo.kafka_io import collect, envelopes, send_all
from choreo.samples import order
from choreo.settings import BUNDLED_CONFIG, Settings
from tests.broker import KAFKA_LOCAL, REPO, Broker
from tests.integration.conftest import Worker, free_port, wait_until

USER, PASSWORD = "choreo-it", "scram-secret-for-tests"


@pytest.fixture(scope="module")
def sasl_broker(broker: Broker) -> Iterator[tuple[str, Settings]]:
    if broker.origin != "local":
        pytest.skip("the SCRAM broker is started with scripts/kafka-local")
    port, controller, sasl = free_port(), free_port(), free_port()
    env = {**os.environ, "KAFKA_DIR": str(REPO / ".kafka" / f"test-sasl-{sasl}"),
           "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller),
           "KAFKA_SASL_PORT": str(sasl), "KAFKA_SCRAM_USER": USER,
           "KAFKA_SCRAM_PASSWORD": PASSWORD, "KAFKA_HEAP": "384m"}

    def run(*args: str) -> None:
        proc = subprocess.run([str(KAFKA_LOCAL), *args], env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    run("start")
    try:
        settings = Settings.from_env({
            "CHOREO_BROKER": f"kafka://127.0.0.1:{sasl}",
            "CHOREO_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "CHOREO_SASL_MECHANISM": "SCRAM-SHA-512",
            "CHOREO_SASL_USERNAME": USER, "CHOREO_SASL_PASSWORD": PASSWORD})
        yield f"127.0.0.1:{sasl}", settings
    finally:
        run("stop", "--purge")
        subprocess.run(["rm", "-rf", env["KAFKA_DIR"]], check=False)


def test_wrong_credentials_are_refused(sasl_broker):
    bootstrap, settings = sasl_broker
    wrong = {**settings.kafka_options(), "sasl_plain_password": "not-the-password"}
    with pytest.raises(KafkaConnectionError):
        asyncio.run(send_all(bootstrap, "nowhere", [(None, b"x")], client=wrong))
    plain = {}  # a client that does not speak SASL gets nowhere either
    with pytest.raises(KafkaConnectionError):
        asyncio.run(asyncio.wait_for(send_all(bootstrap, "nowhere", [(None, b"x")],
                                              client=plain), 30))


def test_a_worker_runs_the_flow_through_scram(sasl_broker, tmp_path: Path, monkeypatch):
    bootstrap, settings = sasl_broker
    name = f"sasl-{uuid.uuid4().hex[:6]}"
    # With the agent registry on: its own clients (presence producer, agents-topic reader,
    # topic creation) must go through SASL too.
    text = BUNDLED_CONFIG.read_text().replace('prefix = ""', f'prefix = "{name}."', 1) + (
        '\n[agents]\nheartbeat_interval = "500ms"\n')
    config = tmp_path / f"{name}.toml"
    config.write_text(text)
    from choreo.config import parse_choreography

    env = {"CHOREO_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CHOREO_SASL_MECHANISM":
           "SCRAM-SHA-512", "CHOREO_SASL_USERNAME": USER, "CHOREO_SASL_PASSWORD": PASSWORD}
    broker = Broker(bootstrap=bootstrap, url=settings.broker, origin="env")
    worker = Worker(name, broker, config, parse_choreography(text), tmp_path / name,
                    free_port(), extra_env=env)
    worker.data_dir.mkdir()
    worker.start()
    try:
        topics = worker.choreography.topics
        first = order(f"ord-sasl-{name}", [("SKU-BOOK", 1)], 20.0)
        asyncio.run(send_all(bootstrap, topics.events_topic,
                             [(b"o", orjson.dumps(first))], client=settings.kafka_options()))
        # `choreo produce` goes through the same settings.
        second = order(f"ord-cli-{name}", [("SKU-BOOK", 1)], 20.0)
        lines = tmp_path / "orders.jsonl"
        lines.write_bytes(orjson.dumps(second) + b"\n")
        for key, value in {"CHOREO_BROKER": settings.broker, "CHOREO_CONFIG": str(config),
                           **env}.items():
            monkeypatch.setenv(key, value)
        assert cli.main(["produce", str(lines), "--quiet"]) == 0

        def completed() -> list[dict]:
            records = asyncio.run(collect(bootstrap, [topics.events_topic], idle=1.0,
                                          client=settings.kafka_options()))
            done = {e["metadata"].get("correlation_id") for e in envelopes(records)
                    if e["event_type"] == "payment_successful"}
            return done >= {f"ord-sasl-{name}", f"ord-cli-{name}"}

        wait_until(completed, timeout=120, every=2.0)

        def registered() -> dict:
            agents = orjson.loads(worker.get("/agents/"))["agents"]
            return next((a for a in agents if a["status"] == "up"), {})

        agent = wait_until(registered, timeout=60, every=1.0)
        assert "inventory_management" in agent["capabilities"]
        # The dead-letter view's reader is built by choreo/kafka_clients.py with the
        # worker's SASL settings (on main it was not, and the view answered 500).
        asyncio.run(send_all(bootstrap, topics.events_topic, [(b"bad", b"not json")],
                             client=settings.kafka_options()))

        def dead_lettered() -> list[dict]:
            body = orjson.loads(worker.get("/ui/dead-letters/"))
            assert body["topic"] == topics.dead_letter_topic
            return [r for r in body["records"] if r["key"] == "bad"]

        [record] = wait_until(dead_lettered, timeout=60, every=2.5)
        assert record["value"] == "not json" and record["stage"] == "ingest"
    finally:
        worker.stop()
