"""A real edge agent against a served orchestrator that the operator and researchers control:
a disabled site's refusals are logged once per back-off and the agent works again once it is
enabled; an answer to a cancelled job's task is refused once, not retried."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from oncofed.client import Client
from oncofed.edge import Agent, EdgeConfig, EdgeHome
from oncofed.wire.messages import TaskAssignment
from tests.cli.test_cli import served  # noqa: F401 (a fixture)
from tests.support import State, approval_block, auth, make_spec, save_columns

pytestmark = pytest.mark.parametrize("state", ["sqlite"], indirect=True)
BACKOFF = (0.01, 0.1)


def alpha_edge(url: str, state: State, root: Path) -> EdgeHome:
    """alpha's edge: the test project approved on a dataset of 60 patients."""
    home = EdgeHome(root)
    config = EdgeConfig.model_validate({"orchestrator": url, "site": "alpha"})
    home.create(config, state.credentials["alpha"])
    rng = np.random.default_rng(3)
    columns = {"x1": rng.normal(size=60), "x2": rng.normal(size=60), "y": rng.integers(0, 2, 60)}
    save_columns(home.datasets, "data", columns)
    home.policy_file.write_text(home.policy_file.read_text() + "\n" + approval_block(make_spec()))
    return home


def test_a_disabled_site_is_told_once_per_backoff_and_works_once_enabled(
    served: str,  # noqa: F811
    state: State,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = Agent(alpha_edge(served, state, tmp_path / "edge"), poll_seconds=0.05, backoff=BACKOFF)
    stop, done = threading.Event(), []
    thread = threading.Thread(target=lambda: done.append(agent.run(stop, max_tasks=1)))
    with caplog.at_level(logging.INFO, "oncofed.edge"), Client(served, state.admin_token) as api:
        api.disable_site("alpha")
        thread.start()
        time.sleep(0.5)
        refused = [r.getMessage() for r in caplog.records if "refused the poll" in r.getMessage()]
        api.enable_site("alpha")
        api.submit(make_spec())
        thread.join(timeout=30)
    stop.set()
    agent.close()
    assert done == [1] and thread.is_alive() is False  # it ran the task once enabled
    assert refused and len(refused) <= 0.5 / BACKOFF[1] + 2  # once per back-off, no storm
    assert "HTTP 403: site 'alpha' was disabled by the operator" in refused[0]


def test_an_answer_to_a_cancelled_job_is_refused_once_and_not_retried(
    served: str,  # noqa: F811
    state: State,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    home = alpha_edge(served, state, tmp_path / "edge")
    with Client(served, state.admin_token) as api:
        job_id = api.submit(make_spec()).id
        polled = httpx.get(
            f"{served}/v1/tasks/next", params={"wait": 0}, headers=auth(state.credentials["alpha"])
        )
        task = TaskAssignment.model_validate_json(polled.content)
        api.cancel_job(job_id)
    agent = Agent(home, poll_seconds=0.05, backoff=BACKOFF)
    try:
        with caplog.at_level(logging.WARNING, "oncofed.edge"):
            assert agent.handle(task) is None
    finally:
        agent.close()
    assert len(home.egress_log.read_text().splitlines()) == 1  # posted once
    (warning,) = [r.getMessage() for r in caplog.records if "refused the result" in r.getMessage()]
    assert f"HTTP 409: task {task.task_id} was withdrawn: job {job_id} was cancelled" in warning
