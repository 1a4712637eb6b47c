"""Heavy web views stay off the event loop: drawn or digested in a worker thread, shared by
concurrent requests, and drawn again only when their inputs change."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson

import streams.ui
import streams.views
from choreo.app import Runtime


def view(runtime: Runtime, path: str) -> Any:
    return runtime.app.web.views[path]


def test_graph_svg_is_drawn_in_a_thread_once_for_concurrent_requests(runtime, monkeypatch):
    drawn_in: list[threading.Thread] = []
    real = streams.ui.render_svg

    def spy(*args: Any) -> str:
        drawn_in.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(streams.ui, "render_svg", spy)
    graph = view(runtime, "/ui/graph.svg")

    async def requests(n: int) -> list[bytes]:
        return [r.body for r in await asyncio.gather(*(graph.get(None) for _ in range(n)))]

    first = asyncio.run(requests(10))
    assert len(set(first)) == 1 and first[0].startswith(b"<svg")
    # Ten requests, nothing changed: drawn once, and not on the event loop's thread.
    assert len(drawn_in) == 1 and drawn_in[0] is not threading.main_thread()
    pattern = runtime.choreography.patterns[0].id
    runtime.stats.fired[pattern] += 3  # a count on the picture changes: drawn again
    [again] = asyncio.run(requests(1))
    assert len(drawn_in) == 2 and again != first[0]


def test_state_digest_is_computed_in_a_thread(runtime, monkeypatch):
    computed_in: list[threading.Thread] = []

    def digest(rt: Runtime) -> dict:
        computed_in.append(threading.current_thread())
        return {"tables": {"t": {"entries": 0, "sha256": "x"}}, "partitions": []}

    monkeypatch.setattr(streams.views, "state_digest", digest)
    response = asyncio.run(view(runtime, "/state/digest/").get(None))
    assert orjson.loads(response.body)["tables"] == {"t": {"entries": 0, "sha256": "x"}}
    assert computed_in and computed_in[0] is not threading.main_thread()


def test_a_digest_of_tables_that_keep_changing_is_a_503_not_a_crash(runtime, monkeypatch):
    def changing(rt: Runtime) -> dict:
        raise RuntimeError("dictionary changed size during iteration")

    monkeypatch.setattr(streams.views, "state_digest", changing)
    response = asyncio.run(view(runtime, "/state/digest/").get(None))
    assert response.status == 503
    assert "try again" in orjson.loads(response.body)["error"]
