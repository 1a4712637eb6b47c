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
    finally:
        server.shutdown()
        server.server_close()
    # No view listening: nothing is known (the bench treats it as not settled).
    assert proc.metric_totals(["choreo_deadlines_run_total"]) == {
        "choreo_deadlines_run_total": None}
