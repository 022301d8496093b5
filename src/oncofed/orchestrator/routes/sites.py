"""Sites as the consortium sees them (with their data quality reports), and the operator's
enrolment of new ones."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Request

from oncofed.orchestrator import identity, profiles
from oncofed.orchestrator.deps import CurrentAdmin, CurrentResearcher, SessionDep, SettingsDep
from oncofed.wire.messages import SiteCreated, SitePublic
from oncofed.wire.profile import DataProfile
from oncofed.wire.spec import Name

router = APIRouter(prefix="/sites", tags=["sites"])


@router.get("")
def list_sites(
    request: Request, session: SessionDep, settings: SettingsDep, _: CurrentResearcher
) -> list[SitePublic]:
    request.app.state.sightings.flush(request.app.state.sessions)  # up to this request
    return identity.list_sites(session, timedelta(seconds=settings.connected_window_seconds))


@router.post("", status_code=201)
def add_site(
    name: Annotated[Name, Body(embed=True)], session: SessionDep, _: CurrentAdmin
) -> SiteCreated:
    return identity.create_site(session, name)


@router.get("/{name}/profiles")
def site_profiles(name: str, session: SessionDep, _: CurrentResearcher) -> list[DataProfile]:
    """The data quality report the site sent for each of its datasets."""
    return profiles.site_profiles(session, name)
