"""People and their tokens: the operator adds people; everyone lists, rotates and revokes
their own tokens, and the operator anyone's."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import select

from oncofed.orchestrator import identity
from oncofed.orchestrator.db import AUDIT, Principal
from oncofed.orchestrator.deps import (
    CurrentOperator,
    CurrentPrincipal,
    SessionDep,
    SettingsDep,
)
from oncofed.orchestrator.settings import Settings
from oncofed.wire.access import NewPrincipal, NewToken, PrincipalPublic, TokenCreated, TokenPublic

router = APIRouter(tags=["access"])


@router.get("/people")
def list_people(session: SessionDep, _: CurrentOperator) -> list[PrincipalPublic]:
    return identity.list_principals(session)


@router.post("/people", status_code=201)
def add_person(
    person: NewPrincipal, session: SessionDep, settings: SettingsDep, caller: CurrentOperator
) -> TokenCreated:
    """Add a researcher, a site admin or another operator; the answer holds their first token
    (shown once)."""
    created = identity.create_principal(
        session, person.name, person.role, person.site, _lifetime(settings, person.days)
    )
    detail = {"role": person.role, "token": created.id}
    AUDIT.record(
        session,
        "person.added",
        actor=caller.actor,
        user=person.name,
        site=person.site,
        detail=detail,
    )
    return created


@router.get("/tokens")
def list_tokens(session: SessionDep, caller: CurrentPrincipal) -> list[TokenPublic]:
    """The caller's tokens (the operator's: everyone's)."""
    return identity.list_tokens(session, None if caller.role == "operator" else caller.id)


@router.post("/tokens", status_code=201)
def new_token(
    request: NewToken, session: SessionDep, settings: SettingsDep, caller: CurrentPrincipal
) -> TokenCreated:
    """Another token for the caller (to rotate: create one, then revoke the old)."""
    principal = session.scalar(select(Principal).where(Principal.id == caller.id))
    assert principal is not None  # the caller was authenticated as it
    created = identity.issue_token(
        session, principal, request.label, _lifetime(settings, request.days)
    )
    AUDIT.record(
        session, "token.issued", actor=caller.actor, user=caller.name, detail={"token": created.id}
    )
    return created


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: int, session: SessionDep, caller: CurrentPrincipal) -> TokenPublic:
    """Revoke a token: the caller's own (the operator's: anyone's). It fails on its next
    request."""
    owner = None if caller.role == "operator" else caller.id
    revoked = identity.revoke_token(session, token_id, owner)
    AUDIT.record(
        session,
        "token.revoked",
        actor=caller.actor,
        user=revoked.principal,
        detail={"token": token_id},
    )
    return revoked


def _lifetime(settings: Settings, days: float | None) -> timedelta:
    return timedelta(days=days if days is not None else settings.token_days)
