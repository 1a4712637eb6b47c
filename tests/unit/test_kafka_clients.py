"""One factory for every Kafka client outside Faust, with the TLS/SASL settings applied."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from choreo import kafka_clients, replay_io
from choreo.settings import Settings

SASL = {"CHOREO_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CHOREO_SASL_MECHANISM": "SCRAM-SHA-512",
        "CHOREO_SASL_USERNAME": "choreo-unit", "CHOREO_SASL_PASSWORD": "unit-secret"}
REPO = Path(__file__).resolve().parents[2]


def sasl_of(client: Any) -> dict[str, Any]:
    """What the client will authenticate with, read from the aiokafka client it holds."""
    inner = getattr(client, "_client", None) or client.client
    return {"protocol": inner._security_protocol, "mechanism": inner._sasl_mechanism,  # noqa: SLF001
            "user": inner._sasl_plain_username, "password": inner._sasl_plain_password}  # noqa: SLF001


EXPECTED = {"protocol": "SASL_PLAINTEXT", "mechanism": "SCRAM-SHA-512", "user": "choreo-unit",
            "password": "unit-secret"}


def built(make: Any) -> dict[str, Any]:
    async def build() -> dict[str, Any]:
        client = make()
        found = sasl_of(client)
        if isinstance(client, AIOKafkaAdminClient):
            await client._client.close()  # noqa: SLF001
        else:
            await client.stop()  # not started: only releases what the constructor made
        return found

    return asyncio.run(build())


@pytest.mark.parametrize("kind", ["consumer", "producer", "admin"])
def test_the_factory_passes_the_sasl_settings(kind: str):
    settings = Settings.from_env(SASL)
    make = getattr(kafka_clients, kind)
    assert built(lambda: make("127.0.0.1:1", settings=settings)) == EXPECTED


def test_without_settings_the_environment_applies_and_options_override(monkeypatch):
    for name, value in SASL.items():
        monkeypatch.setenv(name, value)
    assert built(lambda: kafka_clients.consumer("127.0.0.1:1", group_id=None)) == EXPECTED
    assert built(lambda: kafka_clients.producer("127.0.0.1:1", options={}))["protocol"] == (
        "PLAINTEXT")


def test_replays_consumer_gets_the_sasl_settings(monkeypatch):
    """Replay's reads were built without TLS/SASL: a secured cluster refused them."""
    for name, value in SASL.items():
        monkeypatch.setenv(name, value)
    assert built(lambda: replay_io._consumer("127.0.0.1:1")) == EXPECTED  # noqa: SLF001


def test_no_product_code_builds_a_kafka_client_but_the_factory():
    construction = re.compile(r"AIOKafka(Consumer|Producer|AdminClient)\(")
    found = [f"{path.relative_to(REPO)}:{n}"
             for folder in ("choreo", "streams", "agents", "tables")
             for path in sorted((REPO / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if construction.search(line) and path.name != "kafka_clients.py"]
    assert found == []
