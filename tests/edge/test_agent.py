"""The agent loop against a scripted orchestrator: retries with backoff, posts, egress log."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from oncofed.edge import Agent, EdgeConfig, EdgeHome, LocalStore
from oncofed.wire.messages import TaskAssignment
from tests.support import make_spec


@pytest.fixture
def home(tmp_path: Path) -> EdgeHome:
    edge = EdgeHome(tmp_path / "edge")
    edge.create(EdgeConfig.model_validate({"orchestrator": "http://orch.test", "site": "a"}), "c")
    rng = np.random.default_rng(1)
    csv = tmp_path / "d.csv"
    frame = {"x1": rng.normal(size=60), "x2": rng.normal(size=60), "y": rng.integers(0, 2, 60)}
    pd.DataFrame(frame).to_csv(csv, index=False)
    LocalStore(edge.datasets).add("data", csv)
    return edge


def stats_task(**spec: object) -> TaskAssignment:
    return TaskAssignment(task_id="t1", job_id="j1", round=0, kind="stats", spec=make_spec(**spec))


class Script:
    """An orchestrator that fails ``outages`` polls, then hands out one task once."""

    def __init__(self, task: TaskAssignment, outages: int) -> None:
        self.task, self.outages = task, outages
        self.posts: list[tuple[str, dict[str, object]]] = []
        self.auth: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.auth.add(request.headers["Authorization"])
        if request.url.path == "/v1/tasks/next":
            if self.outages:
                self.outages -= 1
                raise httpx.ConnectError("connection refused", request=request)
            if self.task is None:
                return httpx.Response(204)
            task, self.task = self.task, None
            return httpx.Response(200, content=task.model_dump_json())
        self.posts.append((request.url.path, json.loads(request.content)))
        status = "declined" if request.url.path.endswith("decline") else "accepted"
        return httpx.Response(200, json={"task_id": "t1", "status": status, "detail": ""})


def test_agent_retries_until_reachable_then_posts_and_logs_egress(home: EdgeHome) -> None:
    script = Script(stats_task(), outages=3)
    agent = Agent(home, backoff=(0.001, 0.01), transport=httpx.MockTransport(script))
    assert agent.run(max_tasks=1) == 1
    assert script.auth == {"Bearer c"}
    [(path, body)] = script.posts
    assert path == "/v1/tasks/t1/result" and body["n"] == 45 and len(body["sums"]) == 2
    [entry] = [json.loads(line) for line in home.egress_log.read_text().splitlines()]
    assert entry["task"] == "t1" and entry["kind"] == "stats" and entry["json"] == body
    assert entry["bytes"] > 0 and len(entry["sha256"]) == 64


def test_agent_declines_what_its_policy_forbids(home: EdgeHome) -> None:
    script = Script(stats_task(model={"type": "mlp"}, rounds=5000), outages=0)
    agent = Agent(home, transport=httpx.MockTransport(script))
    agent.run(max_tasks=1)
    [(path, body)] = script.posts
    assert path == "/v1/tasks/t1/decline" and "max_rounds" in str(body["reason"])


def test_a_task_the_edge_cannot_read_is_declined_not_fatal(home: EdgeHome) -> None:
    stop = threading.Event()
    declined: list[str] = []

    def orchestrator(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/tasks/next":
            return httpx.Response(200, json={"task_id": "t9", "from_the_future": True})
        declined.append(request.url.path)
        stop.set()
        return httpx.Response(200, json={"task_id": "t9", "status": "declined"})

    Agent(home, transport=httpx.MockTransport(orchestrator)).run(stop)
    assert declined == ["/v1/tasks/t9/decline"]
