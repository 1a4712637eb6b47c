"""Processes under test: start one, wait for /health/, watch its memory, stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def proc_status_kb(pid: int, field_name: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), or None when unavailable."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def dir_bytes(path: Path) -> int:
    """Apparent size of every file under path."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


@dataclass
class Proc:
    """One process under test, with its command, environment and health URL."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    web_port: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    peak_rss_kb: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 180.0) -> float:
        """Start and wait for /health/ 200; return the seconds that took."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(self.argv, cwd=self.cwd, env={**os.environ, **self.env},
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_healthy(timeout)
        return time.monotonic() - self.started_at

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.web_port}/health/"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            self.sample()
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy after {timeout}s; see {self.log_path}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_kb(self) -> int | None:
        return proc_status_kb(self.pid, "VmRSS") if self.alive() else None

    def sample(self) -> int | None:
        """Record the current RSS and the peak (VmHWM) the kernel has seen."""
        if not self.alive():
            return None
        rss = proc_status_kb(self.pid, "VmRSS")
        hwm = proc_status_kb(self.pid, "VmHWM")
        if hwm:
            self.peak_rss_kb = max(self.peak_rss_kb, hwm)
        if rss:
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.samples.append((time.monotonic(), rss))
        return rss

    def get_json(self, path: str, timeout: float = 60.0) -> Any:
        """The worker's JSON answer at `path` (None if it does not answer)."""
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def metric_total(self, name: str) -> float | None:
        """Sum of a Prometheus metric's samples on /metrics (None without such a view)."""
        return self.metric_totals([name])[name]

    def metric_totals(self, names: list[str],
                      only: dict[str, dict[str, tuple[str, ...]]] | None = None,
                      ) -> dict[str, float | None]:
        """Sums of several metrics' samples from one read of /metrics (None each without
        such a view). `only` maps a metric to labels and the values one of which a sample
        must have to count."""
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return dict.fromkeys(names)
        wanted = {name: [[f'{label}="{value}"' for value in values]
                         for label, values in labels.items()]
                  for name, labels in (only or {}).items()}
        totals: dict[str, float | None] = dict.fromkeys(names, 0.0)
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in totals and all(any(w in line for w in one)
                                      for one in wanted.get(name, [])):
                totals[name] = (totals[name] or 0.0) + float(line.rsplit(" ", 1)[1])
        return totals

    def stop(self, timeout: float = 60.0) -> None:
        if not self.alive():
            return
        self.sample()
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
