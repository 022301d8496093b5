"""Who may call what: every route of the OpenAPI document, called by every kind of caller,
each in and out of its scope (own job, own site)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oncofed.orchestrator import Settings, create_app, identity, projects
from oncofed.orchestrator.db import Principal
from oncofed.orchestrator.setup import add_principal, add_site
from tests.support import TEST_PROJECT, State, auth, declare_project, make_spec

ANYONE = ["anonymous", "operator", "rita", "ross", "ada", "gil", "alpha"]
"""The callers: nobody, the operator, researcher rita (who owns the job), researcher ross,
ada (alpha's site admin: alpha takes part in the job), gil (admin of gamma, which does not)
and the alpha edge."""
PEOPLE = ("operator", "rita", "ross", "ada", "gil")
OK = "ok"
SCOPE = {"kinds": ["analysis"], "analyses": ["counts"], "fields": ["sex"]}


@dataclass(frozen=True)
class Rule:
    """Who gets what: the caller's expected status (``OK``: neither 401, 403 nor 404)."""

    allowed: frozenset[str]
    refused: int = 403  # a person allowed no access at all (scope misses are 404 or 403)
    hidden: frozenset[str] = frozenset()  # callers for whom the job does not exist

    def expect(self, caller: str) -> int | str:
        if caller in self.allowed:
            return OK
        if caller in self.hidden:
            return 404
        if caller in ("anonymous", "alpha") or self.refused == 401:
            return 401
        return self.refused


def rule(allowed: str, *, hidden: str = "", refused: int = 403) -> Rule:
    return Rule(frozenset(allowed.split()), refused, frozenset(hidden.split()))


EDGE = rule("alpha", refused=401)
"""Edge routes take a site credential only: a person's token is unknown there."""
PUBLIC = rule(" ".join(ANYONE))
JOB = rule("operator rita ada", hidden="ross gil")
MATRIX: dict[tuple[str, str], Rule] = {
    ("GET", "/v1/health"): PUBLIC,
    ("POST", "/v1/enrol"): PUBLIC,  # the enrolment token in the body is the credential
    ("GET", "/v1/identity"): EDGE,
    ("PUT", "/v1/identity"): EDGE,
    ("GET", "/v1/tasks/next"): EDGE,
    ("GET", "/v1/blobs/{sha}"): EDGE,
    ("POST", "/v1/tasks/{task_id}/update"): EDGE,
    ("POST", "/v1/tasks/{task_id}/result"): EDGE,
    ("POST", "/v1/tasks/{task_id}/decline"): EDGE,
    ("POST", "/v1/tasks/{task_id}/secure/masked"): EDGE,
    ("POST", "/v1/tasks/{task_id}/secure/keys"): EDGE,
    ("POST", "/v1/tasks/{task_id}/secure/shares"): EDGE,
    ("POST", "/v1/tasks/{task_id}/secure/unmask"): EDGE,
    ("PUT", "/v1/profiles/{dataset}"): EDGE,
    ("POST", "/v1/certificate"): EDGE,
    ("GET", "/v1/sites"): rule("operator rita ross ada gil"),
    ("POST", "/v1/sites"): rule("operator"),
    ("POST", "/v1/sites/{name}/revoke"): rule("operator"),
    ("POST", "/v1/sites/{name}/disable"): rule("operator"),
    ("POST", "/v1/sites/{name}/enable"): rule("operator"),
    ("DELETE", "/v1/sites/{name}"): rule("operator"),
    ("GET", "/v1/sites/{name}/profiles"): rule("operator rita ross ada"),
    ("POST", "/v1/jobs"): rule("operator rita", hidden="ross"),
    ("GET", "/v1/jobs"): rule("operator rita ross ada gil"),
    ("GET", "/v1/jobs/{job_id}"): JOB,
    ("POST", "/v1/jobs/{job_id}/cancel"): rule("operator rita", hidden="ross"),
    ("GET", "/v1/jobs/{job_id}/model"): rule("operator rita", hidden="ross gil"),
    ("GET", "/v1/people"): rule("operator"),
    ("POST", "/v1/people"): rule("operator"),
    ("GET", "/v1/tokens"): rule("operator rita ross ada gil"),
    ("POST", "/v1/tokens"): rule("operator rita ross ada gil"),
    ("DELETE", "/v1/tokens/{token_id}"): rule("operator rita", hidden="ross ada gil"),
    ("POST", "/v1/projects"): rule("operator rita ross"),
    ("GET", "/v1/projects"): rule("operator rita ross ada gil"),
    ("GET", "/v1/projects/{name}"): rule("operator rita ada gil", hidden="ross"),
    ("POST", "/v1/projects/{name}/members"): rule("operator", hidden="ross"),
    ("GET", "/v1/site/projects"): EDGE,
    ("GET", "/v1/site/projects/{name}"): EDGE,
    ("PUT", "/v1/site/projects/{name}/decision"): EDGE,
}


@dataclass
class World:
    api: TestClient
    tokens: dict[str, str]
    job_id: str
    token_id: int  # one of rita's (the one ``DELETE /tokens/{id}`` targets)
    task_id: str  # alpha's first task


@pytest.fixture
def api(state: State) -> Iterator[TestClient]:
    """The app unthrottled: the matrix fails hundreds of authentications on purpose."""
    settings = Settings.load(state.home).model_copy(update={"auth_failure_limit": 1 << 30})
    with TestClient(create_app(settings), base_url="http://test/v1") as client:
        yield client


@pytest.fixture
def world(api: TestClient, state: State) -> Iterator[World]:
    add_site(state.home, "gamma")
    tokens = {"operator": state.admin_token, "alpha": state.credentials["alpha"]}
    tokens["rita"] = add_principal(state.home, "rita", "researcher").token
    tokens["ross"] = add_principal(state.home, "ross", "researcher").token
    tokens["ada"] = add_principal(state.home, "ada", "site_admin", "alpha").token
    tokens["gil"] = add_principal(state.home, "gil", "site_admin", "gamma").token
    with state.sessions.begin() as session:
        projects.add_member(session, TEST_PROJECT, "rita", state.admin_id, "operator")
    spec = make_spec().model_dump(mode="json")
    job_id = api.post("/jobs", json=spec, headers=auth(tokens["rita"])).json()["id"]
    task_id = api.get("/tasks/next", params={"wait": 0}, headers=auth(tokens["alpha"]))
    with state.sessions.begin() as session:
        rita = session.query(Principal).filter_by(name="rita").one()
        spare = identity.issue_token(session, rita, "spare", timedelta(days=1))
    yield World(api, tokens, job_id, spare.id, task_id.json()["task_id"])


def _call(world: World, method: str, path: str, caller: str) -> int:
    concrete = (
        path.removeprefix("/v1")
        .replace("{job_id}", world.job_id)
        .replace("{name}", TEST_PROJECT if "/projects/" in path else "alpha")
        .replace("{sha}", "0" * 64)
        .replace("{task_id}", world.task_id)
        .replace("{dataset}", "main")
        .replace("{token_id}", str(world.token_id))
    )
    headers = auth(world.tokens[caller]) if caller in world.tokens else {}
    body: dict[str, Any] = {}
    if path in ("/v1/sites/{name}/revoke", "/v1/sites/{name}/disable", "/v1/sites/{name}/enable"):
        concrete = concrete.replace("alpha", "gamma")  # alpha's edge must keep working
    elif (method, path) == ("POST", "/v1/sites"):
        body = {"json": {"name": f"new-{caller}"}}
    elif (method, path) == ("POST", "/v1/people"):
        body = {"json": {"name": f"new-{caller}", "role": "researcher"}}
    elif (method, path) == ("POST", "/v1/projects"):
        body = {"json": {"name": f"p-{caller}", "title": "t", "purpose": "p",
                         "principal_investigator": "i", "scope": SCOPE}}  # fmt: skip
    elif (method, path) == ("POST", "/v1/projects/{name}/members"):
        body = {"json": {"name": "rita"}}  # a member already: ross stays out
    elif (method, path) == ("POST", "/v1/jobs"):
        body = {"json": make_spec().model_dump(mode="json")}
    elif method in ("POST", "PUT"):
        body = {"json": {}}
    return world.api.request(method, concrete, headers=headers, **body).status_code


def _routes(app: FastAPI) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }


def test_every_route_has_a_rule(world: World) -> None:
    """A new route without a decision on who may call it fails here."""
    assert _routes(world.api.app) == set(MATRIX)  # type: ignore[arg-type]


def test_each_caller_gets_what_the_matrix_says(world: World) -> None:
    """Every route, called by every caller, in one world (what a call changes leaves the
    other calls' outcomes as they were: a spare token revoked, gamma revoked, a member added
    again); every mismatch is listed."""
    wrong = {}
    for method, path in sorted(MATRIX):
        got = {caller: _call(world, method, path, caller) for caller in ANYONE}
        seen = {caller: _outcome(caller, status) for caller, status in got.items()}
        expected = {caller: MATRIX[method, path].expect(caller) for caller in ANYONE}
        if seen != expected:
            wrong[f"{method} {path}"] = {
                c: (got[c], expected[c]) for c in ANYONE if seen[c] != expected[c]
            }
    assert not wrong, wrong  # route: {caller: (status got, expected)}


def _outcome(caller: str, status: int) -> int | str:
    """401 and 403 refuse; so does 404 for a person (a job out of scope is hidden), not for
    the edge (a made-up blob or task may simply not exist)."""
    if status in (401, 403) or (status == 404 and caller != "alpha"):
        return status
    return OK


def test_a_researcher_lists_only_the_jobs_of_their_projects(world: World, state: State) -> None:
    """rita is a member of the test project, not of "other" (which only alpha approved)."""
    other = make_spec(project="other")
    with state.sessions.begin() as session:
        declare_project(session, state.admin_id, other, [state.sites["alpha"]], name="other")
    operator = auth(state.admin_token)
    theirs = world.api.post("/jobs", json=make_spec().model_dump(mode="json"), headers=operator)
    elsewhere = world.api.post("/jobs", json=other.model_dump(mode="json"), headers=operator)
    assert elsewhere.json()["sites"] == ["alpha"]
    listed = {
        who: {job["id"] for job in world.api.get("/jobs", headers=auth(world.tokens[who])).json()}
        for who in PEOPLE
    }
    assert listed["rita"] == {world.job_id, theirs.json()["id"]}
    assert listed["ross"] == set() and listed["gil"] == set()
    assert listed["ada"] == listed["operator"] == listed["rita"] | {elsewhere.json()["id"]}


def test_a_revoked_token_fails_on_its_next_request(world: World) -> None:
    rita = auth(world.tokens["rita"])
    assert world.api.get("/jobs", headers=rita).status_code == 200
    mine = world.api.get("/tokens", headers=rita).json()
    first = next(t for t in mine if t["label"] == "first")
    assert world.api.delete(f"/tokens/{first['id']}", headers=rita).json()["status"] == "revoked"
    refused = world.api.get("/jobs", headers=rita)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def test_an_expired_token_is_refused(world: World, state: State) -> None:
    with state.sessions.begin() as session:
        ross = session.query(Principal).filter_by(name="ross").one()
        short = identity.issue_token(session, ross, "short", timedelta(microseconds=1))
    refused = world.api.get("/jobs", headers=auth(short.token))
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    listed = world.api.get("/tokens", headers=auth(world.tokens["ross"])).json()
    assert {t["label"]: t["status"] for t in listed} == {"first": "active", "short": "expired"}


def test_the_operator_revokes_anyones_token_and_adds_people(world: World) -> None:
    operator = auth(world.tokens["operator"])
    revoked = world.api.delete(f"/tokens/{world.token_id}", headers=operator)
    assert revoked.json()["principal"] == "rita" and revoked.json()["status"] == "revoked"
    created = world.api.post(
        "/people", json={"name": "sam", "role": "site_admin", "site": "beta"}, headers=operator
    )
    assert created.status_code == 201
    sam = auth(created.json()["token"])
    assert world.api.get("/sites/beta/profiles", headers=sam).status_code == 200
    assert world.api.get("/sites/alpha/profiles", headers=sam).status_code == 403
    people = {p["name"]: p for p in world.api.get("/people", headers=operator).json()}
    assert people["sam"]["site"] == "beta" and people["sam"]["role"] == "site_admin"


@pytest.mark.parametrize(
    "person",
    [
        {"name": "x", "role": "site_admin"},  # a site admin without a site
        {"name": "x", "role": "researcher", "site": "alpha"},  # a researcher with one
        {"name": "x", "role": "site_admin", "site": "nowhere"},
        {"name": "x", "role": "superuser"},
    ],
)
def test_people_are_added_only_whole(world: World, person: dict[str, str]) -> None:
    response = world.api.post("/people", json=person, headers=auth(world.tokens["operator"]))
    assert response.status_code in (400, 404, 422), response.text


def test_a_revoked_site_is_refused_on_its_next_request(world: World, state: State) -> None:
    alpha = auth(world.tokens["alpha"])
    assert world.api.get("/identity", headers=alpha).status_code == 200  # now remembered
    revoked = world.api.post("/sites/alpha/revoke", headers=auth(world.tokens["operator"]))
    assert revoked.status_code == 200 and revoked.json()["revoked"] is not None
    assert world.api.get("/identity", headers=alpha).status_code == 401
    listed = world.api.get("/sites", headers=auth(world.tokens["rita"])).json()
    assert {s["name"]: s["enrolled"] for s in listed}["alpha"] is False
