"""Every operation of the OpenAPI document, fuzzed by schemathesis with each kind of caller:
no answer is a server error, and each answer's status, content type and body are the ones the
document gives for that route (``orchestrator/openapi.py``).

In process, on SQLite, with a bounded and deterministic number of examples per operation:
generated values (valid and invalid), then valid values around real objects (a project, a
job, a task, a token, a site, a dataset), so the fuzz also reaches past the 404s. Each
example is sent once by every caller: generating it costs more than sending it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.openapi.checks import UndefinedStatusCode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select, update

from oncofed.orchestrator import Settings, create_app, identity, openapi
from oncofed.orchestrator.auth import token_hash
from oncofed.orchestrator.db import AccessToken, Principal, Site
from oncofed.orchestrator.setup import add_principal, add_site
from tests.support import State, auth, make_spec

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CALLERS = ("anonymous", "operator", "researcher", "site_admin", "edge")
EXAMPLES = 5
"""Examples per operation and kind of values (generated valid, generated invalid, valid
around real objects), each sent by the five callers: about 2,000 requests in all."""
REVOKING = {
    "DELETE /v1/tokens/{token_id}",
    "POST /v1/sites/{name}/revoke",
    "POST /v1/sites/{name}/disable",
    "DELETE /v1/sites/{name}",
}
"""Operations that may lock a caller out (a generated id can be the caller's token): the
callers' tokens and alpha's credential are reinstated after each."""
REAL_OVERRIDES = {
    (method, f"/v1/sites/{{name}}{action}"): {"name": "beta"}
    for method, action in (("POST", "/revoke"), ("POST", "/disable"), ("DELETE", ""))
}
"""Real values that differ by route: the operator revokes, disables and removes beta, not
alpha (whose edge goes on calling)."""

pytestmark = pytest.mark.parametrize("state", ["sqlite"], indirect=True)


@dataclass
class Target:
    """The app under test, its document as schemathesis reads it, the callers' headers and
    real path values."""

    app: FastAPI
    schema: Any
    headers: dict[str, dict[str, str]]
    real: dict[str, str]
    reinstate: Callable[[], None]
    failures: dict[tuple[str, str, tuple[str, ...]], str] = field(default_factory=dict)
    succeeded: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def send(self, case: Any) -> None:
        """``case`` from every caller; each failure kept once per operation, caller and kind."""
        for caller in CALLERS:
            try:
                response = case.call(headers=self.headers[caller])
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:  # a 500 raises in process
                kinds = tuple(getattr(e, "title", repr(e)) for e in _leaves(exc))
                key = (case.operation.label, caller, kinds)
                self.failures.setdefault(key, f"{case.operation.label} as {caller}: {exc}")
            else:
                if response.status_code < 300:
                    self.succeeded[caller].add(case.operation.label)
        if case.operation.label in REVOKING:
            self.reinstate()


def _leaves(exc: BaseException) -> list[BaseException]:
    return list(exc.exceptions) if isinstance(exc, BaseExceptionGroup) else [exc]


@pytest.fixture
def target(state: State) -> Iterator[Target]:
    """The app on ``state``, unthrottled (every anonymous request fails authentication), with
    long polls of 10 ms."""
    add_site(state.home, "gamma")
    limits = {"auth_failure_limit": 1 << 30, "long_poll_seconds": 0.01}
    app = create_app(Settings.load(state.home).model_copy(update=limits))
    tokens = {
        "operator": state.admin_token,
        "researcher": add_principal(state.home, "rita", "researcher").token,
        "site_admin": add_principal(state.home, "ada", "site_admin", "alpha").token,
        "edge": state.credentials["alpha"],
    }
    headers = {caller: auth(tokens[caller]) if caller in tokens else {} for caller in CALLERS}
    hashes = [token_hash(token) for token in tokens.values()]

    def reinstate() -> None:
        with state.sessions.begin() as session:
            revoked = AccessToken.token_hash.in_(hashes) & AccessToken.revoked_at.is_not(None)
            session.execute(update(AccessToken).where(revoked).values(revoked_at=None))
            alpha = {
                "credential_hash": token_hash(tokens["edge"]),
                "revoked_at": None,
                "disabled_at": None,
                "removed_at": None,
            }
            session.execute(update(Site).where(Site.name == "alpha").values(**alpha))

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts its lifespan
    try:
        yield Target(app, schema, headers, _objects(app, state, headers), reinstate)
    finally:
        asgi.shutdown_lifespans()


def _objects(app: FastAPI, state: State, headers: dict[str, dict[str, str]]) -> dict[str, str]:
    """Real values for path parameters: rita's project (approved at alpha) and job, alpha's
    first task, a spare token of rita's."""
    client = asgi.get_client(cast(Any, app))  # an ASGI app (its types are narrower)

    def call(method: str, path: str, caller: str, **kwargs: Any) -> Any:
        answer = client.request(method, f"/v1{path}", headers=headers[caller], **kwargs)
        assert answer.status_code in (200, 201), (path, answer.text)
        return answer.json()

    scope = {"kinds": ["train"], "models": ["logistic"], "fields": ["ext.x1", "ext.x2", "ext.y"]}
    about = {"title": "Fuzz", "purpose": "Fuzzing", "principal_investigator": "Rita"}
    project = {"name": "study", **about, "scope": scope}
    sha = call("POST", "/projects", "researcher", json=project)["scope_sha256"]
    approval = {"approve": True, "scope_sha256": sha, "dataset": "data", "policy_version": "0" * 12}
    call("PUT", "/site/projects/study/decision", "edge", json=approval)
    spec = make_spec(project="study").model_dump(mode="json")
    job = call("POST", "/jobs", "researcher", json=spec)
    task = call("GET", "/tasks/next", "edge", params={"wait": 0})
    with state.sessions.begin() as session:
        rita = session.scalars(select(Principal).where(Principal.name == "rita")).one()
        spare = identity.issue_token(session, rita, "spare", timedelta(days=1))
    return {
        "job_id": job["id"],
        "task_id": task["task_id"],
        "token_id": str(spare.id),
        "name": "alpha",
        "project": "study",
        "dataset": "data",
        "sha": task.get("model_sha256") or "0" * 64,
    }


def _real(target: Target, method: str, path: str, names: set[str]) -> dict[str, str]:
    """The real value of each path parameter (``name``: a project's on projects' routes)."""
    values = {name: target.real[name] for name in names}
    if "name" in names and "/projects/" in path:
        values["name"] = target.real["project"]
    return {**values, **REAL_OVERRIDES.get((method, path), {})}


def _fuzz(case_strategy: Any, test: Callable[[Any], None]) -> Callable[[], None]:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=case_strategy)
    def run(case: Any) -> None:
        test(case)

    return run


def test_every_answer_matches_the_document(target: Target) -> None:
    operations = [result.ok() for result in target.schema.get_all_operations()]
    assert {(o.method.upper(), o.path) for o in operations} == set(_operations(target.app))
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        real = _real(target, operation.method.upper(), operation.path, names)
        strategies = [
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=real),
        ]
        for strategy in strategies if names else strategies[:2]:
            try:
                _fuzz(strategy, target.send)()
            except Unsatisfiable:  # no invalid request exists (no parameter, no body)
                continue
    assert not target.failures, "\n\n".join(target.failures.values())
    # The fuzz reached the routes, not only refusals (a broken token would pass unseen).
    assert target.succeeded["anonymous"] >= {"GET /v1/health"}
    assert {"GET /v1/people", "POST /v1/sites", "GET /v1/jobs/{job_id}"} <= target.succeeded[
        "operator"
    ]
    assert {"POST /v1/tokens", "GET /v1/projects/{name}"} <= target.succeeded["researcher"]
    assert "GET /v1/sites/{name}/profiles" in target.succeeded["site_admin"]
    assert {"GET /v1/tasks/next", "PUT /v1/identity"} <= target.succeeded["edge"]


def _operations(app: FastAPI) -> Iterator[tuple[str, str]]:
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            yield method.upper(), path


def test_the_route_table_names_routes_of_the_app(target: Target) -> None:
    """An entry for a route renamed or removed fails here: the table cannot drift."""
    routes = set(_operations(target.app))
    assert set(openapi.ROUTE_STATUSES) <= routes
    assert routes >= openapi.BINARY | openapi.REJECTED


def test_each_route_documents_its_statuses(target: Target) -> None:
    """401 where a credential is needed, 403 where a role is, 422 where a request can fail
    to parse, the table's on top; error bodies as the app writes them."""
    paths = target.app.openapi()["paths"]
    codes = {
        (m.upper(), p): set(o["responses"]) for p, ops in paths.items() for m, o in ops.items()
    }
    assert codes["GET", "/v1/health"] == {"200", "413", "429"}
    assert codes["GET", "/v1/people"] == {"200", "401", "403", "413", "429"}
    assert codes["GET", "/v1/jobs/{job_id}"] == {"200", "401", "404", "413", "429"}
    assert codes["DELETE", "/v1/tokens/{token_id}"] == {"200", "401", "404", "413", "422", "429"}
    assert codes["GET", "/v1/tasks/next"] == {"200", "204", "401", "403", "413", "422", "429"}
    answers = paths["/v1/jobs/{job_id}"]["get"]["responses"]
    assert answers["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    rejected = paths["/v1/tasks/{task_id}/result"]["post"]["responses"]["422"]
    refs = {s["$ref"] for s in rejected["content"]["application/json"]["schema"]["anyOf"]}
    assert refs == {"#/components/schemas/HTTPValidationError", "#/components/schemas/ResultAck"}
    blob = paths["/v1/blobs/{sha}"]["get"]["responses"]["200"]
    assert set(blob["content"]) == {"application/octet-stream"}


def test_an_undocumented_status_fails_the_fuzz(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fuzz can fail: without the route table, the 404 of a made-up job is undocumented."""
    monkeypatch.setattr(openapi, "ROUTE_STATUSES", {})
    target.app.openapi_schema = None
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.app)
    operation = schema["/v1/jobs/{job_id}"]["GET"]

    def check(case: Any) -> None:
        case.call_and_validate(headers=target.headers["operator"], checks=CHECKS)

    with pytest.raises(FailureGroup) as failed:
        _fuzz(operation.as_strategy(), check)()
    assert [type(e) for e in failed.value.exceptions] == [UndefinedStatusCode]
