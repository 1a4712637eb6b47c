"""The fetch loop's fast path delivers a record inline when it can, and as Faust did when not."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from mode import Service

from choreo import faust_fastpath
from choreo.faust_fastpath import fast_wait_first, quiet_library_loggers


class FakeConsumer(Service):
    """Just what `fast_wait_first` reads: a service with a suspend-flow event."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()


@pytest.mark.asyncio
async def test_delivery_that_does_not_suspend_runs_inline_without_tasks() -> None:
    consumer = FakeConsumer()
    delivered = []

    async def deliver(x: int) -> None:
        delivered.append(x)

    before = len(asyncio.all_tasks())
    for i in range(100):
        await fast_wait_first(consumer, deliver(i), consumer.suspend_flow.wait())
    assert delivered == list(range(100))
    assert len(asyncio.all_tasks()) == before


@pytest.mark.asyncio
async def test_delivery_blocked_on_a_full_buffer_finishes_when_room_is_made() -> None:
    consumer = FakeConsumer()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    await queue.put(0)  # full

    async def drain_later() -> None:
        await asyncio.sleep(0.05)
        assert await queue.get() == 0

    drainer = asyncio.ensure_future(drain_later())
    await fast_wait_first(consumer, queue.put(1), consumer.suspend_flow.wait())
    await drainer
    assert queue.get_nowait() == 1


@pytest.mark.asyncio
async def test_blocked_delivery_gives_way_when_the_flow_is_suspended() -> None:
    consumer = FakeConsumer()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    await queue.put(0)

    async def suspend_later() -> None:
        await asyncio.sleep(0.05)
        consumer.suspend_flow.set()

    suspender = asyncio.ensure_future(suspend_later())
    await asyncio.wait_for(
        fast_wait_first(consumer, queue.put(1), consumer.suspend_flow.wait()), timeout=30)
    await suspender
    # the blocked put was cancelled, not left behind to add the record later
    await asyncio.sleep(0.01)
    assert queue.qsize() == 1 and queue.get_nowait() == 0


@pytest.mark.asyncio
async def test_errors_of_a_suspended_delivery_reach_the_caller() -> None:
    consumer = FakeConsumer()

    async def deliver() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        await fast_wait_first(consumer, deliver(), consumer.suspend_flow.wait())


@pytest.mark.asyncio
async def test_a_future_that_fails_is_raised_inside_the_delivery() -> None:
    consumer = FakeConsumer()
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen = []

    async def deliver() -> None:
        try:
            await fut
        except KeyError as exc:
            seen.append(exc)

    asyncio.get_running_loop().call_later(0.01, fut.set_exception, KeyError("k"))
    await fast_wait_first(consumer, deliver(), consumer.suspend_flow.wait())
    assert len(seen) == 1


def test_install_is_idempotent_and_patches_the_consumer() -> None:
    from faust.transport.consumer import Consumer

    assert faust_fastpath.install() is True
    assert faust_fastpath.install() is True
    assert Consumer.wait_first is fast_wait_first


def test_library_loggers_are_raised_to_the_worker_level() -> None:
    logger = logging.getLogger("aiokafka")
    old = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        quiet_library_loggers("warn")
        assert not logger.isEnabledFor(logging.DEBUG)
        assert logger.isEnabledFor(logging.WARNING) and not logger.isEnabledFor(logging.INFO)
        quiet_library_loggers("nonsense")  # unknown names mean info; never lowers a level
        assert logger.getEffectiveLevel() == logging.WARNING
    finally:
        logger.setLevel(old)


class _Conf:
    producer_threaded = False


class _App:
    conf = _Conf()


async def started_buffer(send):  # noqa: ANN001, ANN201 - test helper
    """A patched changelog buffer, started, that hands each record to `send`."""
    from faust.transport.producer import ProducerBuffer

    faust_fastpath.install()
    buffer = ProducerBuffer()
    buffer.app = _App()
    buffer._send_pending = send  # type: ignore[method-assign]
    await buffer.start()
    return buffer


@pytest.mark.asyncio
async def test_changelog_buffer_sends_everything_in_order_and_flush_waits_for_it() -> None:
    sent: list[int] = []

    async def send(fut: int) -> None:  # the producer: sometimes it has to wait
        if fut % 7 == 0:
            await asyncio.sleep(0)
        sent.append(fut)

    buffer = await started_buffer(send)
    try:
        for i in range(2_000):
            buffer.put(i)  # type: ignore[arg-type]
        assert buffer.size == 2_000
        assert await buffer.flush_atmost(100) >= 100  # the stream's wait: some, not all
        await buffer.flush()
        assert buffer.size == 0
        assert sent == list(range(2_000))
        assert await buffer.flush_atmost(10) == 0  # nothing pending: returns at once
    finally:
        await buffer.stop()


@pytest.mark.asyncio
async def test_flush_waits_for_what_was_buffered_not_for_a_buffer_that_never_empties() -> None:
    # Faust flushes before each offset commit; its own flush waited for an empty buffer, so
    # while the stream kept writing the commit (and the fetch loop behind it) waited seconds.
    sent: list[int] = []

    async def send(fut: int) -> None:
        await asyncio.sleep(0)
        sent.append(fut)

    buffer = await started_buffer(send)
    writing = True

    async def stream() -> None:  # keeps the buffer from ever being empty
        i = 1_000
        while writing:
            buffer.put(i)  # type: ignore[arg-type]
            buffer.put(i + 1)  # type: ignore[arg-type]
            i += 2
            await asyncio.sleep(0)

    try:
        for i in range(1_000):
            buffer.put(i)  # type: ignore[arg-type]
        writer = asyncio.create_task(stream())
        flush = asyncio.create_task(buffer.flush())
        done, _ = await asyncio.wait([flush], timeout=10)
        assert flush in done, "flush still waiting while the stream writes"
        assert sent[:1_000] == list(range(1_000))  # everything buffered before the call
        assert buffer.size > 0  # and the stream's later records did not hold it up
    finally:
        writing = False
        await writer
        await flush
        await buffer.flush()
        await buffer.stop()
    assert sent == sorted(sent) and buffer.size == 0


class _Started:
    def __init__(self, started: bool) -> None:
        self._started = asyncio.Event()
        if started:
            self._started.set()


class _ProducerApp:
    in_transaction = False

    def __init__(self, started: bool) -> None:
        self.producer = _Started(started)
        self.slow_calls = 0

    async def maybe_start_producer(self) -> object:  # Faust's: @stampede, a loop trip a call
        self.slow_calls += 1
        await asyncio.sleep(0)
        return self.producer


def test_a_running_producer_is_found_without_a_trip_round_the_loop() -> None:
    # Faust's look-up made every send (each action and changelog record) wait for a turn of
    # the event loop; the changelog sender then managed 350-450 records/s under load.
    from faust.topics import Topic

    faust_fastpath.install()
    running = _ProducerApp(started=True)
    step = Topic._get_producer(SimpleNamespace(app=running))  # type: ignore[arg-type]
    with pytest.raises(StopIteration) as finished:  # done in one step: it never suspended
        step.send(None)
    assert finished.value.value is running.producer and running.slow_calls == 0

    starting = _ProducerApp(started=False)  # not started yet: Faust's own way, which starts it
    found = asyncio.run(Topic._get_producer(SimpleNamespace(app=starting)))  # type: ignore[arg-type]
    assert found is starting.producer
    assert starting.slow_calls == 1


@pytest.mark.asyncio
async def test_worker_consumer_takes_the_fetch_wait_from_settings(tmp_path) -> None:
    """Faust builds its consumer with a fixed 1.5 s fetch wait; the setting replaces it."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from choreo.app import create_app
    from choreo.settings import Settings

    config = tmp_path / "choreo.toml"
    config.write_text('[[patterns]]\nid = "p"\nkind = "event"\non = "a.b"\n'
                      'action = "x"\ncapability = "c"\n')
    settings = Settings.from_env({"CHOREO_CONFIG": str(config), "CHOREO_DATA_DIR":
                                  str(tmp_path / "data"), "CHOREO_FETCH_MAX_WAIT": "0.05"})
    app = create_app(settings).app
    thread = app.consumer._thread
    assert isinstance(thread, AIOKafkaConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 50
    finally:
        await consumer.stop()
    original = AIOKafkaConsumerThread._create_worker_consumer.__closure__
    assert original is not None  # the patch wraps Faust's factory, which says 1.5 s
    faust_made = next(c.cell_contents for c in original
                      if callable(c.cell_contents))(thread, app.transport)
    try:
        assert faust_made._fetch_max_wait_ms == 1500
    finally:
        await faust_made.stop()
