"""A fault-injecting TCP proxy on asyncio, for putting a broken network under a worker.

There is no netem, iptables or toxiproxy on these machines, so the tests put this between a
worker and the broker (whose advertised listener is the proxy's port, see KAFKA_ADVERTISED_PORT
in scripts/kafka-local). It runs its own event loop in a thread; the test drives it with:

- `blackhole(True)`: no byte goes through in either direction and new connections are
  accepted but not connected upstream. Nothing is reset: as with packets dropped on a link,
  peers see silence until they time out. `blackhole(False)` delivers what was held, in order
  (TCP would retransmit it), to the connections still open.
- `latency(seconds)`: every chunk is delivered that much later, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field


@dataclass
class FaultProxy:
    listen_port: int
    target_port: int
    host: str = "127.0.0.1"
    connections: int = 0
    bytes_forwarded: int = 0
    _delay: float = 0.0
    _loop: asyncio.AbstractEventLoop | None = None
    _open: asyncio.Event | None = None
    _tasks: set = field(default_factory=set)

    # --- control, from the test's thread ---------------------------------------------------

    def start(self) -> FaultProxy:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def blackhole(self, on: bool) -> None:
        assert self._loop is not None and self._open is not None
        self._loop.call_soon_threadsafe(self._open.clear if on else self._open.set)

    def latency(self, seconds: float) -> None:
        self._delay = seconds

    # --- the loop ----------------------------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._open = asyncio.Event()
            self._open.set()
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._accept, self.host, self.listen_port,
                                                reuse_address=True)
            ready.set()
            async with server:
                await self._stop.wait()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run(main())

    def _spawn(self, coro) -> asyncio.Task:  # noqa: ANN001
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        assert self._open is not None
        try:
            await self._open.wait()  # a blackholed link does not reach the broker
            server_r, server_w = await asyncio.open_connection(self.host, self.target_port)
        except (OSError, asyncio.CancelledError):
            client_w.close()
            return
        up = self._spawn(self._pipe(client_r, server_w))
        down = self._spawn(self._pipe(server_r, client_w))
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = self._spawn(self._deliver(queue, writer))
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self._delay, chunk))
            await queue.join()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()

    async def _deliver(self, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        assert self._open is not None
        while True:
            due, chunk = await queue.get()
            with contextlib.suppress(Exception):
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await self._open.wait()
                writer.write(chunk)
                await writer.drain()
                self.bytes_forwarded += len(chunk)
            queue.task_done()
