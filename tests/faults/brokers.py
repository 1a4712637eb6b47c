"""Dedicated kafka-local brokers for the faults that need their own (restarts, a proxy)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.broker import KAFKA_LOCAL, REPO, parse_brokers

FAULTS_KAFKA = REPO / ".kafka"


@dataclass
class LocalBroker:
    """A single-node broker on `port` (39100-39199 here), data under .kafka/faults-<port>."""

    port: int
    advertised_port: int | None = None  # where clients are told to connect (a proxy)
    direct_port: int | None = None  # a listener around the proxy, for the test itself

    @property
    def kafka_dir(self) -> Path:
        return FAULTS_KAFKA / f"faults-{self.port}"

    @property
    def bootstrap(self) -> str:
        """Where the test's own clients connect (around any proxy)."""
        return f"127.0.0.1:{self.direct_port or self.port}"

    @property
    def worker_url(self) -> str:
        """Where workers connect (through the proxy when there is one)."""
        return parse_brokers(f"127.0.0.1:{self.advertised_port or self.port}")[1]

    def _run(self, *command: str, timeout: float = 180) -> str:
        env = {**os.environ, "KAFKA_DIR": str(self.kafka_dir), "KAFKA_PORT": str(self.port),
               "KAFKA_CONTROLLER_PORT": str(self.port + 1), "KAFKA_PARTITIONS": "4"}
        if self.advertised_port:
            env["KAFKA_ADVERTISED_PORT"] = str(self.advertised_port)
        if self.direct_port:
            env["KAFKA_DIRECT_PORT"] = str(self.direct_port)
        proc = subprocess.run([str(KAFKA_LOCAL), *command], env=env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"kafka-local {' '.join(command)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def start(self) -> float:
        """Start (or restart on its existing data); seconds until it answered."""
        began = time.monotonic()
        self._run("start")
        return time.monotonic() - began

    def stop(self, purge: bool = False) -> None:
        self._run("stop", *(["--purge"] if purge else []))

    def kill9(self) -> None:
        pid = int((self.kafka_dir / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
