"""The agent loop against a scripted orchestrator: retries with backoff, posts, egress log."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import event

from oncofed.cdm.tables import CdmData
from oncofed.edge import Agent, EdgeConfig, EdgeError, EdgeHome, LocalStore
from oncofed.edge import agent as agent_module
from oncofed.edge.guard import params_sha256
from oncofed.edge.ledger import LEDGER
from oncofed.edge.runner import TaskRunner
from oncofed.edge.store import PROFILE
from oncofed.learning.data import standardization
from oncofed.learning.registry import initial_weights
from oncofed.privacy.secagg import public_bytes
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisParams, AnalysisSpec
from oncofed.wire.messages import StatsResult, TaskAssignment
from oncofed.wire.profile import DataProfile
from tests.support import (
    TEST_PROJECT,
    approval_block,
    make_spec,
    sample_profile,
    save_columns,
)


@pytest.fixture
def home(tmp_path: Path) -> EdgeHome:
    return make_home(tmp_path / "edge")


def make_home(path: Path) -> EdgeHome:
    edge = EdgeHome(path)
    edge.create(EdgeConfig.model_validate({"orchestrator": "http://orch.test", "site": "a"}), "c")
    rng = np.random.default_rng(1)
    columns = {"x1": rng.normal(size=60), "x2": rng.normal(size=60), "y": rng.integers(0, 2, 60)}
    save_columns(edge.datasets, "data", columns)
    edge.policy_file.write_text(edge.policy_file.read_text() + APPROVED)
    return edge


ORCHESTRATOR_KEY = "ab" * 32
NEWTON = AnalysisSpec.model_validate(
    {"name": "a", "project": TEST_PROJECT, "dataset": "data",
     "analysis": {"type": "logistic", "outcome": {"type": "binary", "label": "ext.y"},
                  "covariates": ["ext.x1", "ext.x2"]}}
)  # fmt: skip
"""A logistic regression over the home's dataset: a Newton loop."""
APPROVED = "\n" + approval_block(make_spec(), NEWTON)
"""The site's approval of the test project, ending every policy these tests write."""
NEWTON_START = AnalysisParams(pooled=[0.0, 0.0, 0.0], own=[0.0, 0.0, 0.0])


def stats_task(**spec: object) -> TaskAssignment:
    return TaskAssignment(task_id="t1", job_id="j1", round=0, kind="stats", spec=make_spec(**spec))


class Script:
    """An orchestrator that fails ``outages`` polls, then hands out one task once."""

    def __init__(self, task: TaskAssignment | str | None, outages: int) -> None:
        """``task``: a message, or its JSON as an orchestrator may write it."""
        self.task, self.outages = task, outages
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.auth: set[str] = set()
        self.identities: list[str] = []
        self.fetched: list[str] = []
        self.posted = threading.Event()
        """Set by each post (a test may clear it)."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.auth.add(request.headers["Authorization"])
        if request.url.path == "/v1/identity":  # the site registers its key, pins ours
            if request.method == "PUT":
                self.identities.append(json.loads(request.content)["key"])
                return httpx.Response(204)
            return httpx.Response(200, json={"key": ORCHESTRATOR_KEY})
        if request.method == "PUT":  # the dataset's data quality report
            return httpx.Response(204)
        if request.url.path == "/v1/tasks/next":
            if self.outages:
                self.outages -= 1
                raise httpx.ConnectError("connection refused", request=request)
            if self.task is None:
                return httpx.Response(204)
            task, self.task = self.task, None
            return httpx.Response(
                200, content=task if isinstance(task, str) else task.model_dump_json()
            )
        if request.method == "GET":  # a blob: none is served
            self.fetched.append(request.url.path)
            return httpx.Response(404, json={"detail": "no such blob"})
        json_body = request.headers.get("Content-Type") == "application/json"
        body: dict[str, Any] = (
            json.loads(request.content) if json_body else {"bytes": len(request.content)}
        )
        self.posts.append((request.url.path, body))
        self.posted.set()
        status = "declined" if request.url.path.endswith("decline") else "accepted"
        return httpx.Response(200, json={"task_id": "t1", "status": status, "detail": ""})


def test_agent_retries_until_reachable_then_posts_and_logs_egress(home: EdgeHome) -> None:
    script = Script(stats_task(), outages=3)
    agent = Agent(home, backoff=(0.001, 0.01), transport=httpx.MockTransport(script))
    assert agent.run(max_tasks=1) == 1
    assert script.auth == {"Bearer c"}
    [(path, body)] = script.posts
    assert path == "/v1/tasks/t1/result" and body["n"] == 45 and len(body["sums"]) == 2
    entries = [json.loads(line) for line in home.egress_log.read_text().splitlines()]
    assert [e["kind"] for e in entries] == ["profile", "stats"]
    entry = entries[1]
    assert entry["task"] == "t1" and entry["kind"] == "stats" and entry["json"] == body
    assert entry["bytes"] > 0 and len(entry["sha256"]) == 64


def test_a_small_global_model_comes_with_its_task_and_is_checked_as_a_fetched_one(
    home: EdgeHome,
) -> None:
    """The orchestrator hands a small global model with its task (``TaskAssignment.model``):
    the site trains on it without asking for it, and checks it as it checks one it asked
    for; a hostile orchestrator's inline model far from the last one is refused, and one
    whose bytes are not ``model_sha256`` makes the task unreadable (declined)."""
    spec = make_spec()
    script = Script(stats_task(), outages=0)
    agent = Agent(home, transport=httpx.MockTransport(script))
    assert agent.run(max_tasks=1) == 1
    stats = StatsResult.model_validate(script.posts[-1][1])
    initial = initial_weights(spec.model, 2, spec.seed)

    def train(task_id: str, number: int, model: bytes, **fields: object) -> TaskAssignment:
        return TaskAssignment.model_validate(
            {"task_id": task_id, "job_id": "j1", "round": number, "kind": "train", "spec": spec,
             "model_sha256": tensors.sha256(model), "model": model, "pooled": stats,
             "standardization": standardization(stats), **fields}
        )  # fmt: skip

    script.task = train("t2", 1, tensors.encode(initial))
    assert agent.run(max_tasks=1) == 1
    assert script.posts[-1] == ("/v1/tasks/t2/update", {"bytes": script.posts[-1][1]["bytes"]})
    assert script.fetched == []  # nothing asked for: it came with the task
    trap = tensors.encode({name: w + 1000.0 for name, w in initial.items()})
    script.task = train("t3", 2, trap)
    assert agent.run(max_tasks=1) == 1
    path, body = script.posts[-1]
    assert path == "/v1/tasks/t3/decline" and "moved further from" in str(body["reason"])
    wrong = json.loads(train("t4", 3, tensors.encode(initial)).model_dump_json())
    wrong["model_sha256"] = tensors.sha256(trap)  # the model's bytes are another model's
    script.task, script.posted = json.dumps(wrong), threading.Event()
    assert agent.run(stop=script.posted) == 0  # unreadable: declined, not run
    path, body = script.posts[-1]
    assert path == "/v1/tasks/t4/decline" and "cannot read the task" in str(body["reason"])
    assert script.fetched == []


def test_the_agent_registers_its_identity_key_and_pins_the_orchestrators(
    home: EdgeHome,
) -> None:
    """An edge enrolled before identity keys existed makes its own and registers it; it pins
    the orchestrator's on first use and refuses another one later."""
    script = Script(stats_task(), outages=0)
    Agent(home, transport=httpx.MockTransport(script)).run(max_tasks=1)
    assert script.identities == [public_bytes(home.identity()).hex()]
    assert home.config().orchestrator_key == ORCHESTRATOR_KEY
    assert (home.identity_file.stat().st_mode & 0o777) == 0o600
    with pytest.raises(EdgeError, match="another identity key"):
        home.pin_orchestrator("cd" * 32)
    assert home.config().orchestrator_key == ORCHESTRATOR_KEY


def test_an_agent_has_started_once_it_introduced_itself_before_its_first_poll(
    home: EdgeHome,
) -> None:
    script, seen = Script(stats_task(), outages=0), []

    def watched(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, agent.started.is_set()))
        return script(request)

    agent = Agent(home, transport=httpx.MockTransport(watched))
    assert not agent.started.is_set()
    agent.run(max_tasks=1)
    assert ("/v1/identity", False) in seen
    assert [started for path, started in seen if path == "/v1/tasks/next"] == [True]


def test_the_egress_line_of_a_newton_round_names_the_hash_of_its_coefficients(
    home: EdgeHome,
) -> None:
    spec, params = NEWTON, NEWTON_START
    task = TaskAssignment(
        task_id="t1", job_id="j1", round=0, kind="analysis", spec=spec, params=params
    )
    script = Script(task, outages=0)
    Agent(home, transport=httpx.MockTransport(script)).run(max_tasks=1)
    [(path, _)] = script.posts
    assert path == "/v1/tasks/t1/result"
    entry = json.loads(home.egress_log.read_text().splitlines()[-1])
    zeros = hashlib.sha256(np.zeros(3, dtype="<f8").tobytes()).hexdigest()
    assert entry["params_sha256"] == params_sha256([0.0, 0.0, 0.0]) == zeros


def test_agent_declines_what_its_policy_forbids(home: EdgeHome) -> None:
    script = Script(stats_task(rounds=5000), outages=0)
    agent = Agent(home, transport=httpx.MockTransport(script))
    agent.run(max_tasks=1)
    [(path, body)] = script.posts
    assert path == "/v1/tasks/t1/decline" and "max_rounds" in str(body["reason"])
    assert body["failed"] is False  # a refusal by its policy


def test_an_error_at_the_site_is_sent_as_a_failure_not_a_refusal(
    home: EdgeHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(TaskRunner, "run", broken)
    script = Script(stats_task(), outages=0)
    Agent(home, transport=httpx.MockTransport(script)).run(max_tasks=1)
    [(path, body)] = script.posts
    assert path == "/v1/tasks/t1/decline"
    assert body == {"reason": "RuntimeError at the site; see the edge's log", "failed": True}
    assert "disk full" not in json.dumps(body)  # the error's text stays in the edge's log


def test_a_task_the_edge_cannot_read_is_declined_not_fatal(home: EdgeHome) -> None:
    stop = threading.Event()
    declined: list[str] = []

    def orchestrator(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/identity":  # an orchestrator without identity keys
            return httpx.Response(404, json={"detail": "not found"})
        if request.method == "PUT":  # the dataset's data quality report
            return httpx.Response(204)
        if request.url.path == "/v1/tasks/next":
            return httpx.Response(200, json={"task_id": "t9", "from_the_future": True})
        declined.append(request.url.path)
        stop.set()
        return httpx.Response(200, json={"task_id": "t9", "status": "declined"})

    Agent(home, transport=httpx.MockTransport(orchestrator)).run(stop)
    assert declined == ["/v1/tasks/t9/decline"]


# -- the policy as it is now ---------------------------------------------------------------


class Tasks:
    """An orchestrator that hands out ``steps``' tasks one per poll, each after its action
    (the site admin editing ``policy.yaml`` between tasks), and records what the site posts."""

    def __init__(self, steps: list[tuple[Callable[[], object], TaskAssignment]]) -> None:
        self.steps = steps
        self.posts: list[tuple[str, str]] = []  # path, decline reason ("" for a result)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/identity":
            key = {"key": ORCHESTRATOR_KEY}
            return httpx.Response(204) if request.method == "PUT" else httpx.Response(200, json=key)
        if request.method == "PUT":  # the dataset's data quality report
            return httpx.Response(204)
        if request.url.path == "/v1/tasks/next":
            if not self.steps:
                return httpx.Response(204)
            action, task = self.steps.pop(0)
            action()
            return httpx.Response(200, content=task.model_dump_json())
        body = json.loads(request.content)
        self.posts.append((request.url.path.rsplit("/", 1)[1], body.get("reason", "")))
        declined = request.url.path.endswith("decline")
        task_id = request.url.path.split("/")[3]
        status = "declined" if declined else "accepted"
        return httpx.Response(200, json={"task_id": task_id, "status": status})

    def run(self, home: EdgeHome) -> list[tuple[str, str]]:
        agent = Agent(home, poll_seconds=0, transport=httpx.MockTransport(self))
        agent.run(max_tasks=len(self.steps))
        agent.close()
        return self.posts


def job(number: int, rounds: int = 5) -> TaskAssignment:
    """Round 0 of job ``number`` (each task its own job: the ledger's budgets stay out)."""
    spec = make_spec(rounds=rounds)
    return TaskAssignment(
        task_id=f"t{number}", job_id=f"j{number}", round=0, kind="stats", spec=spec
    )


def test_each_task_is_checked_against_the_policy_as_it_is_then(
    home: EdgeHome, caplog: pytest.LogCaptureFixture
) -> None:
    """Edits take effect at the next task, without a restart, and the decline quotes the value
    in force; a broken or deleted policy declines every task with the line and setting at
    fault (logged once per mistake), never the defaults; once fixed, tasks run again."""
    path = home.policy_file

    def edit(text: str, keep_time: bool = False) -> Callable[[], None]:
        def write() -> None:
            stamp = path.stat().st_mtime_ns if keep_time else None
            path.write_text(text + APPROVED)
            if stamp is not None:  # as two writes within one tick of the file system's clock
                os.utime(path, ns=(stamp, stamp))

        return write

    def nothing() -> None:
        pass

    posts = Tasks(
        [
            (edit("# site policy\nmax_rounds: 10\n"), job(1)),
            (edit("# site policy\nmax_rounds:  4\n", keep_time=True), job(2)),
            (edit("# site policy\nmin_cohort_size: 20\nmax_rounds: four\n"), job(3)),
            (nothing, job(4)),
            (edit("max_rounds: 10\n"), job(5)),
            (path.unlink, job(6)),
            (nothing, job(7)),
            (edit("max_rounds: 10\n"), job(8)),
        ]
    )
    with caplog.at_level(logging.INFO, logger="oncofed.edge"):
        answers = posts.run(home)
    mistake = (
        f"{path} line 3: max_rounds: Input should be a valid integer, unable to parse string "
        "as an integer"
    )
    missing = f"{path} is missing: restore it (a site never falls back to the default policy)"
    four = hashlib.sha256(("# site policy\nmax_rounds:  4\n" + APPROVED).encode()).hexdigest()
    four = four[:12]
    assert answers == [
        ("result", ""),
        ("decline", f"5 rounds; policy max_rounds is 4 in {path} (policy {four})"),
        ("decline", mistake),
        ("decline", mistake),
        ("result", ""),
        ("decline", missing),
        ("decline", missing),
        ("result", ""),
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"{mistake}; this site declines every task until it is fixed",
        f"{missing}; this site declines every task until it is fixed",
    ]
    infos = [r.getMessage() for r in caplog.records]
    assert f"{path} re-read: max_rounds 1000 -> 10" in infos
    assert f"{path} re-read: max_rounds 10 -> 4" in infos
    assert infos.count(f"{path} is valid again; tasks are checked against it") == 2


def test_an_edge_started_with_a_broken_policy_declines_until_it_is_fixed(home: EdgeHome) -> None:
    home.policy_file.write_text("allowed_tasks: [stats]\nmin_cohrt_size: 5\n" + APPROVED)
    posts = Tasks(
        [
            (lambda: 0, job(1)),
            (lambda: home.policy_file.write_text("allowed_tasks: [stats]\n" + APPROVED), job(2)),
        ]
    )
    assert posts.run(home) == [
        (
            "decline",
            f"{home.policy_file} line 2: min_cohrt_size: not a policy setting (did you mean "
            "min_cohort_size?)",
        ),
        ("result", ""),
    ]


def test_a_cohort_kept_between_rounds_is_checked_again_under_a_new_policy(
    home: EdgeHome,
) -> None:
    """A Newton loop's cohort is built once per job; a raised minimum applies to the loop's
    next round all the same."""
    spec, params = NEWTON, NEWTON_START
    rounds = [
        TaskAssignment(
            task_id=f"t{n}", job_id="j1", round=n, kind="analysis", spec=spec, params=params
        )
        for n in (0, 1)
    ]
    posts = Tasks(
        [
            (lambda: 0, rounds[0]),
            (lambda: home.policy_file.write_text("min_cohort_size: 100\n" + APPROVED), rounds[1]),
        ]
    )
    [first, second] = posts.run(home)
    assert first == ("result", "")
    assert second[0] == "decline" and "minimum cohort size" in second[1]
    assert "min_cohort_size" in second[1]


# -- data quality reports --------------------------------------------------------------


class ProfileOrchestrator:
    """Answers every poll with 204 after running the next scripted action (then stops the
    agent) and records what is put to ``/profiles``; ``answers`` are its replies to those
    (0: connection refused), 204 once they run out."""

    def __init__(self, actions: list[Callable[[], None]], answers: list[int] | None = None) -> None:
        self.stop = threading.Event()
        self.actions, self.answers = actions, answers or []
        self.puts: list[tuple[str, bytes]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/tasks/next":
            (self.actions.pop(0) if self.actions else self.stop.set)()
            return httpx.Response(204)
        if request.url.path == "/v1/identity":
            key = {"key": ORCHESTRATOR_KEY}
            return httpx.Response(204) if request.method == "PUT" else httpx.Response(200, json=key)
        assert request.method == "PUT"
        self.puts.append((request.url.path, request.content))
        status = self.answers.pop(0) if self.answers else 204
        if status == 0:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(status, json={"detail": "refused"} if status >= 400 else None)

    def run(self, home: EdgeHome) -> None:
        transport = httpx.MockTransport(self)
        agent = Agent(home, poll_seconds=0, backoff=(0.001, 0.01), transport=transport)
        agent.run(self.stop)
        agent.close()

    def sent(self) -> list[tuple[str, DataProfile]]:
        return [(path, DataProfile.model_validate_json(body)) for path, body in self.puts]


@pytest.fixture
def edge(tmp_path: Path) -> EdgeHome:
    """An edge with two imported datasets."""
    edge = EdgeHome(tmp_path / "edge")
    edge.create(EdgeConfig.model_validate({"orchestrator": "http://orch.test", "site": "a"}), "c")
    store = LocalStore(edge.datasets)
    store.save("gbsg2", CdmData(), sample_profile())
    store.save("trial-b", CdmData(), sample_profile("trial-b", patients=120))
    return edge


def test_profiles_are_sent_at_start_and_after_a_reimport(edge: EdgeHome) -> None:
    reimported = sample_profile(patients=700)
    store = LocalStore(edge.datasets)
    orchestrator = ProfileOrchestrator(
        [lambda: None, lambda: store.save("gbsg2", CdmData(), reimported), lambda: None]
    )
    orchestrator.run(edge)
    assert orchestrator.sent() == [
        ("/v1/profiles/gbsg2", sample_profile()),
        ("/v1/profiles/trial-b", sample_profile("trial-b", patients=120)),
        ("/v1/profiles/gbsg2", reimported),
    ]
    entries = [json.loads(line) for line in edge.egress_log.read_text().splitlines()]
    assert [(e["kind"], e["dataset"], e["endpoint"]) for e in entries] == [
        ("profile", "gbsg2", "/profiles/gbsg2"),
        ("profile", "trial-b", "/profiles/trial-b"),
        ("profile", "gbsg2", "/profiles/gbsg2"),
    ]
    for entry, (_, body) in zip(entries, orchestrator.puts, strict=True):
        assert entry["json"] == json.loads(body) and entry["bytes"] == len(body)
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_damaged_profile_is_logged_once_and_skipped(
    edge: EdgeHome, caplog: pytest.LogCaptureFixture
) -> None:
    (edge.datasets / "trial-b" / PROFILE).write_text('{"dataset": "trial-b", "patients": 12')
    store = LocalStore(edge.datasets)
    repaired = sample_profile("trial-b", patients=121)
    orchestrator = ProfileOrchestrator(
        [lambda: None, lambda: store.save("trial-b", CdmData(), repaired)]
    )
    with caplog.at_level(logging.ERROR, logger="oncofed.edge"):
        orchestrator.run(edge)
    assert orchestrator.sent() == [
        ("/v1/profiles/gbsg2", sample_profile()),
        ("/v1/profiles/trial-b", repaired),
    ]
    [record] = caplog.records
    assert record.getMessage().startswith("data profile of dataset trial-b not sent: ")
    assert "is damaged" in record.getMessage()


def test_an_outage_is_retried_and_a_refusal_is_not(
    edge: EdgeHome, caplog: pytest.LogCaptureFixture
) -> None:
    orchestrator = ProfileOrchestrator([lambda: None], answers=[0, 204, 422])
    with caplog.at_level(logging.ERROR, logger="oncofed.edge"):
        orchestrator.run(edge)
    paths = [path for path, _ in orchestrator.puts]
    assert paths == ["/v1/profiles/gbsg2", "/v1/profiles/gbsg2", "/v1/profiles/trial-b"]
    assert [r.getMessage() for r in caplog.records] == [
        "data profile of dataset trial-b not sent: HTTP 422: refused"
    ]
    assert len(edge.egress_log.read_text().splitlines()) == 3  # every attempt is logged


@pytest.mark.parametrize("every", [0.0, 3600.0])
def test_an_answer_waits_for_the_next_task_which_runs_after_the_sites_dataset_checks(
    home: EdgeHome, monkeypatch: pytest.MonkeyPatch, every: float
) -> None:
    """Each answer asks the orchestrator to hold its acknowledgement until the site's next
    task (``wait``, the poll's seconds) and the task handed with it runs without a poll; the
    site's datasets are looked at before it once ``PROFILE_CHECK_SECONDS`` have passed since
    the last look (here a re-imported dataset's report is sent before the second answer),
    not sooner (it is sent before the next poll)."""
    monkeypatch.setattr(agent_module, "PROFILE_CHECK_SECONDS", every)
    second = stats_task().model_copy(update={"task_id": "t2", "job_id": "j2"})
    polled = iter([stats_task(), stats_task().model_copy(update={"task_id": "t3", "job_id": "j3"})])
    requests: list[tuple[str, str, str | None]] = []

    def script(request: httpx.Request) -> httpx.Response:
        requests.append((request.method, request.url.path, request.url.params.get("wait")))
        if request.url.path == "/v1/identity":
            return httpx.Response(200, json={"key": ORCHESTRATOR_KEY})
        if request.method == "PUT":
            return httpx.Response(204)
        if request.url.path == "/v1/tasks/next":
            return httpx.Response(200, content=next(polled).model_dump_json())
        task_id = request.url.path.split("/")[-2]
        ack: dict[str, Any] = {"task_id": task_id, "status": "accepted"}
        if task_id == "t1":  # meanwhile the dataset is imported again
            os.utime(home.datasets / "data" / PROFILE, ns=(1, 1))
            ack["next_task"] = json.loads(second.model_dump_json())
        return httpx.Response(200, json=ack)

    agent = Agent(home, poll_seconds=7.0, transport=httpx.MockTransport(script))
    assert agent.run(max_tasks=3) == 3
    asked = [(method, path) for method, path, _ in requests if path != "/v1/identity"]
    report = [("PUT", "/v1/profiles/data")]
    assert asked == [
        *report,
        ("PUT", f"/v1/site/projects/{TEST_PROJECT}/decision"),
        ("GET", "/v1/tasks/next"),
        ("POST", "/v1/tasks/t1/result"),
        *(report if every == 0 else []),
        ("POST", "/v1/tasks/t2/result"),
        *(report if every > 0 else []),
        ("GET", "/v1/tasks/next"),
        ("POST", "/v1/tasks/t3/result"),
    ]
    assert [wait for method, _, wait in requests if method == "POST"] == ["7.0"] * 3


def test_a_policy_changed_while_an_answer_waits_governs_the_task_handed_with_it(
    home: EdgeHome,
) -> None:
    """The site withdraws its approval while its answer waits for the next task: the task
    handed with the acknowledgement is checked against the policy file as it is then (the
    task reads the file itself; no check between tasks is needed for it) and declined."""
    second = stats_task().model_copy(update={"task_id": "t2", "job_id": "j2"})
    posted: list[tuple[str, bytes]] = []
    approved = home.policy_file.read_text()

    def script(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/identity":
            return httpx.Response(200, json={"key": ORCHESTRATOR_KEY})
        if request.method == "PUT":
            return httpx.Response(204)
        if request.url.path == "/v1/tasks/next":
            return httpx.Response(200, content=stats_task().model_dump_json())
        posted.append((request.url.path, request.content))
        task_id = request.url.path.split("/")[-2]
        ack: dict[str, Any] = {"task_id": task_id, "status": "accepted"}
        if task_id == "t1":
            home.policy_file.write_text(approved.removesuffix(APPROVED))
            ack["next_task"] = json.loads(second.model_dump_json())
        return httpx.Response(200, json=ack)

    agent = Agent(home, poll_seconds=7.0, transport=httpx.MockTransport(script))
    assert agent.run(max_tasks=2) == 2
    assert [path for path, _ in posted] == ["/v1/tasks/t1/result", "/v1/tasks/t2/decline"]
    assert "approv" in json.loads(posted[1][1])["reason"]


def test_a_jobs_first_task_compiles_no_ledger_statement(home: EdgeHome) -> None:
    """The agent compiles the ledger's statements of a job's first task before it polls
    (``TaskRunner.warm_up``, in a transaction rolled back), not in the round: every statement
    the first task runs on the ledger is found compiled, and the rehearsal left no row."""
    script = Script(stats_task(), outages=0)
    agent = Agent(home, transport=httpx.MockTransport(script))
    ran: list[tuple[str, str]] = []

    def executed(*args: Any) -> None:
        statement, context = args[2], args[4]
        if script.task is None:  # handed out: the task runs
            ran.append((str(context.cache_hit), statement.split()[0]))

    event.listen(agent._ledger._engine, "before_cursor_execute", executed)
    assert agent.run(max_tasks=1) == 1
    assert {kind for _, kind in ran} >= {"SELECT", "INSERT", "UPDATE"}  # the task's own
    assert [hit for hit in ran if hit[0] != "CacheStats.CACHE_HIT"] == []
    with sqlite3.connect(home.root / LEDGER) as db:
        assert db.execute("SELECT job_id FROM task").fetchall() == [("j1",)]
        assert db.execute("SELECT job_id FROM release_cohort").fetchall() == [("j1",)]


class SlowBlob(Script):
    """``Script``, serving ``blob`` to a site that asks for it once ``release`` is set."""

    def __init__(self, task: TaskAssignment, blob: bytes) -> None:
        super().__init__(task, outages=0)
        self.blob, self.asked, self.release = blob, threading.Event(), threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith("/v1/blobs/"):
            self.asked.set()
            assert self.release.wait(30)
            return httpx.Response(200, content=self.blob)
        return super().__call__(request)


def test_a_site_downloading_its_model_lets_the_other_sites_of_its_process_compute(
    home: EdgeHome, tmp_path: Path
) -> None:
    """The sites of one process compute in turn (``agent._Turn``), but a site whose global
    model is too large to come with its task lets go of its turn while it downloads it: a
    slow download holds up no other site."""
    spec = make_spec()
    model = tensors.encode(initial_weights(spec.model, 2, spec.seed))
    slow = SlowBlob(stats_task(), model)
    downloading = Agent(home, transport=httpx.MockTransport(slow))
    assert downloading.run(max_tasks=1) == 1
    stats = StatsResult.model_validate(slow.posts[-1][1])
    slow.task = TaskAssignment(
        task_id="t2", job_id="j1", round=1, kind="train", spec=spec, pooled=stats,
        model_sha256=tensors.sha256(model), standardization=standardization(stats),
    )  # fmt: skip
    waiting = threading.Thread(target=downloading.run, kwargs={"max_tasks": 1})
    waiting.start()
    assert slow.asked.wait(10)
    other = Script(stats_task(), outages=0)
    answering = threading.Thread(
        target=Agent(make_home(tmp_path / "other"), transport=httpx.MockTransport(other)).run,
        kwargs={"max_tasks": 1},
    )
    answering.start()
    answering.join(10)
    assert not answering.is_alive() and other.posts[-1][0] == "/v1/tasks/t1/result"
    assert waiting.is_alive()  # still downloading
    slow.release.set()
    waiting.join(10)
    assert slow.posts[-1][0] == "/v1/tasks/t2/update"


def test_the_sites_of_one_process_compute_their_answers_in_turn(
    home: EdgeHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sites of one process handed a task at once: one computes its answer, then the
    other (no two task runs overlap)."""
    spans: list[tuple[float, float]] = []
    run = TaskRunner.run

    def timed(runner: TaskRunner, *args: Any) -> Any:
        start = time.perf_counter()
        time.sleep(0.1)  # releases the interpreter lock, as torch's and SQLite's calls do
        outcome = run(runner, *args)
        spans.append((start, time.perf_counter()))
        return outcome

    monkeypatch.setattr(TaskRunner, "run", timed)
    scripts = [Script(stats_task(), outages=0) for _ in range(2)]
    agents = [
        Agent(edge, transport=httpx.MockTransport(script))
        for edge, script in zip([home, make_home(tmp_path / "other")], scripts, strict=True)
    ]
    threads = [threading.Thread(target=a.run, kwargs={"max_tasks": 1}) for a in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert all(script.posts[-1][0] == "/v1/tasks/t1/result" for script in scripts)
    first, second = sorted(spans)
    assert first[1] <= second[0]
