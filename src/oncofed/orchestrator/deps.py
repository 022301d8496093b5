"""Dependency aliases used by every route: settings, sessions, the coordinator, identities."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from oncofed.orchestrator import identity
from oncofed.orchestrator.auth import token_hash
from oncofed.orchestrator.errors import Forbidden, Unauthorized
from oncofed.orchestrator.rounds import Coordinator
from oncofed.orchestrator.settings import Settings

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    id: int
    name: str
    role: str


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
    if credentials is None:
        raise Unauthorized("missing bearer token")
    return credentials.credentials


async def current_site(
    request: Request,
    sessions: Annotated[sessionmaker[Session], Depends(get_sessions)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The calling edge. A credential verified once is remembered and re-verified by the
    tick (``identity.Credentials``): no thread, no database. That it was seen is written with
    the others' (``Sightings``)."""
    token = _token(credentials)
    key = token_hash(token)
    known: identity.Credentials = request.app.state.credentials
    if (hit := known.get(key)) is None:

        def verify() -> tuple[int, str]:
            verified = time.monotonic()
            with sessions() as session:
                site = identity.site_for(session, token)
                known.put(key, site.id, site.name, verified)
                return site.id, site.name

        hit = await run_in_threadpool(verify)
    request.app.state.sightings.saw(hit[0])
    return Caller(hit[0], hit[1], "site")


def current_researcher(
    sessions: Annotated[sessionmaker[Session], Depends(get_sessions)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """A researcher or the operator (the operator may do everything a researcher may)."""
    with sessions() as session:
        principal = identity.authenticate_principal(session, _token(credentials))
        return Caller(principal.id, principal.name, principal.role)


async def current_admin(caller: Annotated[Caller, Depends(current_researcher)]) -> Caller:
    if caller.role != "admin":
        raise Forbidden("this needs the operator's token")
    return caller


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
"""Committed before the response leaves (FastAPI's default ends it after the response)."""
CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]
CurrentSite = Annotated[Caller, Depends(current_site)]
CurrentResearcher = Annotated[Caller, Depends(current_researcher)]
CurrentAdmin = Annotated[Caller, Depends(current_admin)]
