"""Request body limits on every route, checked before the body is read.

``BodyLimits`` is a pure ASGI middleware: it never buffers a body. A declared
``Content-Length`` above the route's limit is refused with 413 before the app runs (no
token checked, no database read); a body without one (chunked) is counted as the route
receives it, and the route's next ``receive`` after the limit raises ``BodyTooLarge``, which
FastAPI answers as the 413 it is: nothing past the limit (and the chunk that crossed it) is
ever read.

A route's limit is decided here, for every operation of the app's own OpenAPI document:
``ROUTE_LIMITS`` names the few routes whose limit is not the default, and every other route
takes ``max_json_body_bytes`` when it asks for a credential, ``max_unauthenticated_body_bytes``
when it does not (read from the document's ``security``). A new route is thus limited by
default, to the small JSON limit; one that streams large bodies is added to ``ROUTE_LIMITS``
(a test checks that each entry names a route of the app, so the table cannot drift).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oncofed.orchestrator import profiles
from oncofed.orchestrator.settings import Settings
from oncofed.wire.messages import API_PREFIX

Limit = Callable[[Settings], tuple[int, str]]
"""A route's limit in bytes, and the setting (or constant) it comes from."""


def _upload(settings: Settings) -> tuple[int, str]:
    return settings.max_upload_bytes, "max_upload_bytes"


def _profile(_: Settings) -> tuple[int, str]:
    return profiles.MAX_PROFILE_BYTES, "profiles.MAX_PROFILE_BYTES"


ROUTE_LIMITS: dict[tuple[str, str], Limit] = {
    ("POST", f"{API_PREFIX}/tasks/{{task_id}}/update"): _upload,
    ("POST", f"{API_PREFIX}/tasks/{{task_id}}/secure/masked"): _upload,
    ("POST", f"{API_PREFIX}/tasks/{{task_id}}/result"): _upload,
    ("PUT", f"{API_PREFIX}/profiles/{{dataset}}"): _profile,
}
"""(method, path) of the routes whose limit is not the default: those that stream a task's
answer (``routes/edge.py``, which also checks each task's own, smaller, limit as it streams)
and the data profile (which reads its body up to the same constant)."""

_DETAIL = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
        }
    }
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"description": "The request body is larger than this route takes.", "content": _DETAIL}
}
"""What every route may answer because of this module (for the OpenAPI document)."""


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit: FastAPI's handler of HTTP
    errors answers it as 413 ``{"detail": ...}``, like the app's other errors."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


@dataclass(frozen=True)
class Route:
    """One operation of the app's OpenAPI document."""

    method: str
    path: str
    pattern: re.Pattern[str]
    secured: bool  # asks for a credential

    def limit(self, settings: Settings) -> tuple[int, str]:
        if (chosen := ROUTE_LIMITS.get((self.method, self.path))) is not None:
            return chosen(settings)
        if self.secured:
            return settings.max_json_body_bytes, "max_json_body_bytes"
        return settings.max_unauthenticated_body_bytes, "max_unauthenticated_body_bytes"


class RouteTable:
    """The app's operations, read from its OpenAPI document on first use (the app's own
    description of its routes), to tell which one a request is for before the app runs."""

    def __init__(self) -> None:
        self._routes: list[Route] | None = None

    def routes(self, app: Any) -> list[Route]:
        if self._routes is None:
            document: dict[str, Any] = app.openapi()
            self._routes = [
                Route(method.upper(), path, _pattern(path), bool(operation.get("security")))
                for path, operations in document["paths"].items()
                for method, operation in operations.items()
            ]
        return self._routes

    def match(self, scope: Scope) -> Route | None:
        """The route the request is for; None for a path or method no route takes."""
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        for route in self.routes(scope["app"]):
            if route.method == method and route.pattern.fullmatch(path):
                return route
        return None


def _pattern(template: str) -> re.Pattern[str]:
    """``/jobs/{job_id}`` as a regular expression (a parameter is one path segment)."""
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared ``Content-Length`` (None without a valid one) and whether the request
    says a body follows at all."""
    declared, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                chunked = True  # servers refuse these; count what comes anyway
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked or bool(declared)


class BodyLimits:
    """Refuse bodies larger than their route takes (413), before reading them."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.table = RouteTable()

    def limit(self, scope: Scope) -> tuple[int, str]:
        """The request's limit and the setting it comes from. A request no route takes is
        held to the smallest: nothing will read its body."""
        route = self.table.match(scope)
        if route is None:
            return self.settings.max_unauthenticated_body_bytes, "max_unauthenticated_body_bytes"
        return route.limit(self.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, has_body = _framing(scope)
        if not has_body:
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit(scope)
        detail = f"the request body exceeds {limit} bytes, the limit of this route ({setting})"
        if declared is not None and declared > limit:
            # The connection closes after the answer: the server need not drain the body.
            refusal = JSONResponse({"detail": detail}, 413, headers={"Connection": "close"})
            await refusal(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            if received > limit:
                raise BodyTooLarge(detail)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(detail)
            return message

        await self.app(scope, limited, send)
