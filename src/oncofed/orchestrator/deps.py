"""Dependency aliases used by every route: settings, sessions, the coordinator, identities."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from oncofed.audit import actor
from oncofed.orchestrator import identity, tls
from oncofed.orchestrator.auth import token_hash
from oncofed.orchestrator.errors import Forbidden, Unauthorized
from oncofed.orchestrator.rounds import Coordinator
from oncofed.orchestrator.settings import Settings

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    """Who is calling: a site (role ``site``) or a person; a site admin's ``site_id`` is the
    site they act for."""

    id: int
    name: str
    role: str
    site_id: int | None = None

    @property
    def actor(self) -> str:
        """As the audit log names who acted: ``researcher:rita``."""
        return actor(self.role, self.name)


# The dependencies that only read the app's state are coroutines: FastAPI runs a plain
# function in a worker thread, a hop that costs more than they do.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def get_session(
    sessions: Annotated[sessionmaker[Session], Depends(get_sessions)],
) -> Iterator[Session]:
    """One transaction per request: committed on success, rolled back on error."""
    with sessions.begin() as session:
        yield session


async def get_coordinator(request: Request) -> Coordinator:
    coordinator: Coordinator = request.app.state.coordinator
    return coordinator


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    return bearer_token(None if credentials is None else credentials.credentials)


def bearer_token(token: str | None) -> str:
    """The bearer token presented; 401 when there is none."""
    if token is None:
        raise Unauthorized("missing bearer token")
    return token


async def current_site(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The calling edge (``site_caller``)."""
    return await site_caller(request, _token(credentials))


async def site_caller(request: Request, token: str) -> Caller:
    """The edge presenting the bearer ``token``. A credential verified once is remembered
    and re-verified by the tick (``identity.Credentials``): no thread, no database. That it
    was seen is written with the others' (``Sightings``)."""
    key = token_hash(token)
    known: identity.Credentials = request.app.state.credentials
    if (hit := known.get(key)) is None:
        sessions: sessionmaker[Session] = request.app.state.sessions

        def verify() -> tuple[int, str]:
            verified = time.monotonic()
            with sessions() as session:
                site = identity.site_for(session, token)
                known.put(key, site.id, site.name, verified)
                return site.id, site.name

        hit = await run_in_threadpool(verify)
        request.app.state.auth_log.success(key, actor("site", hit[1]))
    tls.require_site_certificate(request, hit[1])
    request.app.state.sightings.saw(hit[0])
    return Caller(hit[0], hit[1], "site")


def current_principal(
    request: Request,
    sessions: Annotated[sessionmaker[Session], Depends(get_sessions)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The person holding the bearer token (verified on every request: a revoked or expired
    token stops working at once)."""
    token = _token(credentials)
    with sessions() as session:
        principal = identity.authenticate_principal(session, token)
        caller = Caller(principal.id, principal.name, principal.role, principal.site_id)
    request.app.state.auth_log.success(token_hash(token), actor(caller.role, caller.name))
    return caller


def _role(*roles: str) -> Callable[[Caller], Awaitable[Caller]]:
    async def check(caller: Annotated[Caller, Depends(current_principal)]) -> Caller:
        if caller.role not in roles:
            raise Forbidden(f"this needs the role {' or '.join(roles)}, not {caller.role}")
        return caller

    return check


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
"""For routes whose work runs in transactions of its own (the coordinator's)."""
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
"""Committed before the response leaves (FastAPI's default ends it after the response)."""
CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]
CurrentSite = Annotated[Caller, Depends(current_site)]
CurrentPrincipal = Annotated[Caller, Depends(current_principal)]
"""Any person: the operator, a researcher or a site admin (routes narrow the scope)."""
CurrentResearcher = Annotated[Caller, Depends(_role("operator", "researcher"))]
"""A researcher, or the operator (who holds the database, and may read what it holds)."""
CurrentOperator = Annotated[Caller, Depends(_role("operator"))]
