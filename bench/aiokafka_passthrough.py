"""Baseline B: plain aiokafka consume-and-produce, batched with getmany.

`python -m bench.aiokafka_passthrough BOOTSTRAP GROUP IN OUT WEB_PORT`. The producer has
Faust's defaults (acks=all, linger 0, 16 KiB batches); offsets are committed after each
batch's sends are acknowledged (at-least-once). /health/ answers 200 once partitions are
assigned.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def main(bootstrap: str, group: str, source: str, sink: str, port: int) -> None:
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                max_batch_size=16384)

    async def health(request: web.Request) -> web.Response:
        ready = bool(consumer.assignment())
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    server = web.Application()
    server.router.add_get("/health/", health)
    runner = web.AppRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await producer.start()
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=2000)
            pending = [await producer.send(sink, value=r.value, key=r.key)
                       for records in batch.values() for r in records]
            if pending:
                await asyncio.gather(*pending)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
        await runner.cleanup()


if __name__ == "__main__":
    broker, group_id, in_topic, out_topic, web_port = sys.argv[1:6]
    asyncio.run(main(broker, group_id, in_topic, out_topic, int(web_port)))
