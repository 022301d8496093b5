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
SITE_RECHECK_SECONDS = 5.0


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
    """The calling edge. A short read of its own (long polls hold no connection), taken at
    most every few seconds per site: in between, a verified credential is remembered (no
    thread, no database). That it was seen is written with the others' (``Sightings``)."""
    token = _token(credentials)
    key = token_hash(token)
    cache: dict[str, tuple[Caller, float]] = request.app.state.site_cache
    now = time.monotonic()
    if (hit := cache.get(key)) is not None and now - hit[1] < SITE_RECHECK_SECONDS:
        caller = hit[0]
    else:

        def verify() -> Caller:
            with sessions() as session:
                site = identity.site_for(session, token)
                return Caller(site.id, site.name, "site")

        caller = await run_in_threadpool(verify)
        cache[key] = (caller, now)
    request.app.state.sightings.saw(caller.id)
    return caller


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
