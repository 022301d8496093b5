"""Projects over the API: researchers declare them, each site's edge decides, and a job runs
only within its project's scope and only at the sites that approved it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from oncofed.orchestrator.setup import add_principal, add_site
from tests.support import State, auth, make_spec

SCOPE = {"kinds": ["train"], "models": ["logistic"], "fields": ["ext.x1", "ext.x2", "ext.y"]}


def declare(api: TestClient, token: str, name: str = "study", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "title": "Recurrence after surgery", "purpose": "To learn.",
            "principal_investigator": "Dr P", "scope": SCOPE, **extra}  # fmt: skip
    response = api.post("/projects", json=body, headers=auth(token))
    assert response.status_code == 201, response.text
    return dict(response.json())


def decide(api: TestClient, site_token: str, project: dict[str, Any], **answer: Any) -> Any:
    body = {"approve": True, "dataset": "data", "scope_sha256": project["scope_sha256"],
            "policy_version": "a1b2c3d4e5f6", **answer}  # fmt: skip
    return api.put(
        f"/site/projects/{project['name']}/decision", json=body, headers=auth(site_token)
    )


@pytest.fixture
def rita(state: State) -> str:
    return add_principal(state.home, "rita", "researcher").token


def test_a_project_is_seen_by_its_members_site_admins_and_the_operator(
    api: TestClient, state: State, rita: str
) -> None:
    ross = add_principal(state.home, "ross", "researcher").token
    ada = add_principal(state.home, "ada", "site_admin", "alpha").token
    project = declare(api, rita)
    assert project["owner"] == "rita" and project["members"] == ["rita"]
    assert {s["site"]: s["status"] for s in project["sites"]} == {
        "alpha": "pending",
        "beta": "pending",
    }
    for token in (rita, ada, state.admin_token):
        assert api.get("/projects/study", headers=auth(token)).status_code == 200
    assert api.get("/projects/study", headers=auth(ross)).status_code == 404
    assert "study" not in {p["name"] for p in api.get("/projects", headers=auth(ross)).json()}
    added = api.post("/projects/study/members", json={"name": "ross"}, headers=auth(rita))
    assert added.status_code == 204
    assert api.get("/projects/study", headers=auth(ross)).json()["members"] == ["rita", "ross"]


def test_sites_decide_for_the_scope_they_read(api: TestClient, state: State, rita: str) -> None:
    project = declare(api, rita)
    alpha, beta = state.credentials["alpha"], state.credentials["beta"]
    seen = api.get("/site/projects/study", headers=auth(alpha)).json()
    assert seen["scope_sha256"] == project["scope_sha256"]
    assert [(s["site"], s["status"]) for s in seen["sites"]] == [("alpha", "pending")]
    other = decide(api, alpha, project, scope_sha256="0" * 64)
    assert other.status_code == 409 and "read the project again" in other.json()["detail"]
    assert decide(api, alpha, project).json()["status"] == "approved"
    declined = decide(api, beta, project, approve=False, dataset=None, reason="too few cases")
    assert declined.json()["status"] == "declined"
    sites = {s["site"]: s for s in api.get("/projects/study", headers=auth(rita)).json()["sites"]}
    assert sites["alpha"]["policy_version"] == "a1b2c3d4e5f6"
    assert sites["alpha"]["dataset"] == "data"
    assert sites["beta"]["reason"] == "too few cases"
    own = api.get("/site/projects", headers=auth(beta)).json()
    assert {s["site"] for p in own for s in p["sites"]} == {"beta"}  # its own decisions only


def test_a_job_runs_only_at_the_sites_that_approved_its_project(
    api: TestClient, state: State, rita: str
) -> None:
    project = declare(api, rita)
    spec = make_spec(project="study").model_dump(mode="json")
    none_yet = api.post("/jobs", json=spec, headers=auth(rita))
    assert none_yet.status_code == 409 and "approved" in none_yet.json()["detail"]
    decide(api, state.credentials["alpha"], project)
    decide(api, state.credentials["beta"], project, approve=False, dataset=None, reason="no")
    created = api.post("/jobs", json=spec, headers=auth(rita))
    assert created.status_code == 201 and created.json()["sites"] == ["alpha"]
    beta_asked = api.post("/jobs", json=spec | {"sites": ["alpha", "beta"]}, headers=auth(rita))
    assert beta_asked.status_code == 400
    assert "not sites that approved study" in beta_asked.json()["detail"]
    job = api.get(f"/jobs/{created.json()['id']}", headers=auth(rita)).json()
    assert job["sites"] == ["alpha"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"model": {"type": "mlp"}}, "model type 'mlp'"),
        ({"features": ["ext.x1", "ext.x2", "age_at_diagnosis"]}, "fields age_at_diagnosis"),
        ({"privacy": {"secure_aggregation": True}}, None),  # more private than asked: fine
    ],
)
def test_a_job_outside_its_projects_scope_is_refused_naming_why(
    api: TestClient, state: State, rita: str, change: dict[str, Any], problem: str | None
) -> None:
    add_site(state.home, "gamma")
    project = declare(api, rita)
    decide(api, state.credentials["alpha"], project)
    spec = make_spec(project="study", **change).model_dump(mode="json")
    response = api.post("/jobs", json=spec, headers=auth(rita))
    if problem is None:
        assert response.status_code != 400 or "outside" not in response.text
        return
    assert response.status_code == 400 and problem in response.json()["detail"]


def test_jobs_need_a_project_their_submitter_belongs_to(
    api: TestClient, state: State, rita: str
) -> None:
    ross = add_principal(state.home, "ross", "researcher").token
    decide(api, state.credentials["alpha"], declare(api, rita))
    no_project = make_spec(project=None).model_dump(mode="json")
    refused = api.post("/jobs", json=no_project, headers=auth(rita))
    assert refused.status_code == 400 and "project" in refused.json()["detail"]
    spec = make_spec(project="study").model_dump(mode="json")
    assert api.post("/jobs", json=spec, headers=auth(ross)).status_code == 404
    assert api.post("/jobs", json=spec, headers=auth(rita)).status_code == 201


@pytest.mark.parametrize(
    "scope",
    [
        {"kinds": ["train"], "fields": ["x"]},  # trains, names no model type
        {"kinds": ["analysis"], "models": ["mlp"], "analyses": ["cox"], "fields": ["x"]},
        {"kinds": ["train"], "models": ["logistic"], "fields": []},
        {"kinds": ["train", "train"], "models": ["logistic"], "fields": ["x"]},
    ],
)
def test_a_project_declares_a_coherent_scope(
    api: TestClient, rita: str, scope: dict[str, Any]
) -> None:
    body = {"name": "p", "title": "t", "purpose": "p", "principal_investigator": "i",
            "scope": scope}  # fmt: skip
    assert api.post("/projects", json=body, headers=auth(rita)).status_code == 422
