"""Failed authentications: logged, in a bounded number of lines, and throttled per source
and per credential before any route runs.

``Throttle`` (a pure ASGI middleware) watches the answers: every 401 is a failure of the
request's source (its address; an IPv6 address by its /64, which one attacker usually holds
whole) and of the credential it presented (the SHA-256 of the bearer token, as the database
keeps valid ones; never the token). Each of the two has a token bucket
(``AuthFailures``): ``auth_failure_limit`` failures at once, then one more every
``auth_failure_window_seconds / auth_failure_limit`` seconds; a whole window without failures
refills it. Once it is empty, requests get 429 with ``Retry-After`` before the app runs (no
database work).

The source's bucket does not refuse a credential known to be good (one a route accepted, or a
site credential the orchestrator has verified): several centres' edges, or a hospital's NAT,
may share an address with an attacker, and must go on working. A credential's own bucket
refuses it wherever it comes from, but only its own failures (a revoked token, or a site's
token on a person's route) empty it: nobody else can present it.

Memory is bounded whatever the keys: each table keeps the ``TRACKED`` keys seen last.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oncofed.orchestrator.auth import token_hash
from oncofed.orchestrator.bodies import RouteTable
from oncofed.orchestrator.settings import Settings

log = logging.getLogger("oncofed.orchestrator.auth")

TRACKED = 10_000
"""Keys each table keeps at most (sources, credentials, credentials known good); the least
recently used go first."""
LOG_PER_SOURCE = 5
"""Lines logged per window about one source's failures (and as many about its refusals)."""
LOG_PER_WINDOW = 100
"""Lines logged per window in all; the rest are counted, and summed up in one line."""
REASON_BYTES = 512
"""Of a 401's body, the bytes read for the reason logged."""

FailureHook = Callable[[str, str, str | None], None]
"""``on_failure(source, route, credential_hash)``: called for every failure (not limited)."""

RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "Too many failed authentications from this address or with this "
        "credential; Retry-After says when to try again.",
        "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                }
            }
        },
    }
}
"""What every route may answer because of this module (for the OpenAPI document)."""


class _Buckets:
    """A token bucket per key, for the ``TRACKED`` keys that failed last."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.rate = limit / window
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str, now: float) -> float:
        entry = self._levels.get(key)
        if entry is None:
            return self.limit
        level, at = entry
        return min(self.limit, level + (now - at) * self.rate)

    def wait(self, key: str, now: float) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        level = self._level(key, now)
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def fail(self, key: str, now: float) -> bool:
        """Count a failure of ``key``; True when this one leaves it refused."""
        before = self._level(key, now)
        self._levels[key] = (before - 1, now)
        self._levels.move_to_end(key)
        if len(self._levels) > TRACKED:
            self._levels.popitem(last=False)
        return before - 1 < 1 <= before


class _LogBudget:
    """At most ``LOG_PER_SOURCE`` lines per key and ``LOG_PER_WINDOW`` in all per window;
    what is not logged is counted and summed up in one line with the first line of a later
    window."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._start = -math.inf
        self._lines = 0
        self._dropped = 0
        self._by_key: dict[str, int] = {}  # at most LOG_PER_WINDOW keys

    def allow(self, key: str, now: float) -> bool:
        if now - self._start >= self.window:
            if self._dropped:
                log.warning(
                    "%d more failed authentications not logged singly in the last %.0f s",
                    self._dropped,
                    now - self._start,
                )
            self._start, self._lines, self._dropped = now, 0, 0
            self._by_key.clear()
        logged = self._by_key.get(key, 0)
        if self._lines >= LOG_PER_WINDOW or logged >= LOG_PER_SOURCE:
            self._dropped += 1
            return False
        self._lines += 1
        self._by_key[key] = logged + 1
        return True


class AuthFailures:
    """Failed authentications so far, by source and by credential; which requests to refuse;
    what to log. Used from the event loop only (no lock).

    ``verified(credential_hash)`` says whether the app knows a credential as good (not None)
    without a database read; ``on_failure`` (an attribute the audit log may set) is called for
    every failure."""

    def __init__(
        self,
        settings: Settings,
        verified: Callable[[str], object] = lambda _: None,
        on_failure: FailureHook | None = None,
    ) -> None:
        limit, window = settings.auth_failure_limit, settings.auth_failure_window_seconds
        self._sources = _Buckets(limit, window)
        self._credentials = _Buckets(limit, window)
        self._known: OrderedDict[str, None] = OrderedDict()
        self._verified = verified
        self._budget = _LogBudget(window)
        self.on_failure = on_failure

    def good(self, credential: str | None) -> bool:
        """Whether a route accepted ``credential`` (since its last failure), or the app
        knows it as good."""
        if credential is None:
            return False
        if credential in self._known:
            self._known.move_to_end(credential)
            return True
        return self._verified(credential) is not None

    def refusal(self, source: str, credential: str | None) -> tuple[float, str] | None:
        """Seconds to wait and why, when the request is to be refused before it runs."""
        now = time.monotonic()
        if credential is not None and (wait := self._credentials.wait(credential, now)):
            return wait, "too many failed authentications with this credential"
        if (wait := self._sources.wait(source, now)) and not self.good(credential):
            return wait, "too many failed authentications from this address"
        return None

    def succeeded(self, credential: str) -> None:
        """A route that asks for a credential accepted this one."""
        self._known[credential] = None
        self._known.move_to_end(credential)
        if len(self._known) > TRACKED:
            self._known.popitem(last=False)

    def failed(self, source: str, route: str, credential: str | None, reason: str) -> None:
        """Count a 401 against its source and credential, log it (within the budget) and
        call ``on_failure``."""
        now = time.monotonic()
        short = credential[:8] if credential else "none"
        if self._budget.allow(source, now):
            log.warning(
                "authentication failed: source=%s route=%s credential=%s reason=%r",
                source,
                route,
                short,
                reason,
            )
        self._fail(self._sources, source, f"source {source}", now)
        if credential is not None:
            self._known.pop(credential, None)
            self._fail(self._credentials, credential, f"credential {short}", now)
        if self.on_failure is not None:
            try:
                self.on_failure(source, route, credential)
            except Exception:
                if self._budget.allow("on_failure", now):
                    log.exception("recording a failed authentication failed")

    def _fail(self, buckets: _Buckets, key: str, name: str, now: float) -> None:
        if buckets.fail(key, now) and self._budget.allow(f"{name} refused", now):
            log.warning(
                "%s refused (429) after %d failed authentications; it may try again in %.0f s",
                name,
                buckets.limit,
                buckets.wait(key, now),
            )


def source_of(scope: Scope) -> str:
    """The request's source: its client's address, an IPv6 one as its /64 network."""
    client = scope.get("client")
    return _source(str(client[0])) if client else "unknown"


@functools.lru_cache(maxsize=4096)
def _source(host: str) -> str:
    """``source_of`` a client's address (parsed once: every request of an edge names it)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # not an address (a test client's name)
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


def credential_of(scope: Scope) -> str | None:
    """The SHA-256 of the presented bearer token (of the whole header for another scheme)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            scheme, _, token = text.partition(" ")
            return token_hash(token.strip() if scheme.lower() == "bearer" else text)
    return None


def _reason(body: bytes | bytearray) -> str:
    """The ``detail`` of a 401's JSON body (the app's own words), or what it was."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return "unreadable answer"
    return str(detail)[:200]


class Throttle:
    """Count each 401 against its source and credential; refuse (429) those that failed too
    often, before the app runs."""

    def __init__(self, app: ASGIApp, failures: AuthFailures) -> None:
        self.app = app
        self.failures = failures
        self.table = RouteTable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        source, credential = source_of(scope), credential_of(scope)
        if (refusal := self.failures.refusal(source, credential)) is not None:
            wait, detail = refusal
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
            await JSONResponse({"detail": detail}, 429, headers=headers)(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if credential is not None and 200 <= status < 300:
                    self._accepted(scope, credential)
            elif message["type"] == "http.response.body" and status == 401:
                body.extend(message.get("body", b"")[: REASON_BYTES - len(body)])
                if not message.get("more_body", False):
                    self.failures.failed(source, self._route(scope), credential, _reason(body))
            await send(message)

        await self.app(scope, receive, watch)

    def _accepted(self, scope: Scope, credential: str) -> None:
        """A success proves the credential good only on a route that asks for one."""
        if self.failures.good(credential):
            return
        route = self.table.match(scope)
        if route is not None and route.secured:
            self.failures.succeeded(credential)

    def _route(self, scope: Scope) -> str:
        route = self.table.match(scope)
        return f"{route.method} {route.path}" if route else repr(scope["path"][:100])
