"""Faust pass-through: `faust -A bench.faust_passthrough worker` forwards each record unchanged.

Settings come from BENCH_* variables set by the harness (this module is never imported by
tests). Stock (the `faust` scenario): Faust's own defaults, a memory store and raw bytes.
With BENCH_TUNED=1 (`faust-tuned`): what the engine does to Faust, its fetch-loop fast path
(choreo/faust_fastpath.py), quiet library loggers, a 5 ms producer linger and a 0.1 s fetch
wait, so the difference to the engine is the engine's own work.
"""

from __future__ import annotations

import os

import faust

from choreo import faust_fastpath
from choreo.settings import Settings

TUNED = os.environ.get("BENCH_TUNED") == "1"
if TUNED:
    faust_fastpath.install()

app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-faust"),
    broker=os.environ.get("BENCH_BROKER", "kafka://127.0.0.1:29092"),
    store="memory://",
    datadir=os.environ.get("BENCH_DATA_DIR", "bench-data"),
    web_port=int(os.environ.get("BENCH_WEB_PORT", "7100")),
    web_bind="127.0.0.1",
    web_host="127.0.0.1",
    topic_partitions=4,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    autodiscover=False,
    producer_acks=-1,
    producer_linger=0.005 if TUNED else 0.0,
)
if TUNED:
    faust_fastpath.install_fetch_wait()
    setattr(app, faust_fastpath.FETCH_WAIT_ATTR, Settings.fetch_max_wait)  # the engine's default
source = app.topic(os.environ.get("BENCH_IN", "bench.in"), key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
sink = app.topic(os.environ.get("BENCH_OUT", "bench.out"), key_type=bytes, value_type=bytes,
                 key_serializer="raw", value_serializer="raw")


@app.task
async def quiet_loggers() -> None:
    if TUNED:
        faust_fastpath.quiet_library_loggers("warn")


@app.agent(source, name="forward_events")
async def forward_events(stream: faust.StreamT) -> None:
    async for record in stream.events():
        await sink.send(key=record.message.key, value=record.value)


@app.page("/health/")
async def health(web, request):  # noqa: ANN001 - Faust view signature
    ready = bool(app.consumer and app.consumer.assignment())
    return web.json({"ready": ready}, status=200 if ready else 503)
