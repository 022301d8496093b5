"""CPU of the orchestrator's framework per request: the edges' hot routes against FastAPI's.

The orchestrator's ASGI app is driven in this process, with no server and no socket, so what
is measured is the app's own work: a site's long poll that finds nothing (``GET /tasks/next
?wait=0``, answered 204), once through the app as it serves (``routes.hot.HotRoutes`` takes
it) and once through the same app without ``HotRoutes`` (FastAPI's route matching and
dependency solving; ``tests.support.without_hot_routes``), alternating blocks of
``--requests`` requests, ``--reps`` times each; the figures are the medians of the process's
user and system CPU per request.

``python bench/hot_routes.py [--requests 2000] [--reps 5] [--output FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers

from oncofed.orchestrator import Settings, create_app, identity
from oncofed.orchestrator.db import make_engine, session_factory
from oncofed.orchestrator.setup import initialise
from oncofed.wire.messages import API_PREFIX
from tests.support import without_hot_routes

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-hot-routes.json"
Call = Callable[[], Awaitable[int]]


def enrolled_site(home: Path) -> str:
    """A new orchestrator state in ``home`` with one enrolled site; its credential."""
    initialise(home, None)
    engine = make_engine(Settings.load(home).url)
    try:
        with session_factory(engine).begin() as session:
            created = identity.create_site(session, "alpha")
            return identity.enrol(session, created.enrolment_token).credential
    finally:
        engine.dispose()


def poll(app: ASGIApp, credential: str) -> Call:
    """One long poll that asks not to wait, as an edge sends it."""
    path = f"{API_PREFIX}/tasks/next"
    headers = [(b"authorization", f"Bearer {credential}".encode()), (b"host", b"bench")]

    async def call() -> int:
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"wait=0",
            "headers": headers, "client": ("127.0.0.1", 40000), "server": ("bench", 80),
            "root_path": "",
        }  # fmt: skip
        started: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(message)

        await app(scope, receive, send)
        return int(started[0]["status"])

    return call


async def cpu_per_request(call: Call, requests: int) -> float:
    """Seconds of this process's CPU per request, over ``requests`` in a row."""
    began = time.process_time()
    for _ in range(requests):
        if (status := await call()) != 204:
            raise RuntimeError(f"the poll was answered {status}, not 204")
    return (time.process_time() - began) / requests


async def measure(app: FastAPI, credential: str, requests: int, reps: int) -> dict[str, float]:
    ways = {"hot": poll(app, credential), "fastapi": poll(without_hot_routes(app), credential)}
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for call in ways.values():  # warm up both
        await cpu_per_request(call, 50)
    for _ in range(reps):
        for name, call in ways.items():
            samples[name].append(await cpu_per_request(call, requests))
    return {name: statistics.median(values) for name, values in samples.items()}


async def with_lifespan(app: FastAPI, work: Callable[[], Awaitable[Any]]) -> Any:
    """``work()`` while the app is started (its lifespan run as a server runs it)."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    life = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    if (started := await outbox.get())["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {started}")
    try:
        return await work()
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await life


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oncofed-hot-") as folder:
        home = Path(folder) / "orchestrator"
        credential = enrolled_site(home)
        app = create_app(Settings.load(home))
        figures = asyncio.run(
            with_lifespan(app, lambda: measure(app, credential, args.requests, args.reps))
        )
    for name, seconds in figures.items():
        print(f"{name:>8}: {seconds * 1e3:.3f} ms of CPU per poll that finds nothing")
    print(f"   ratio: {figures['hot'] / figures['fastapi']:.2f}")
    args.output.write_text(json.dumps({"cpu_per_poll_s": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
