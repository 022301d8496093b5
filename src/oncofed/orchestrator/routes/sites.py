"""Sites as the consortium sees them (with their data quality reports), and the operator's
control of them: enrolment, revocation, disabling and enabling, removal."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Request
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from oncofed.audit import actor
from oncofed.orchestrator import identity, pki, profiles
from oncofed.orchestrator.db import AUDIT, Site
from oncofed.orchestrator.deps import (
    CoordinatorDep,
    CurrentOperator,
    CurrentPrincipal,
    SessionDep,
    SessionsDep,
    SettingsDep,
)
from oncofed.orchestrator.errors import Forbidden
from oncofed.orchestrator.settings import Settings
from oncofed.wire.messages import SiteCreated, SiteName, SitePublic
from oncofed.wire.profile import DataProfile

router = APIRouter(prefix="/sites", tags=["sites"])


@router.get("")
def list_sites(
    request: Request, session: SessionDep, settings: SettingsDep, _: CurrentPrincipal
) -> list[SitePublic]:
    request.app.state.sightings.flush(request.app.state.sessions)  # up to this request
    return identity.list_sites(session, timedelta(seconds=settings.connected_window_seconds))


@router.post("", status_code=201)
def add_site(
    name: Annotated[SiteName, Body(embed=True)], session: SessionDep, caller: CurrentOperator
) -> SiteCreated:
    AUDIT.record(session, "site.created", actor=actor(caller.role, caller.name), site=name)
    return identity.create_site(session, name)


@router.post("/{name}/revoke")
def revoke_site(
    name: str, request: Request, settings: SettingsDep, caller: CurrentOperator
) -> SitePublic:
    """Revoke a site: its next request is refused (its credential is forgotten once the
    revocation is committed, its certificates are in the revocation list before). Its past
    contributions stay in the record."""
    state = request.app.state
    with state.sessions.begin() as session:
        site = identity.revoke_site(session, name)
        pki.revoke_certificates(session, settings.home, site, actor(caller.role, caller.name))
        site_id = site.id
    state.credentials.forget(site_id)
    return _public(state.sessions, settings, name)


@router.post("/{name}/disable")
def disable_site(
    name: str,
    request: Request,
    sessions: SessionsDep,
    settings: SettingsDep,
    coordinator: CoordinatorDep,
    caller: CurrentOperator,
) -> SitePublic:
    """Disable a site: its edge's requests are refused (it is told why) and it gets no task,
    until it is enabled; the rounds waiting for it go on without it."""
    with sessions.begin() as session:
        site_id = identity.set_disabled(session, name, True).id
        AUDIT.record(session, "site.disabled", actor=caller.actor, site=name)
    request.app.state.credentials.forget(site_id)
    coordinator.withdraw_site(site_id, f"the operator disabled site {name}")
    return _public(sessions, settings, name)


@router.post("/{name}/enable")
def enable_site(
    name: str, sessions: SessionsDep, settings: SettingsDep, caller: CurrentOperator
) -> SitePublic:
    """Enable a disabled site: its edge is served again, and new jobs may include it."""
    with sessions.begin() as session:
        identity.set_disabled(session, name, False)
        AUDIT.record(session, "site.enabled", actor=caller.actor, site=name)
    return _public(sessions, settings, name)


@router.delete("/{name}", status_code=204)
def remove_site(
    name: str,
    request: Request,
    sessions: SessionsDep,
    settings: SettingsDep,
    caller: CurrentOperator,
) -> None:
    """Remove a site that has no running task: it leaves the listings and its credential and
    certificates are revoked; its past contributions stay in the record."""
    with sessions.begin() as session:
        site = identity.remove_site(session, name)
        pki.revoke_certificates(session, settings.home, site, caller.actor)
        AUDIT.record(session, "site.removed", actor=caller.actor, site=name)
        site_id = site.id
    request.app.state.credentials.forget(site_id)


def _public(sessions: sessionmaker[Session], settings: Settings, name: str) -> SitePublic:
    """The site ``name`` as ``GET /sites`` lists it."""
    with sessions() as session:
        window = timedelta(seconds=settings.connected_window_seconds)
        return next(s for s in identity.list_sites(session, window) if s.name == name)


@router.get("/{name}/profiles")
def site_profiles(name: str, session: SessionDep, caller: CurrentPrincipal) -> list[DataProfile]:
    """The data quality report the site sent for each of its datasets (a site admin reads
    their own site's only)."""
    own = caller.site_id
    if (
        caller.role == "site_admin"
        and session.scalar(select(Site.id).where(Site.name == name)) != own
    ):
        raise Forbidden("a site admin reads their own site's record only")
    return profiles.site_profiles(session, name)
