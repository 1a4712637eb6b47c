"""The bench reads the worker's counters and gauges from its /metrics view."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.procs import Proc

METRICS = b"""# HELP choreo_deadlines_run_total Deadlines reached.
# TYPE choreo_deadlines_run_total counter
choreo_deadlines_run_total{pattern_id="a"} 3.0
choreo_deadlines_run_total{pattern_id="b"} 4.0
choreo_deadlines_run_created{pattern_id="a"} 1.7e+09
choreo_sweep_backlog_partitions{table="seen-events"} 2.0
choreo_sweep_backlog_partitions{table="seen-rekeyed"} 0.0
choreo_pattern_state_entries 12.0
"""


class Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(METRICS)

    def log_message(self, *_args: object) -> None:
        pass


def test_metric_totals_sum_each_metric_over_its_labels_from_one_read() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = Proc("engine", [], {}, Path("."), Path("log"), server.server_address[1])
        totals = proc.metric_totals(["choreo_deadlines_run_total",
                                     "choreo_sweep_backlog_partitions",
                                     "choreo_pattern_state_entries", "choreo_absent"])
        assert totals == {"choreo_deadlines_run_total": 7.0,  # not the _created sample
                          "choreo_sweep_backlog_partitions": 2.0,
                          "choreo_pattern_state_entries": 12.0, "choreo_absent": 0.0}
        assert proc.metric_total("choreo_pattern_state_entries") == 12.0
        some = proc.metric_totals(
            ["choreo_sweep_backlog_partitions", "choreo_deadlines_run_total"],
            only={"choreo_sweep_backlog_partitions": {"table": ("seen-rekeyed", "other")}})
        assert some == {"choreo_sweep_backlog_partitions": 0.0,  # seen-events left out
                        "choreo_deadlines_run_total": 7.0}
        some = proc.metric_totals(
            ["choreo_sweep_backlog_partitions"],
            only={"choreo_sweep_backlog_partitions": {"table": ("seen-events", "seen-rekeyed")}})
        assert some == {"choreo_sweep_backlog_partitions": 2.0}
    finally:
        server.shutdown()
        server.server_close()
    # No view listening: nothing is known (the bench treats it as not settled).
    assert proc.metric_totals(["choreo_deadlines_run_total"]) == {
        "choreo_deadlines_run_total": None}


class Engine:
    """What the bench reads from an engine worker: a scripted series of /metrics reads."""

    name, log_path, process = "engine", Path("log"), None

    def __init__(self, reads: list[tuple[float, float, float]]) -> None:
        self.reads = reads
        self.seen = 0

    def metric_totals(self, names: list[str], only: object = None) -> dict:
        ran, gone, backlog = self.reads[min(self.seen, len(self.reads) - 1)]
        self.seen += 1
        return dict(zip(names, (ran, gone, backlog), strict=True))

    def alive(self) -> bool:
        return True

    def sample(self) -> None:
        return None

    def rss_kb(self) -> int:
        return 0


def bench(tmp_path: Path) -> object:
    import dataclasses

    from bench.run import Bench, Sizes

    sizes = dataclasses.replace(Sizes.for_mode(short=True), still_seconds=0.6)
    return Bench("127.0.0.1:1", None, tmp_path, tmp_path, sizes)


def test_deadlines_settle_only_past_the_known_deadlines_and_with_no_sweep_left(
        tmp_path: Path) -> None:
    import asyncio
    import time

    # Still at 10 while the timer has not ticked yet, then 14 with a sweep left, then done.
    engine = Engine([(10, 0, 0)] * 3 + [(14, 5, 1)] * 3 + [(14, 5, 0)])
    ran, settled = asyncio.run(bench(tmp_path).deadlines_settled(  # type: ignore[attr-defined]
        engine, time.monotonic() + 30, beyond=10))
    assert (ran, settled) == (14, True)
    assert engine.seen >= 7  # not before the counter passed 10 and the backlog read 0
    # Nothing moves past `beyond`: given up at the deadline, and said so.
    stuck = Engine([(10, 0, 0)])
    ran, settled = asyncio.run(bench(tmp_path).deadlines_settled(  # type: ignore[attr-defined]
        stuck, time.monotonic() + 2, beyond=10))
    assert (ran, settled) == (10, False)
