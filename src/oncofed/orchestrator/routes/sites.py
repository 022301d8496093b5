"""Sites as the consortium sees them (with their data quality reports), and the operator's
enrolment of new ones."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Request
from sqlalchemy import select

from oncofed.audit import actor
from oncofed.orchestrator import identity, pki, profiles
from oncofed.orchestrator.db import AUDIT, Site
from oncofed.orchestrator.deps import CurrentOperator, CurrentPrincipal, SessionDep, SettingsDep
from oncofed.orchestrator.errors import Forbidden
from oncofed.wire.messages import SiteCreated, SitePublic
from oncofed.wire.profile import DataProfile
from oncofed.wire.spec import Name

router = APIRouter(prefix="/sites", tags=["sites"])


@router.get("")
def list_sites(
    request: Request, session: SessionDep, settings: SettingsDep, _: CurrentPrincipal
) -> list[SitePublic]:
    request.app.state.sightings.flush(request.app.state.sessions)  # up to this request
    return identity.list_sites(session, timedelta(seconds=settings.connected_window_seconds))


@router.post("", status_code=201)
def add_site(
    name: Annotated[Name, Body(embed=True)], session: SessionDep, caller: CurrentOperator
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
    with state.sessions() as session:
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
