"""The edges' four hot routes, served without FastAPI's routing and dependency solving.

A round costs the orchestrator, for every site, an answer (``POST /tasks/{id}/update`` or
``/result``, which may wait for the site's next task: ``wait``), when it did not, a long
poll (``GET /tasks/next``), and the download of a global model too large to come with its task
(``GET /blobs/{sha}``). For each, FastAPI matches the request against every route and
solves the route's dependencies: about 0.3 ms of CPU, most of what a poll that finds nothing
costs. ``HotRoutes`` (an ASGI middleware inside the throttle and the body limits) takes those
four requests and calls the same endpoint functions with the same authentication
(``deps.site_caller``) and the same answers to errors; every other request, and these four
under any other method, goes to the app. The routes stay in the app, which
documents them in its OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi.exceptions import RequestValidationError
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from oncofed.orchestrator.deps import Caller, bearer_token, site_caller
from oncofed.orchestrator.errors import OrchestratorError
from oncofed.orchestrator.routes import edge, invalid_request
from oncofed.wire.messages import API_PREFIX

Endpoint = Callable[[Request, Caller, str], Awaitable[Response]]

_PATH = re.compile(rf"{re.escape(API_PREFIX)}/tasks/([^/]+?)(?:/(update|result))?")
_BLOB = re.compile(rf"{re.escape(API_PREFIX)}/blobs/([^/]+)")
_WAIT = TypeAdapter(Annotated[float, Field(ge=0, le=120)])
"""The three routes' query parameter ``wait``, as they declare it."""
_PLAIN_WAIT = re.compile(rb"wait=(\d{1,3}(?:\.\d{1,6})?)")
"""The query as edges send it (``wait=10.0``), read without parsing the query string."""


def _wait(request: Request, default: float) -> float:
    plain = _PLAIN_WAIT.fullmatch(request.scope["query_string"])
    if plain is not None and (seconds := float(plain.group(1))) <= 120:
        return seconds
    raw = request.query_params.get("wait")
    try:
        return default if raw is None else _WAIT.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("query", "wait")} for e in errors]) from exc


async def _poll(request: Request, site: Caller, _: str) -> Response:
    state = request.app.state
    wait = _wait(request, 25.0)
    return await edge.next_task(request, site, state.coordinator, state.settings, wait)


async def _update(request: Request, site: Caller, task_id: str) -> Response:
    state, wait = request.app.state, _wait(request, 0.0)
    return await edge.post_update(task_id, request, site, state.coordinator, state.settings, wait)


async def _result(request: Request, site: Caller, task_id: str) -> Response:
    state, wait = request.app.state, _wait(request, 0.0)
    return await edge.post_result(task_id, request, site, state.coordinator, state.settings, wait)


async def _blob(request: Request, site: Caller, sha: str) -> Response:
    return await edge.get_blob(sha, site, request.app.state.coordinator)


def _endpoint(scope: Scope) -> tuple[Endpoint, str] | None:
    """The endpoint a request goes to here, and its task id (a blob's SHA-256); None: the
    app's."""
    if scope["type"] != "http":
        return None
    if (blob := _BLOB.fullmatch(scope["path"])) is not None:
        return (_blob, blob.group(1)) if scope["method"] == "GET" else None
    if (match := _PATH.fullmatch(scope["path"])) is None:
        return None
    task, action = match.groups()
    method = scope["method"]
    if action is None:
        return (_poll, "") if task == "next" and method == "GET" else None
    if method != "POST":
        return None
    return (_update if action == "update" else _result), task


class HotRoutes:
    """Serves ``GET /tasks/next``, ``POST /tasks/{id}/update``, ``POST /tasks/{id}/result``
    and ``GET /blobs/{sha}`` straight away; passes everything else on to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (found := _endpoint(scope)) is None:
            await self.app(scope, receive, send)
            return
        endpoint, task_id = found
        request = Request(scope, receive)
        response: Response
        try:
            scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
            bearer = token if scheme.lower() == "bearer" and token else None
            site = await site_caller(request, bearer_token(bearer))
            response = await endpoint(request, site, task_id)
        except OrchestratorError as exc:
            response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        except RequestValidationError as exc:
            response = await invalid_request(request, exc)
        await response(scope, receive, send)
