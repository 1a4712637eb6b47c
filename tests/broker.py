"""Find a Kafka broker for the integration tests: environment, Docker, or kafka-local.

Order:
1. ``CHOREO_BROKER`` (``kafka://host:port``, ``host:port``, or a comma/semicolon list): used as is.
2. A testcontainers ``KafkaContainer`` in KRaft mode, only when a Docker engine answers a ping.
3. ``scripts/kafka-local`` with ``KAFKA_DIR=<repo>/.kafka/test`` on port 19092
   (``CHOREO_TEST_KAFKA_PORT`` overrides), its data purged before and after the session.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
KAFKA_LOCAL = REPO / "scripts" / "kafka-local"
TEST_KAFKA_DIR = REPO / ".kafka" / "test"
DEFAULT_TEST_PORT = 19092
# Confluent Platform 7.9 ships Apache Kafka 3.9, the version scripts/kafka-local and
# docker-compose.yml run; testcontainers' KafkaContainer only drives cp-kafka images.
DEFAULT_TEST_IMAGE = "confluentinc/cp-kafka:7.9.1"
DEFAULT_KAFKA_PORT = 9092
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class Broker:
    """A reachable Kafka broker and how to let go of it."""

    bootstrap: str  # "127.0.0.1:19092" (host:port[,host:port...], no scheme)
    url: str  # "kafka://127.0.0.1:19092", as Faust's broker setting takes it
    origin: str  # "env" | "testcontainers" | "local"
    _release: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def stop(self) -> None:
        """Stop the broker if this process started it; safe to call more than once."""
        release, self._release = self._release, None
        if release is not None:
            release()


def parse_brokers(value: str) -> tuple[str, str]:
    """Turn ``kafka://a:9092,b:9093`` (or ``a:9092;b``) into ``(bootstrap, faust_url)``."""
    hosts = []
    for item in re.split(r"[,;\s]+", value.strip()):
        if not item:
            continue
        hostport = _SCHEME.sub("", item).rstrip("/")
        if not re.search(r":\d+$", hostport):  # no port, or a bare [IPv6] literal
            hostport = f"{hostport}:{DEFAULT_KAFKA_PORT}"
        hosts.append(hostport)
    if not hosts:
        raise ValueError(f"no broker address in {value!r}")
    return ",".join(hosts), ";".join(f"kafka://{h}" for h in hosts)


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """Silence aiokafka's connection-refused errors while we poll a broker that is coming up."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _answers(bootstrap: str) -> None:
    """Raise unless the broker answers a metadata request naming a broker and a controller."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        info = await asyncio.wait_for(admin.describe_cluster(), 10)
        if not info.get("brokers") or info.get("controller_id", -1) < 0:
            raise ConnectionError(f"cluster not ready yet: {info}")
    finally:
        await admin.close()


async def wait_for_broker_async(bootstrap: str, timeout: float = 60.0) -> None:
    """Wait until ``bootstrap`` answers, or raise TimeoutError with the last failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: BaseException | None = None
    with _quiet_aiokafka():
        while True:
            try:
                await _answers(bootstrap)
                return
            except Exception as exc:  # any failure means "not yet"
                last = exc
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"Kafka at {bootstrap} did not answer within {timeout:.0f}s: {last!r}"
                ) from last
            await asyncio.sleep(0.5)


def wait_for_broker(bootstrap: str, timeout: float = 60.0) -> None:
    """Blocking form of :func:`wait_for_broker_async`; not for use inside a running loop."""
    asyncio.run(wait_for_broker_async(bootstrap, timeout))


def docker_available(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers a ping within ``timeout`` seconds."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _from_env(value: str) -> Broker:
    bootstrap, url = parse_brokers(value)
    log.info("using Kafka from CHOREO_BROKER: %s", bootstrap)
    wait_for_broker(bootstrap, timeout=30)
    return Broker(bootstrap=bootstrap, url=url, origin="env")


def _from_testcontainers() -> Broker:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.14
        from testcontainers.kafka import KafkaContainer

    image = os.environ.get("CHOREO_TEST_KAFKA_IMAGE", DEFAULT_TEST_IMAGE)
    container = KafkaContainer(image).with_kraft()
    container.with_env("KAFKA_NUM_PARTITIONS", "4")
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
    container.start(timeout=120)
    try:
        bootstrap, url = parse_brokers(container.get_bootstrap_server())
        wait_for_broker(bootstrap, timeout=60)
    except BaseException:
        container.stop()
        raise
    log.info("started Kafka container %s at %s", image, bootstrap)
    return Broker(bootstrap=bootstrap, url=url, origin="testcontainers", _release=container.stop)


def _kafka_local(command: list[str], env: dict[str, str], timeout: float) -> None:
    proc = subprocess.run(
        [str(KAFKA_LOCAL), *command],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/kafka-local {' '.join(command)} failed:\n{output}")
    log.info("%s", output)


def _from_kafka_local() -> Broker:
    port = int(os.environ.get("CHOREO_TEST_KAFKA_PORT", DEFAULT_TEST_PORT))
    env = {
        **os.environ,
        "KAFKA_DIR": str(TEST_KAFKA_DIR),
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(port + 1),
        "KAFKA_PARTITIONS": "4",
    }
    _kafka_local(["stop", "--purge"], env, timeout=60)  # a clean log for every session
    # The first run resolves ~70 MB of jars through Maven before the broker starts.
    _kafka_local(["start"], env, timeout=900)

    stopped = False

    def release() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            _kafka_local(["stop", "--purge"], env, timeout=60)

    atexit.register(release)  # in case the session dies before its teardown runs
    bootstrap, url = parse_brokers(f"127.0.0.1:{port}")
    try:
        wait_for_broker(bootstrap, timeout=30)
    except BaseException:
        release()
        raise
    return Broker(bootstrap=bootstrap, url=url, origin="local", _release=release)


def acquire_broker() -> Broker:
    """Return a broker for this test session; call ``stop()`` on it when the session ends."""
    if value := os.environ.get("CHOREO_BROKER", "").strip():
        return _from_env(value)
    if docker_available():
        try:
            return _from_testcontainers()
        except Exception:
            log.warning(
                "Docker answered but no Kafka container came up; using kafka-local", exc_info=True
            )
    return _from_kafka_local()
