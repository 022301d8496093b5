"""The operator's control of sites over the API (SQLite and PostgreSQL): disabled sites get
no task and are refused, enabled ones are served again, removal waits for running tasks, site
names are checked, and a site not seen lately holds no job unless its spec lists it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from oncofed.orchestrator import identity
from oncofed.orchestrator.db import Site, utcnow
from oncofed.orchestrator.errors import BadRequest
from oncofed.wire.messages import JobCreated
from tests.orchestrator.test_secure_rounds import analysis, four, stores
from tests.sites import Site as Edge
from tests.sites import drive, job
from tests.support import State, auth, in_project, make_spec

__all__ = ["four", "stores"]  # the fixtures, shared with the secure rounds' tests

SQLITE = pytest.mark.parametrize("state", ["sqlite"], indirect=True)


def submit(state: State, http: TestClient, **changes: Any) -> JobCreated:
    spec = in_project(state, make_spec(**changes).model_dump(mode="json"))
    answer = http.post("/jobs", json=spec, headers=auth(state.admin_token))
    assert answer.status_code == 201, answer.text
    return JobCreated.model_validate_json(answer.content)


def operator(state: State, http: TestClient, method: str, path: str) -> Any:
    return http.request(method, path, headers=auth(state.admin_token))


def poll(state: State, http: TestClient, site: str) -> Any:
    return http.get("/tasks/next", params={"wait": 0}, headers=auth(state.credentials[site]))


def test_a_disabled_site_gets_no_task_is_refused_and_is_served_again_once_enabled(
    state: State, http: TestClient
) -> None:
    running = submit(state, http)
    for site in ("alpha", "beta"):  # each has its task (and its credential is remembered)
        assert poll(state, http, site).status_code == 200
    disabled = operator(state, http, "POST", "/sites/beta/disable")
    assert disabled.status_code == 200 and disabled.json()["disabled"] is not None

    refused = poll(state, http, "beta")
    assert refused.status_code == 403
    assert "site 'beta' was disabled by the operator" in refused.json()["detail"]
    assert "\n" not in refused.json()["detail"]
    beta = job(state, running.id).rounds[0].sites["beta"]
    assert (beta.status, beta.detail) == ("failed", "the operator disabled site beta")
    assert submit(state, http).sites == ["alpha"]  # a new job leaves it out
    listed = make_spec(sites=["alpha", "beta"], min_sites=2).model_dump(mode="json")
    named = http.post("/jobs", json=in_project(state, listed), headers=auth(state.admin_token))
    assert named.status_code == 400
    assert named.json()["detail"] == "sites: ['beta'] are disabled by the operator"

    enabled = operator(state, http, "POST", "/sites/beta/enable")
    assert enabled.status_code == 200 and enabled.json()["disabled"] is None
    assert poll(state, http, "beta").status_code == 204  # served, but out of that round
    assert submit(state, http).sites == ["alpha", "beta"]
    assert poll(state, http, "beta").status_code == 200


def test_removal_is_refused_while_the_site_has_a_running_task(
    state: State, http: TestClient
) -> None:
    running = submit(state, http, name="long-job")
    refused = operator(state, http, "DELETE", "/sites/beta")
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(
        f"site 'beta' has a running task in job long-job ({running.id}): cancel the job"
    )
    assert operator(state, http, "POST", f"/jobs/{running.id}/cancel").status_code == 200
    assert operator(state, http, "DELETE", "/sites/beta").status_code == 204
    assert [s["name"] for s in operator(state, http, "GET", "/sites").json()] == ["alpha"]
    assert poll(state, http, "beta").status_code == 401
    assert operator(state, http, "DELETE", "/sites/beta").status_code == 404
    assert operator(state, http, "POST", "/sites/beta/disable").status_code == 404
    again = http.post("/sites", json={"name": "beta"}, headers=auth(state.admin_token))
    assert again.status_code == 409
    assert "was removed on" in again.json()["detail"] and "a name is never reused" in again.text


@SQLITE
@pytest.mark.parametrize("name", ["Hospital-A", "hospital a", "-north", "st.mary", "x" * 64, ""])
def test_invalid_site_names_are_refused(state: State, http: TestClient, name: str) -> None:
    with state.sessions.begin() as session, pytest.raises(BadRequest, match="is not valid: use"):
        identity.create_site(session, name)
    answer = http.post("/sites", json={"name": name}, headers=auth(state.admin_token))
    assert answer.status_code == 422


@SQLITE
def test_valid_site_names_are_taken(state: State, http: TestClient) -> None:
    for name in ("hospital-a", "h2_north", "9", "x" * 63):
        answer = http.post("/sites", json={"name": name}, headers=auth(state.admin_token))
        assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("seen", [None, timedelta(hours=2)], ids=["never", "long-ago"])
def test_a_site_not_seen_within_the_window_holds_no_job_unless_listed(
    state: State, http: TestClient, seen: timedelta | None
) -> None:
    with state.sessions.begin() as session:
        last = None if seen is None else utcnow() - seen
        session.execute(update(Site).where(Site.name == "beta").values(last_seen_at=last))
    created = submit(state, http)
    assert created.sites == ["alpha"] and created.unseen == []
    listed = submit(state, http, sites=["alpha", "beta"])
    assert listed.sites == ["alpha", "beta"]
    assert listed.unseen == ["beta"] and listed.seen_window_s == 600


def test_a_site_disabled_after_posting_in_a_secure_phase_holds_no_round(
    state: State, four: dict[str, Edge]
) -> None:
    """A site that posted its key advert, then is disabled while the others have not: the
    round must not wait for it until its deadline. Four sites need all four key adverts
    (threshold 4), so the round ends at once, saying why."""
    counts = {"type": "counts", "rows": "grade"}
    spec = analysis(counts, privacy={"secure_aggregation": True})
    job_id = state.coordinator.submit(spec, state.admin_id).id
    alpha = four["alpha"]
    assert alpha.act()  # its key advert: the keys phase still waits for the others
    state.coordinator.withdraw_site(alpha.id, "the operator disabled site alpha")
    rest = {name: site for name, site in four.items() if name != "alpha"}
    ended = drive(state, rest, job_id, limit=50)  # no deadline passes in 50 sweeps
    assert ended.status == "failed"
    assert "only 3 sites shared their keys and the threshold is 4" in (ended.error or "")
    assert "alpha: failed (the operator disabled site alpha)" in (ended.error or "")
