"""Every status each route of the API answers, written into the app's OpenAPI document.

One place, so the document cannot drift from the routes:

- derived from what a route depends on (``derived``): a credential (``CurrentSite``,
  ``CurrentPrincipal``): 401; a role (``CurrentResearcher``, ``CurrentOperator``): 403; a
  JSON body: 400 (bytes that are not text) and 422; a parameter that can fail to parse: 422;
- ``ROUTE_STATUSES``: what a route's own code, and the services it calls, raise (an
  ``OrchestratorError``'s status), by (method, path);
- 413 and 429, which the body-size and throttle middlewares may answer on every route, are the
  app's own ``responses`` (``bodies.RESPONSES``, ``throttle.RESPONSES``).

Error bodies are ``Problem`` (``{"detail": "..."}``, as ``app._orchestrator_error`` writes
them); a 422 is ``HTTPValidationError`` as ``routes.invalid_request`` writes it (each error's
type, location and message, never its input), or, on the routes that take a task's answer, the
``ResultAck`` of a rejected answer. ``tests/orchestrator/test_schema_fuzz.py`` fuzzes every
operation with each kind of caller and checks each answer against this document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, get_args

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from oncofed.orchestrator import deps
from oncofed.wire.messages import API_PREFIX

Document = dict[str, Any]

CREDENTIALS: frozenset[Callable[..., Any]] = frozenset({deps.current_site, deps.current_principal})
"""Dependencies that authenticate the caller (401 without a valid credential)."""
ROLES: frozenset[Callable[..., Any]] = frozenset(
    get_args(alias)[1].dependency for alias in (deps.CurrentResearcher, deps.CurrentOperator)
)
"""Dependencies that require a role (403 for a person of another)."""

_TASK = {
    403: "The task belongs to another site.",
    404: "No such task.",
    409: "The task is closed, or already has a different accepted answer.",
}
_SECURE = {
    **_TASK,
    400: "The task is not in a securely aggregated round.",
    409: "The task or its round takes no such post now, or the post is not this site's.",
    422: "The post does not validate, or was rejected (a ResultAck): the site leaves the round.",
}
_UPLOAD = {
    400: "The body's SHA-256 is not the one its header claims, the connection closed before "
    "the whole body came, or the task takes no such answer.",
    413: "The body is larger than this task takes.",
}
ROUTE_STATUSES: dict[tuple[str, str], dict[int, str]] = {
    ("POST", f"{API_PREFIX}/enrol"): {
        400: "No certificate request where mutual TLS is served, one without its identity "
        "key, or one that is not well formed and signed.",
        401: "Unknown or already used enrolment token.",
        403: "The certificate request is for another key than the identity key.",
        404: "The orchestrator has no consortium CA.",
    },
    ("POST", f"{API_PREFIX}/certificate"): {
        400: "The certificate request is not well formed and signed by an Ed25519 key.",
        401: "Served with mutual TLS: no valid, unrevoked client certificate.",
        403: "The client certificate or the request is not for this site's identity key.",
        404: "The orchestrator has no consortium CA.",
        409: "The site has no identity key on record.",
    },
    ("GET", f"{API_PREFIX}/identity"): {404: "This orchestrator has no identity key."},
    ("PUT", f"{API_PREFIX}/identity"): {409: "The site has another identity key on record."},
    ("GET", f"{API_PREFIX}/blobs/{{sha}}"): {404: "No such blob was sent to this site."},
    ("POST", f"{API_PREFIX}/tasks/{{task_id}}/update"): {
        **_TASK,
        **_UPLOAD,
        422: "The update was rejected (a ResultAck): the site leaves the round.",
    },
    ("POST", f"{API_PREFIX}/tasks/{{task_id}}/secure/masked"): {**_SECURE, **_UPLOAD},
    ("POST", f"{API_PREFIX}/tasks/{{task_id}}/secure/keys"): _SECURE,
    ("POST", f"{API_PREFIX}/tasks/{{task_id}}/secure/shares"): _SECURE,
    ("POST", f"{API_PREFIX}/tasks/{{task_id}}/secure/unmask"): _SECURE,
    ("POST", f"{API_PREFIX}/tasks/{{task_id}}/result"): {
        **_TASK,
        400: "The connection closed before the whole body came, or the task takes an update.",
        413: "The body is larger than the upload limit.",
        422: "The result does not validate, or was rejected (a ResultAck): the site leaves "
        "the round.",
    },
    ("POST", f"{API_PREFIX}/tasks/{{task_id}}/decline"): _TASK,
    ("PUT", f"{API_PREFIX}/profiles/{{dataset}}"): {
        422: "The report does not validate, or is about another dataset than the path's.",
    },
    ("POST", f"{API_PREFIX}/sites"): {409: "A site of that name exists already."},
    ("POST", f"{API_PREFIX}/sites/{{name}}/revoke"): {
        404: "No such site (or no consortium CA to list its certificates as revoked).",
    },
    ("POST", f"{API_PREFIX}/sites/{{name}}/disable"): {404: "No such site."},
    ("POST", f"{API_PREFIX}/sites/{{name}}/enable"): {404: "No such site."},
    ("DELETE", f"{API_PREFIX}/sites/{{name}}"): {
        404: "No such site (or no consortium CA to list its certificates as revoked).",
        409: "The site has a task in an open round of a running job (the job is named).",
    },
    ("GET", f"{API_PREFIX}/sites/{{name}}/profiles"): {
        403: "A site admin reads their own site's record only.",
        404: "No such site.",
    },
    ("POST", f"{API_PREFIX}/jobs"): {
        400: "The job names no project, falls outside its project's scope, or cannot run at "
        "its sites (their number, its model's size, secure aggregation, a listed site "
        "disabled).",
        403: "The job would go beyond one of the researcher's quotas.",
        404: "No such project among the caller's.",
        409: "No enrolled site has approved the project yet.",
    },
    ("POST", f"{API_PREFIX}/projects"): {
        404: "A member named is not a researcher.",
        409: "A project of that name exists already.",
    },
    ("GET", f"{API_PREFIX}/projects/{{name}}"): {404: "No such project among the caller's."},
    ("POST", f"{API_PREFIX}/projects/{{name}}/members"): {
        403: "Only the project's owner or the operator adds members.",
        404: "No such project among the caller's, or no such researcher.",
    },
    ("GET", f"{API_PREFIX}/site/projects/{{name}}"): {404: "No such project."},
    ("PUT", f"{API_PREFIX}/site/projects/{{name}}/decision"): {
        404: "No such project.",
        409: "The decision is about another scope than the project's.",
    },
    ("GET", f"{API_PREFIX}/jobs/{{job_id}}"): {404: "No such job visible to the caller."},
    ("POST", f"{API_PREFIX}/jobs/{{job_id}}/cancel"): {
        404: "No such job visible to the caller.",
        409: "The job has ended already (completed, failed or cancelled).",
    },
    ("GET", f"{API_PREFIX}/jobs/{{job_id}}/model"): {
        403: "Site admins get no models.",
        404: "No such job visible to the caller.",
        409: "The job has no model yet.",
    },
    ("POST", f"{API_PREFIX}/people"): {
        400: "A site admin names their site, and only a site admin does.",
        404: "No such site.",
        409: "A person of that name exists already.",
    },
    ("DELETE", f"{API_PREFIX}/tokens/{{token_id}}"): {
        404: "No such token (among the caller's own, unless the operator asks).",
    },
}
"""(method, path) -> the statuses its own code and its services answer, beyond ``derived``."""

_ANSWERS = ("update", "result", "secure/masked", "secure/keys", "secure/shares", "secure/unmask")
REJECTED = frozenset(("POST", f"{API_PREFIX}/tasks/{{task_id}}/{a}") for a in _ANSWERS)
"""Routes whose 422 may be the ``ResultAck`` of a rejected answer (``routes.edge._ack``)."""
BINARY = frozenset(
    {("GET", f"{API_PREFIX}/blobs/{{sha}}"), ("GET", f"{API_PREFIX}/jobs/{{job_id}}/model")}
)
"""Routes whose 200 is a file (``application/octet-stream``)."""

_DERIVED = {
    400: "The body cannot be read as JSON text (FastAPI: not UTF-8).",
    401: "No valid credential: missing, unknown, revoked or expired.",
    403: "The caller's role may not do this.",
    422: "The request does not validate: each error's type, location and message.",
}
DISABLED = "The site was disabled by the operator (until it is enabled)."
"""The 403 of every route a site calls (``identity.site_for``)."""
PROBLEM: Document = {
    "title": "Problem",
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION: dict[str, Document] = {
    "HTTPValidationError": {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {
            "detail": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}
        },
        "required": ["detail"],
    },
    "ValidationError": {
        "title": "ValidationError",
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"type": "string"},
        },
        "required": ["type", "loc", "msg"],
        "additionalProperties": False,
    },
}
"""A 422's body as ``routes.invalid_request`` writes it (FastAPI's names, our exact shape)."""


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) the document with every status."""
    generate = app.openapi

    def openapi() -> Document:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app, generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe(app: FastAPI, document: Document) -> Document:
    """``document`` (FastAPI's) with each route's statuses and their bodies."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(VALIDATION, Problem=PROBLEM)
    for route in iter_route_contexts(app.routes):  # included routers' routes too
        path = route.path_format or ""
        if path not in document["paths"] or not isinstance(route.original_route, APIRoute):
            continue  # not in the document, or not an API route
        for method in route.methods or ():
            key = (method, path)
            responses = document["paths"][path][method.lower()]["responses"]
            statuses = derived(route)
            for status, description in ROUTE_STATUSES.get(key, {}).items():
                statuses[status] = f"{statuses.get(status, '')} {description}".lstrip()
            if 422 not in statuses:  # FastAPI adds it whenever there is any parameter
                responses.pop("422", None)
            for status, description in statuses.items():
                responses[str(status)] = _response(status, description, key in REJECTED)
            if key in BINARY:
                responses["200"]["content"] = {"application/octet-stream": {}}
    return document


def derived(route: APIRoute | RouteContext) -> dict[int, str]:
    """The statuses a route answers because of what it depends on."""
    calls = set(_calls(route.dependant))
    statuses: dict[int, str] = {}
    if calls & CREDENTIALS:
        statuses[401] = _DERIVED[401]
    if calls & ROLES:
        statuses[403] = _DERIVED[403]
    if deps.current_site in calls:
        statuses[403] = DISABLED
    if _reads_body(route.dependant):
        statuses[400] = _DERIVED[400]
    if _parses(route.dependant):
        statuses[422] = _DERIVED[422]
    return statuses


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _reads_body(dependant: Dependant) -> bool:
    return bool(dependant.body_params) or any(_reads_body(d) for d in dependant.dependencies)


def _parses(dependant: Dependant) -> bool:
    """Whether a request can fail to validate: a body, a query, header or cookie parameter,
    or a path parameter that is not any string."""
    if dependant.body_params or dependant.query_params:
        return True
    if dependant.header_params or dependant.cookie_params:
        return True
    if any(p.field_info.annotation is not str for p in dependant.path_params):
        return True
    return any(_parses(sub) for sub in dependant.dependencies)


def _response(status: int, description: str, rejected: bool) -> Document:
    if status == 204:
        return {"description": description}
    schema: Document = {"$ref": "#/components/schemas/Problem"}
    if status == 422:
        schema = {"$ref": "#/components/schemas/HTTPValidationError"}
        if rejected:
            schema = {"anyOf": [schema, {"$ref": "#/components/schemas/ResultAck"}]}
    return {"description": description, "content": {"application/json": {"schema": schema}}}
