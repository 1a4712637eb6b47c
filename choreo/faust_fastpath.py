"""A per-record fast path for Faust's fetch loop, a leaner changelog buffer (whose flush
waits for what was buffered, not for an empty buffer), a producer look-up without a trip
round the event loop per send, a fetch wait that is a setting, and quieter library loggers.

Faust's consumer hands each fetched record to the streams with

    await self.wait_first(callback(message), self.suspend_flow.wait())

(faust-streaming 0.11 to 0.15, `Consumer._drain_messages`). `wait_first` makes four tasks per
record (the callback, the suspend-flow wait, and the service's stopped and crashed waits),
runs `asyncio.wait` over them and cancels three: on these machines that alone capped a Faust
agent that does nothing at about 5,000 records/s (bench/README.md, "Where Faust loses time").

Almost always the callback finishes without suspending: it puts the record on a stream
buffer that has room. `install()` runs the callback one step inline; if it finishes, no task
is made. If it suspends (a full buffer: back-pressure), the rest of it runs as a task raced
against the suspend-flow event exactly as before, so a rebalance still interrupts a blocked
delivery. The same process with the patch drained 6,900 records/s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from faust.topics import Topic
from faust.transport.consumer import Consumer
from faust.transport.producer import ProducerBuffer
from mode import Service
from mode.services import ServiceTask

log = logging.getLogger(__name__)

_PATCHED = "_choreo_fast_wait_first"


async def resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Drive `coro`, which has already run up to a suspension on `yielded`, to its end."""
    while True:
        try:
            if yielded is None:  # a bare yield (asyncio.sleep(0)): just give the loop a turn
                await asyncio.sleep(0)
            else:
                # The coroutine's own await marked the future as blocking; awaiting it here
                # must start from an unmarked future, as a Task's step would have left it.
                yielded._asyncio_future_blocking = False
                await yielded
        except asyncio.CancelledError:
            if yielded is not None and yielded.cancelled():
                pass  # the awaited future itself was cancelled: the coroutine sees it below
            else:  # this task was cancelled: cancel what the coroutine waits on, unwind it
                if yielded is not None:
                    yielded.cancel()
                try:
                    coro.throw(asyncio.CancelledError())
                except (StopIteration, asyncio.CancelledError):
                    pass
                raise
        except BaseException:  # noqa: BLE001 - the future's error reaches the coroutine
            pass
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value


async def fast_wait_first(self: Consumer, *coros: Any, timeout: Any = None) -> Any:
    """`Service.wait_first` with an inline first step for the fetch loop's record delivery."""
    if (len(coros) == 2 and timeout is None and asyncio.iscoroutine(coros[0])
            and not self.suspend_flow.is_set()):
        delivery, suspended = coros
        try:
            yielded = delivery.send(None)
        except StopIteration:
            if asyncio.iscoroutine(suspended):
                suspended.close()
            return None  # `_drain_messages` does not read the result
        return await Service.wait_first(self, resume(delivery, yielded), suspended)
    return await Service.wait_first(self, *coros, timeout=timeout)


# --- the changelog buffer -----------------------------------------------------------------
# A table write puts its changelog record in Faust's `ProducerBuffer`; a background task sends
# them one at a time and sets an event per record, and `flush_atmost(n)` waits on that event
# with an `asyncio.wait_for` per record. A batch of 500 events writes a few thousand records:
# the stream then waited in `wait_until_ebb` (buffer over 100 records, a warning logged per
# wait) while thousands of wait_for timers were made and cancelled. Here the sending task
# counts what it sent and a flush waits per wake-up, not per record, and the stream's
# threshold is the size of a few batches.

BUFFER_MAX_MESSAGES = 10_000


async def _handle_pending(self: ProducerBuffer) -> None:
    get_pending, send_pending = self.pending.get, self._send_pending
    while not self.should_stop:
        msg = await get_pending()
        self._choreo_taken = getattr(self, "_choreo_taken", 0) + 1
        await send_pending(msg)
        self._choreo_sent = getattr(self, "_choreo_sent", 0) + 1
        self.message_sent.set()


async def _flush_atmost(self: ProducerBuffer, max_messages: int | None) -> int:
    """Wait until the buffer is empty or `max_messages` were sent; how many were sent."""
    start = getattr(self, "_choreo_sent", 0)
    while True:
        if self.state != "running" and self.size:
            raise RuntimeError("Cannot flush: Producer not Running")
        sent = getattr(self, "_choreo_sent", 0) - start
        if self.size == 0 or (max_messages is not None and sent >= max_messages):
            return sent
        self.message_sent.clear()
        try:
            await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
        except TimeoutError:
            return getattr(self, "_choreo_sent", 0) - start


# --- the producer look-up per send ----------------------------------------------------------
# Every `Topic.publish_message` (each action, each changelog record) first awaits
# `app.maybe_start_producer()`, which mode's `@stampede` wrapper opens with
# `await asyncio.sleep(0)`: one trip round the event loop per record, even when the producer
# has long been running. The changelog sender sends one record per trip, so while the stream
# worked it managed 350-450 records/s and its buffer grew to 15,000 records (the e-commerce
# bench: 4,000-5,500/s once the stream paused). A running producer is returned at once here.


async def _get_producer(self: Topic) -> Any:
    app = self.app
    if not app.in_transaction:
        producer = app.producer
        started = getattr(producer, "_started", None)
        if started is not None and started.is_set():
            return producer
    return await app.maybe_start_producer()


FLUSH_STALL_SECONDS = 30.0


async def _flush(self: ProducerBuffer) -> None:
    """Wait until every record buffered before this call was handed to the producer.

    Faust's consumer flushes the producer before each offset commit (`_commit_offsets`), and
    its own flush waits for an *empty* buffer: while the stream keeps writing, that lasts until
    the stream stops, and the fetch loop stops behind the commit (`commit_every`). In the
    e-commerce bench commits took 2-7 s and actions 2.4 s at p99. What the commit needs is
    the records of the events it commits, which were buffered before it began; like Kafka's
    `Producer.flush`, this waits for those. A buffer that sends nothing for
    FLUSH_STALL_SECONDS gives up with a warning (Faust's gave up after 0.1 s).
    """
    target = getattr(self, "_choreo_taken", 0) + self.size
    waited = 0.0
    while getattr(self, "_choreo_sent", 0) < target:
        if self.state != "running":
            if self.size:
                raise RuntimeError("Cannot flush: Producer not Running")
            return
        before = getattr(self, "_choreo_sent", 0)
        self.message_sent.clear()
        try:
            await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
        except TimeoutError:
            pass
        waited = 0.0 if getattr(self, "_choreo_sent", 0) != before else waited + 0.1
        if waited >= FLUSH_STALL_SECONDS:
            log.warning("changelog buffer sent nothing for %.0f s; %d records still buffered",
                        waited, self.size)
            return


# --- the fetch wait ---------------------------------------------------------------------------
# Faust builds its worker consumer with `fetch_max_wait_ms=1500` (not a setting). aiokafka keeps
# one fetch in flight per broker and leaves out of it every partition whose records the
# application has not taken yet. When the streams fall behind for a moment (a deadline batch on
# the timer), the fetch goes out for the quiet partitions only (the rekeyed topic, say), and the
# broker holds it the full 1.5 s; records arriving meanwhile on the busy partitions wait for it.
# In the bench that was every second above 1 s in the patterns-10 latency (p99 1.6 s at half
# load, batches starting 1.5 s after their records arrived), and probably stock Faust's p50 of
# 1.6 s in the same run.

FETCH_WAIT_ATTR = "choreo_fetch_max_wait"  # seconds, set on the app by create_app


def install_fetch_wait() -> bool:
    """Make Faust's worker consumer use the app's `choreo_fetch_max_wait`; False if this Faust
    has no consumer factory to wrap."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread.__dict__.get("_create_worker_consumer")
    if original is None:
        log.warning("faust has no _create_worker_consumer; the fetch wait stays at Faust's")
        return False
    if getattr(original, FETCH_WAIT_ATTR, False):
        return True

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        wait = getattr(self.app, FETCH_WAIT_ATTR, None)
        if wait is not None and hasattr(consumer, "_fetch_max_wait_ms"):
            consumer._fetch_max_wait_ms = max(1, round(wait * 1000))
        return consumer

    setattr(_create_worker_consumer, FETCH_WAIT_ATTR, True)
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore
    return True


def install() -> bool:
    """Patch `Consumer.wait_first` and the changelog buffer once; False if this Faust's
    consumer is not the one known."""
    if getattr(Consumer, _PATCHED, False):
        return True
    if Consumer.wait_first is not Service.wait_first or not hasattr(Consumer, "_drain_messages"):
        log.warning("faust consumer differs from the one the fast path was written for; "
                    "left as it is")
        return False
    Consumer.wait_first = fast_wait_first  # type: ignore[method-assign]
    if "_get_producer" in Topic.__dict__:
        Topic._get_producer = _get_producer  # type: ignore[method-assign]
    else:
        log.warning("faust topic has no _get_producer; producer look-up left as it is")
    if isinstance(ProducerBuffer.__dict__.get("_handle_pending"), ServiceTask):
        ProducerBuffer._handle_pending = ServiceTask(_handle_pending)  # type: ignore[assignment]
        ProducerBuffer.flush_atmost = _flush_atmost  # type: ignore[method-assign]
        ProducerBuffer.flush = _flush  # type: ignore[method-assign]
        ProducerBuffer.max_messages = BUFFER_MAX_MESSAGES
    else:
        log.warning("faust producer buffer differs from the one known; left as it is")
    setattr(Consumer, _PATCHED, True)
    return True


def quiet_library_loggers(level: int | str) -> None:
    """Keep aiokafka's, Faust's and mode's loggers at `level` (a number or a name) or above.

    aiokafka logs every send at debug level (`Sending (key=... value=...)`); when the worker's
    logging leaves those loggers enabled for debug, each send builds a log record: 9% of a
    pass-through's time in a profile.
    """
    if isinstance(level, str):
        named = logging.getLevelName(level.upper())
        level = named if isinstance(named, int) else logging.INFO
    for name in ("aiokafka", "faust", "mode"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < level:
            logger.setLevel(level)
