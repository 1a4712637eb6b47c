"""Start `faust worker` processes against a broker of a fault test's own."""

from __future__ import annotations

import uuid
from pathlib import Path

from choreo.config import parse_choreography
from tests.broker import Broker
from tests.integration.conftest import Worker, free_port


def start_worker(bootstrap: str, url: str, tmp: Path, config: str, prefix: str,
                 env: dict[str, str]) -> Worker:
    """A worker whose clients use `url` while the test reads and writes via `bootstrap`."""
    name = f"it-{uuid.uuid4().hex[:8]}"
    text = config.replace('prefix = ""', f'prefix = "{prefix}."', 1)
    path = tmp / f"{name}.toml"
    path.write_text(text)
    broker = Broker(bootstrap=bootstrap, url=url, origin="faults")
    worker = Worker(name, broker, path, parse_choreography(text), tmp / name, free_port(),
                    extra_env=env)
    return worker.start(timeout=180)
