"""Integration fixtures: one real broker per session, and real `faust worker` processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from choreo.config import Choreography, parse_choreography
from choreo.kafka_io import Record, collect, envelopes
from choreo.settings import BUNDLED_CONFIG
from tests.broker import Broker, acquire_broker

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    found = acquire_broker()
    try:
        yield found
    finally:
        found.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Worker:
    """A `faust -A topology worker` process with its own app id, topics and state."""

    name: str
    broker: Broker
    config_path: Path
    choreography: Choreography
    data_dir: Path
    web_port: int
    process: subprocess.Popen | None = None
    extra_env: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, timeout: float = 120.0) -> Worker:
        env = {**os.environ, "CHOREO_BROKER": self.broker.url, "CHOREO_APP_ID": self.name,
               "CHOREO_CONFIG": str(self.config_path), "CHOREO_DATA_DIR": str(self.data_dir),
               "CHOREO_WEB_PORT": str(self.web_port), "PYTHONPATH": str(REPO),
               **(self.extra_env or {})}
        log = open(self.data_dir.parent / f"{self.name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "topology", "worker", "-l", "info"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}; "
                                   f"see {log.name}")
            try:
                urllib.request.urlopen(self.url + "/health/", timeout=1)
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"worker {self.name} not ready after {timeout}s; see {log.name}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def get(self, path: str) -> bytes:
        return urllib.request.urlopen(self.url + path, timeout=10).read()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample over series carrying the given labels."""
        total = 0.0
        for line in self.get("/metrics").decode().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def read(self, *topics: str, idle: float = 1.0) -> list[Record]:
        return asyncio.run(collect(self.broker.bootstrap, topics, idle=idle))

    def events(self) -> list[dict]:
        return envelopes(self.read(self.choreography.topics.events_topic))


@pytest.fixture(scope="module")
def make_worker(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start workers on a fresh topic prefix; stop them when the module is done."""
    started: list[Worker] = []
    tmp_path = tmp_path_factory.mktemp("workers")

    def make(config_text: str | None = None, prefix: str | None = None,
             env: dict[str, str] | None = None) -> Worker:
        name = f"it-{uuid.uuid4().hex[:8]}"
        text = config_text or BUNDLED_CONFIG.read_text()
        text = text.replace('prefix = ""', f'prefix = "{prefix or name}."', 1)
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        worker = Worker(name, broker, path, parse_choreography(text), tmp_path / name,
                        free_port(), extra_env=env)
        started.append(worker)
        return worker.start()

    yield make
    for worker in started:
        worker.stop()


def wait_until(check, timeout: float = 60.0, every: float = 1.0):  # noqa: ANN001, ANN201
    """Poll `check` until it returns something truthy; return that, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)
