"""Faust pass-through: `faust -A bench.faust_passthrough worker` forwards each record unchanged.

Settings come from BENCH_* variables set by the harness (this module is never imported by
tests). The app uses the engine's producer and consumer settings, a memory store and raw
bytes, so the difference to the engine is the engine's own work.
"""

from __future__ import annotations

import os

import faust

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
)
source = app.topic(os.environ.get("BENCH_IN", "bench.in"), key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
sink = app.topic(os.environ.get("BENCH_OUT", "bench.out"), key_type=bytes, value_type=bytes,
                 key_serializer="raw", value_serializer="raw")


@app.agent(source, name="forward_events")
async def forward_events(stream: faust.StreamT) -> None:
    async for record in stream.events():
        await sink.send(key=record.message.key, value=record.value)


@app.page("/health/")
async def health(web, request):  # noqa: ANN001 - Faust view signature
    ready = bool(app.consumer and app.consumer.assignment())
    return web.json({"ready": ready}, status=200 if ready else 503)
