"""Chaos helpers for ``tests/test_chaos.py``: a seeded fault-injecting HTTP proxy between the
edges and the orchestrator, a ``LocalFederation`` whose edges dial that proxy and whose
processes can be killed, and a site that answers every task with malformed numbers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from oncofed.demo.federation import LocalFederation
from oncofed.edge import EdgeHome
from oncofed.edge.approvals import ProjectDecision
from oncofed.edge.enrol import enrol
from oncofed.edge.governance import send_decision
from oncofed.edge.importing import Source
from oncofed.learning.registry import parameter_shapes
from oncofed.orchestrator import setup as state
from oncofed.wire import tensors
from oncofed.wire.messages import SHA256_HEADER, TaskAssignment, TrainResult
from oncofed.wire.projects import ProjectPublic
from oncofed.wire.spec import JobSpec

FAULTS = ("drop", "delay", "cut_request", "cut_response")
"""What the proxy does to one exchange: close the connection instead of forwarding the
request; hold the request a while; forward part of the request, then close; forward the
request but only part of the response, then close."""
UPDATE_PATH = re.compile(rb"^POST /v1/tasks/[0-9A-Za-z_-]+/update[ ?]")
EXCHANGE_TIMEOUT_S = 120.0
"""Longest the proxy waits for the orchestrator's answer (long polls are far shorter)."""


class _Closed(Exception):
    """One side of the connection closed mid-message."""


@dataclass
class _Message:
    head: bytes  # start line and headers, with the blank line
    body: bytes  # decoded (chunked framing removed)
    raw: bytes  # exactly the bytes read, framing included

    @property
    def close(self) -> bool:
        return b"\r\nconnection: close" in self.head.lower()


async def _read_message(reader: asyncio.StreamReader, *, response_to: bytes = b"") -> _Message:
    """One HTTP/1.1 message; ``response_to`` is the request's method for a response."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
        raise _Closed from exc
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip().lower()
    status = lines[0].split(" ")[1] if response_to else ""
    try:
        if response_to == b"HEAD" or status in ("204", "304") or status.startswith("1"):
            return _Message(head, b"", head)
        if "content-length" in fields:
            body = await reader.readexactly(int(fields["content-length"]))
            return _Message(head, body, head + body)
        if fields.get("transfer-encoding") == "chunked":
            decoded, framed = bytearray(), bytearray(head)
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                framed += size_line + chunk
                decoded += chunk[:-2]
                if size == 0:
                    return _Message(head, bytes(decoded), bytes(framed))
        if not response_to:  # a request without a body
            return _Message(head, b"", head)
        body = await reader.read()  # a response delimited by the connection's end
        return _Message(head, body, head + body)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
        raise _Closed from exc


class FaultProxy:
    """A TCP proxy on 127.0.0.1 that reads each HTTP/1.1 request and its response whole and,
    while ``faulty``, spoils one exchange in every few (``every``): the kinds of ``FAULTS`` in
    turn, shuffled each cycle by ``random.Random(seed)``. Every update body posted through it is
    kept (``updates``, by SHA-256), whether or not it reached the orchestrator."""

    def __init__(
        self, upstream_port: int, seed: int, *, every: tuple[int, int] = (3, 8), delay_s: float = 2
    ) -> None:
        self.upstream_port = upstream_port
        self.faulty = False
        self.faults: Counter[str] = Counter()
        self.exchanges = 0
        self.updates: dict[str, bytes] = {}
        self.held: set[str] = set()  # Authorization header values whose requests wait
        self._rng = random.Random(seed)
        self._every, self._delay_s = every, delay_s
        self._countdown = self._rng.randint(*every)
        self._queue: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Close the listening socket and every connection; end the thread and its loop."""
        if self._thread.is_alive():

            async def shut() -> None:
                if self._server is not None:
                    self._server.close()
                for handler in list(self._handlers):
                    handler.cancel()
                await asyncio.gather(*self._handlers, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def _next_fault(self) -> str | None:
        """The fault for the next exchange, if any (only ever called on the proxy's loop)."""
        if not self.faulty:
            return None
        self._countdown -= 1
        if self._countdown > 0:
            return None
        self._countdown = self._rng.randint(*self._every)
        if not self._queue:
            self._queue = self._rng.sample(FAULTS, len(FAULTS))
        fault = self._queue.pop()
        self.faults[fault] += 1
        return fault

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while await self._exchange(client_r, client_w):
                pass
        except (OSError, _Closed, TimeoutError):
            pass  # the orchestrator is down, or a side hung up: the client sees a cut
        finally:
            client_w.close()
            self._handlers.discard(handler)

    async def _exchange(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> bool:
        """Relay one request and its response over a connection of its own to the
        orchestrator (so an idle one it closed is never reused); False: close the client's."""
        request = await _read_message(client_r)
        self.exchanges += 1
        if UPDATE_PATH.match(request.head):
            self.updates[hashlib.sha256(request.body).hexdigest()] = request.body
        while _authorization(request.head) in self.held:
            await asyncio.sleep(0.05)
        fault = self._next_fault()
        if fault == "drop":
            return False
        if fault == "delay":
            await asyncio.sleep(self._rng.uniform(0.1, self._delay_s))
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            if fault == "cut_request":
                upstream_w.write(request.raw[: self._rng.randrange(1, len(request.raw))])
                await upstream_w.drain()
                return False
            upstream_w.write(request.raw)
            await upstream_w.drain()
            method = request.head.split(b" ", 1)[0]
            response = await asyncio.wait_for(
                _read_message(upstream_r, response_to=method), EXCHANGE_TIMEOUT_S
            )
        finally:
            upstream_w.close()
        if fault == "cut_response":
            client_w.write(response.raw[: self._rng.randrange(1, len(response.raw))])
            await client_w.drain()
            return False
        client_w.write(response.raw)
        await client_w.drain()
        return not (request.close or response.close)


def _authorization(head: bytes) -> str:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "authorization":
            return value.strip()
    return ""


class ChaosFederation(LocalFederation):
    """A ``LocalFederation`` on SQLite or PostgreSQL (``database_url``) whose edges are
    enrolled with, and so dial, a ``FaultProxy`` in front of the orchestrator; the test's own
    client talks to the orchestrator directly. Its processes can be killed (SIGKILL)."""

    def __init__(
        self,
        root: Path,
        site_data: Mapping[str, Source],
        *,
        database_url: str | None = None,
        proxy_seed: int = 0,
    ) -> None:
        super().__init__(root, site_data)
        self.database_url = database_url
        self.proxy = FaultProxy(self.port, proxy_seed)

    def start(self) -> None:
        """``LocalFederation.start`` with the database URL, the edges enrolled via the proxy."""
        self.proxy.start()
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = state.initialise(self.state_dir, self.database_url)
        self.start_orchestrator()
        for site in self.site_data:
            created = state.add_site(self.state_dir, site)
            enrol(EdgeHome(self.edge_dir(site)), self.proxy.url, created.enrolment_token)
        self.import_data()
        self.approve(self.project)
        for site in self.site_data:
            self.start_edge(site)

    def stop(self) -> None:
        """Kill every process (SIGKILL: a graceful stop waits out the long polls, ~10 s),
        then close the proxy."""
        try:
            for process in [*self.edges.values(), self.orchestrator]:
                if process is not None:
                    process.kill()
                    process.wait(30)
            super().stop()
        finally:
            self.proxy.stop()

    def enrol_site(self, name: str) -> str:
        """A new enrolled site with no edge process, which approved the federation's
        project; its credential."""
        created = state.add_site(self.state_dir, name)
        home = EdgeHome(self.root / "rogue" / name)
        enrol(home, self.url, created.enrolment_token)
        with home.orchestrator_client() as http:
            shown = http.get(f"/site/projects/{self.project.name}")
            project = ProjectPublic.model_validate_json(shown.raise_for_status().content)
            decision = ProjectDecision(
                approved=True,
                decided=datetime.now(UTC),
                scope_sha256=project.scope_sha256,
                dataset=self.dataset,
                scope=project.scope,
            )
            send_decision(http, project.name, decision, "0" * 12)
        return home.credential()

    @contextlib.contextmanager
    def holding(self, site: str) -> Iterator[None]:
        """Every request of ``site``'s edge waits in the proxy until the block ends."""
        held = f"Bearer {EdgeHome(self.edge_dir(site)).credential()}"
        self.proxy.held.add(held)
        try:
            yield
        finally:
            self.proxy.held.discard(held)

    def kill_edge(self, site: str) -> None:
        process = self.edges[site]
        process.kill()
        process.wait(30)

    def kill_orchestrator(self) -> None:
        assert self.orchestrator is not None
        self.orchestrator.kill()
        self.orchestrator.wait(30)
        self.orchestrator = None

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of a process's log (``orchestrator``, ``edge-north``), for failure messages."""
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# -- a site that answers every task with malformed numbers --------------------------------


Attack = Callable[[TaskAssignment], tuple[str, bytes]]
"""Makes a malformed answer for a task: the endpoint's last part and the body."""


def _job(task: TaskAssignment) -> JobSpec:
    assert isinstance(task.spec, JobSpec)
    return task.spec


def _meta(task: TaskAssignment, **changes: Any) -> TrainResult:
    values: dict[str, Any] = {
        "task_id": task.task_id,
        "n_train": 50,
        "train_loss": 0.5,
        "evaluation": {"n_eval": 17, "metrics": {"auc": 0.6}},
        "compute_seconds": 0.1,
    }
    return TrainResult.model_validate({**values, **changes})


def _filled(task: TaskAssignment, value: float) -> dict[str, np.ndarray]:
    spec = _job(task)
    shapes = parameter_shapes(spec.model, spec.n_inputs)
    return {name: np.full(shape, value, dtype=np.float32) for name, shape in shapes.items()}


def _update(weights: Mapping[str, np.ndarray], meta: TrainResult) -> tuple[str, bytes]:
    return "update", tensors.encode(weights, meta)


def _halved(body: bytes) -> bytes:
    return body[: len(body) // 2]


def _json(document: object) -> tuple[str, bytes]:
    return "result", json.dumps(document).encode()  # allows NaN, as a careless site would


TRAIN_ATTACKS: dict[str, Attack] = {
    "nan weights": lambda t: _update(_filled(t, float("nan")), _meta(t)),
    "huge weights": lambda t: _update(_filled(t, 3e38), _meta(t)),
    "wrong shapes": lambda t: _update(
        {name: np.zeros((a.size + 1,), np.float32) for name, a in _filled(t, 0).items()}, _meta(t)
    ),
    "truncated safetensors": lambda t: ("update", _halved(_update(_filled(t, 0.1), _meta(t))[1])),
    "another task's header": lambda t: _update(_filled(t, 0.1), _meta(t, task_id="f" * 32)),
    "not safetensors": lambda t: ("update", b'{"weights": [1, 2, 3]}'),
}
RESULT_ATTACKS: dict[str, Attack] = {
    "bad json": lambda t: ("result", b'{"n": 40, "sums": [1.0,'),
    "nan": lambda t: _json({"n": 40, "sums": [float("nan")], "sumsq": [1.0]}),
    "huge count": lambda t: ("result", b'{"n": 1' + b"0" * 400 + b', "sums": [], "sumsq": []}'),
    "wrong type": lambda t: _json({"weights": [1, 2, 3]}),
    "impossible metrics": lambda t: _json(
        {"evaluation": {"n_eval": -3, "metrics": {"auc": 7.0}}, "compute_seconds": -1}
    ),
}


@dataclass
class Answer:
    """One malformed answer and what the orchestrator said to it."""

    task_id: str
    round: int
    kind: str
    attack: str
    status_code: int
    ack: dict[str, Any]


@dataclass
class Rogue:
    """A site run by the test: it long-polls like an edge (directly, without the proxy) and
    answers each task with the next malformed answer for its kind (each in turn, in an order
    ``seed`` shuffles). Before each training answer it posts a body whose SHA-256 header lies
    (refused, not recorded)."""

    url: str
    credential: str
    seed: int
    answers: list[Answer] = field(default_factory=list)
    lies_refused: list[int] = field(default_factory=list)  # status codes of the lying posts
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _turns: dict[bool, list[str]] = field(default_factory=dict)  # attacks left, by training

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rogue", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        headers = {"Authorization": f"Bearer {self.credential}"}
        with httpx.Client(base_url=f"{self.url}/v1", headers=headers, timeout=30) as http:
            while not self._stop.is_set():
                try:
                    response = self._retry(lambda: http.get("/tasks/next", params={"wait": 1}))
                    if response is None or response.status_code == 204:
                        continue
                    if response.status_code != 200:
                        self.errors.append(f"poll: HTTP {response.status_code} {response.text}")
                        self._stop.wait(0.5)
                        continue
                    self._answer(http, TaskAssignment.model_validate_json(response.content), rng)
                except Exception as exc:  # recorded for the test to report, never swallowed
                    self.errors.append(repr(exc))
                    self._stop.wait(0.5)

    def _answer(self, http: httpx.Client, task: TaskAssignment, rng: random.Random) -> None:
        attacks = TRAIN_ATTACKS if task.kind == "train" else RESULT_ATTACKS
        turn = self._turns.setdefault(task.kind == "train", [])
        if not turn:
            turn += rng.sample(sorted(attacks), len(attacks))
        name = turn.pop()
        endpoint, body = attacks[name](task)
        path = f"/tasks/{task.task_id}/{endpoint}"
        content_type = "application/json" if endpoint == "result" else "application/octet-stream"
        if task.kind == "train":
            lie = {"Content-Type": content_type, SHA256_HEADER: "0" * 64}
            lied = self._retry(lambda: http.post(path, content=body, headers=lie))
            if lied is not None:
                self.lies_refused.append(lied.status_code)
        sent = {"Content-Type": content_type, SHA256_HEADER: tensors.sha256(body)}
        response = self._retry(lambda: http.post(path, content=body, headers=sent))
        if response is None:
            return
        try:
            ack: dict[str, Any] = response.json()
        except ValueError:
            ack = {"raw": response.text}
        self.answers.append(
            Answer(task.task_id, task.round, task.kind, name, response.status_code, ack)
        )

    def _retry(self, call: Callable[[], httpx.Response]) -> httpx.Response | None:
        """``call`` until the orchestrator answers (it may be restarting); None when stopped."""
        while not self._stop.is_set():
            try:
                response = call()
            except httpx.TransportError:
                self._stop.wait(0.2)
                continue
            if response.status_code < 500:
                return response
            self._stop.wait(0.2)
        return None


@contextlib.contextmanager
def running(rogue: Rogue) -> Iterator[Rogue]:
    rogue.start()
    try:
        yield rogue
    finally:
        rogue.stop()
