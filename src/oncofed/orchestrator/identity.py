"""People (operator, researchers, site admins) and their tokens, and sites: creation,
enrolment, authentication, revocation."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta
from typing import Literal, cast, get_args

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, sessionmaker

from oncofed.orchestrator.auth import new_token, token_hash
from oncofed.orchestrator.db import AccessToken, Job, Principal, Round, Site, Task, utcnow
from oncofed.orchestrator.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from oncofed.orchestrator.secure import PROGRESS
from oncofed.privacy.secagg.identity import fingerprint
from oncofed.wire.access import PrincipalPublic, Role, TokenCreated, TokenPublic
from oncofed.wire.messages import SITE_NAME, EnrolResponse, SiteCreated, SitePublic

ROLES: tuple[Role, ...] = get_args(Role)
PREFIX: dict[str, str] = {"operator": "ofop", "researcher": "ofres", "site_admin": "ofsad"}


def create_principal(
    session: Session,
    name: str,
    role: str,
    site: str | None = None,
    lifetime: timedelta | None = None,
) -> TokenCreated:
    """Add a person and issue their first token (shown once; only its hash is stored). A site
    admin acts for ``site``; nobody else names one."""
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}")
    if (role == "site_admin") != (site is not None):
        raise BadRequest("a site admin names their site, and only a site admin does")
    principal = Principal(name=name, role=role)
    if site is not None:
        principal.site = _site(session, site)
    session.add(principal)
    _flush_unique(session, f"a person named {name!r} exists already")
    return issue_token(session, principal, "first", lifetime)


def issue_token(
    session: Session, principal: Principal, label: str, lifetime: timedelta | None
) -> TokenCreated:
    """A new token for ``principal``, valid for ``lifetime`` (for ever when ``None``)."""
    token = new_token(PREFIX[principal.role])
    row = AccessToken(
        principal=principal,
        token_hash=token_hash(token),
        label=label,
        expires_at=utcnow() + lifetime if lifetime is not None else None,
    )
    session.add(row)
    session.flush()
    return TokenCreated(id=row.id, principal=principal.name, token=token, expires=row.expires_at)


def authenticate_principal(session: Session, token: str) -> Principal:
    """The holder of ``token``, when it is neither unknown, revoked nor expired."""
    row = session.scalar(
        select(AccessToken)
        .options(joinedload(AccessToken.principal))
        .where(AccessToken.token_hash == token_hash(token))
    )
    if row is None:
        raise Unauthorized("unknown token")
    if row.revoked_at is not None:
        raise Unauthorized(f"token {row.id} was revoked")
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise Unauthorized(f"token {row.id} expired at {row.expires_at:%Y-%m-%d %H:%M} UTC")
    return row.principal


def list_tokens(session: Session, principal_id: int | None = None) -> list[TokenPublic]:
    """Every token (of one principal when ``principal_id`` is given), oldest first."""
    query = select(AccessToken).options(
        joinedload(AccessToken.principal).joinedload(Principal.site)
    )
    if principal_id is not None:
        query = query.where(AccessToken.principal_id == principal_id)
    now = utcnow()
    return [_token_public(row, now) for row in session.scalars(query.order_by(AccessToken.id))]


def revoke_token(session: Session, token_id: int, principal_id: int | None = None) -> TokenPublic:
    """Revoke a token (only one of ``principal_id``'s when given): it stops working on its
    next request. Revoking a revoked token changes nothing."""
    row = session.get(AccessToken, token_id)
    if row is None or (principal_id is not None and row.principal_id != principal_id):
        raise NotFound(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return _token_public(row, utcnow())


def list_principals(session: Session) -> list[PrincipalPublic]:
    now = utcnow()
    active = (
        select(AccessToken.principal_id, func.count().label("n"))
        .where(
            AccessToken.revoked_at.is_(None),
            (AccessToken.expires_at.is_(None)) | (AccessToken.expires_at > now),
        )
        .group_by(AccessToken.principal_id)
        .subquery()
    )
    rows = session.execute(
        select(Principal, func.coalesce(active.c.n, 0))
        .options(joinedload(Principal.site))
        .outerjoin(active, active.c.principal_id == Principal.id)
        .order_by(Principal.name)
    )
    return [
        PrincipalPublic(
            name=p.name,
            role=cast(Role, p.role),
            site=p.site.name if p.site else None,
            created=p.created_at,
            active_tokens=n,
        )
        for p, n in rows
    ]


def _token_public(row: AccessToken, now: datetime) -> TokenPublic:
    principal = row.principal
    status: Literal["active", "expired", "revoked"] = "active"
    if row.revoked_at is not None:
        status = "revoked"
    elif row.expires_at is not None and row.expires_at <= now:
        status = "expired"
    return TokenPublic(
        id=row.id,
        principal=principal.name,
        role=cast(Role, principal.role),
        site=principal.site.name if principal.site else None,
        label=row.label,
        created=row.created_at,
        expires=row.expires_at,
        revoked=row.revoked_at,
        status=status,
    )


def _site(session: Session, name: str) -> Site:
    site = session.scalar(select(Site).where(Site.name == name, Site.removed_at.is_(None)))
    if site is None:
        raise NotFound(f"no site {name!r}")
    return site


def create_site(session: Session, name: str) -> SiteCreated:
    """Register a site and return its one-time enrolment token."""
    if re.fullmatch(SITE_NAME, name) is None:
        raise BadRequest(
            f"site name {name!r} is not valid: use 1 to 63 lower-case letters, digits, '-' "
            "and '_', starting with a letter or a digit (e.g. hospital-a)"
        )
    removed = session.scalar(select(Site.removed_at).where(Site.name == name))
    if removed is not None:
        raise Conflict(
            f"site {name!r} was removed on {removed:%Y-%m-%d}: a name is never reused (the "
            "records of its past jobs keep it); choose another"
        )
    token = new_token("ofenr")
    session.add(Site(name=name, enrolment_hash=token_hash(token)))
    _flush_unique(session, f"a site named {name!r} exists already")
    return SiteCreated(name=name, enrolment_token=token)


def enrol(
    session: Session,
    enrolment_token: str,
    identity_key: str | None = None,
    orchestrator_key: str | None = None,
) -> EnrolResponse:
    """Swap a one-time enrolment token for the site's own long-lived credential, registering
    the site's identity key; the answer carries the orchestrator's, for the site to pin."""
    site = session.scalar(select(Site).where(Site.enrolment_hash == token_hash(enrolment_token)))
    if site is None:
        raise Unauthorized("unknown or already used enrolment token")
    _refuse_disabled(site)
    credential = new_token("ofsite")
    site.enrolment_hash = None
    site.credential_hash = token_hash(credential)
    site.enrolled_at = site.last_seen_at = utcnow()
    site.identity_key = identity_key
    return EnrolResponse(site=site.name, credential=credential, orchestrator_key=orchestrator_key)


def register_identity(session: Session, site_id: int, key: str) -> None:
    """A site's identity key, registered once (by an edge enrolled before sites had one):
    ``Conflict`` when another key is on record, since its peers have pinned that one."""
    site = session.get(Site, site_id)
    assert site is not None  # the caller was authenticated as it
    if site.identity_key is None:
        site.identity_key = key
    elif site.identity_key != key:
        raise Conflict(
            f"site {site.name!r} has another identity key on record; a site's key is never "
            "replaced (its peers pin it): the operator re-enrols the site under a new name"
        )


def revoke_site(session: Session, name: str) -> Site:
    """Revoke a site: its credential and any unused enrolment token stop working (the serving
    process forgets the credential at once: ``Credentials.forget``). It is never re-enabled:
    the operator adds the hospital again under a new name."""
    site = _site(session, name)
    if site.revoked_at is None:
        site.revoked_at = utcnow()
    site.credential_hash = site.enrolment_hash = None
    return site


def set_disabled(session: Session, name: str, disabled: bool) -> Site:
    """Disable a site (it gets no task and every request of its edge is refused, until it is
    enabled again) or enable it. Doing either twice changes nothing."""
    site = _site(session, name)
    if not disabled:
        site.disabled_at = None
    elif site.disabled_at is None:
        site.disabled_at = utcnow()
    return site


def remove_site(session: Session, name: str) -> Site:
    """Remove a site: it leaves the listings and its credential and enrolment token stop
    working (its certificates are revoked by the caller, ``pki``); its past contributions stay
    in the record, and its name stays taken. ``Conflict`` naming the job while it has a task
    in an open round of a running job."""
    site = _site(session, name)
    running = session.execute(
        select(Job.id, Job.name)
        .join(Round, Round.job_id == Job.id)
        .join(Task, Task.round_id == Round.id)
        .where(Task.site_id == site.id, Round.status == "open", Job.status == "running")
        .where(Task.status.in_(PROGRESS))
        .limit(1)
    ).first()
    if running is not None:
        raise Conflict(
            f"site {name!r} has a running task in job {running.name} ({running.id}): cancel "
            "the job, or disable the site and wait for the round to close, then remove it"
        )
    revoke_site(session, name)
    site.removed_at = utcnow()
    return site


def site_for(session: Session, credential: str) -> Site:
    """The site holding ``credential``; ``Forbidden`` while the operator has disabled it."""
    site = session.scalar(select(Site).where(Site.credential_hash == token_hash(credential)))
    if site is None:
        raise Unauthorized("unknown site credential")
    _refuse_disabled(site)
    return site


def _refuse_disabled(site: Site) -> None:
    """``Forbidden`` while the operator has disabled ``site``."""
    if site.disabled_at is not None:
        raise Forbidden(
            f"site {site.name!r} was disabled by the operator at "
            f"{site.disabled_at:%Y-%m-%d %H:%M} UTC: no tasks until it is enabled"
        )


def authenticate_site(session: Session, credential: str) -> Site:
    """The site holding ``credential``; records that it was seen now."""
    site = site_for(session, credential)
    site.last_seen_at = utcnow()
    return site


class Sightings:
    """When each site was last seen, kept in memory and written for all sites in one
    statement (``flush``, every tick and before sites are listed): a request of a site writes
    nothing, and 500 sites waking for a round do not queue 500 writes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, datetime] = {}

    def saw(self, site_id: int) -> None:
        with self._lock:
            self._seen[site_id] = utcnow()

    def flush(self, sessions: sessionmaker[Session]) -> None:
        """Write them in one transaction; when that fails they are kept for the next flush."""
        with self._lock:
            seen, self._seen = self._seen, {}
        if not seen:
            return
        try:
            with sessions.begin() as session:
                rows = [{"id": i, "last_seen_at": t} for i, t in seen.items()]
                session.execute(update(Site), rows)
        except BaseException:
            with self._lock:
                self._seen = seen | self._seen
            raise


class Credentials:
    """Site credentials already verified, by their hash: a site's request reads no database.
    The tick re-reads them all in one query (``recheck``), so a credential that no longer
    names a site (or names a disabled one) stops working within a tick; one not rechecked for
    ``ttl`` seconds (the tick stalled) is verified again by the request that presents it."""

    CHUNK = 900  # hashes per query, under SQLite's bound parameters

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._known: dict[str, tuple[int, str, float]] = {}

    def get(self, key: str) -> tuple[int, str] | None:
        """The site (id, name) of a credential hash verified less than ``ttl`` ago."""
        hit = self._known.get(key)
        if hit is None or time.monotonic() - hit[2] >= self.ttl:
            return None
        return hit[0], hit[1]

    def put(self, key: str, site_id: int, name: str, verified: float) -> None:
        """Remember a credential verified at ``verified`` (``time.monotonic()``)."""
        with self._lock:
            self._known[key] = (site_id, name, verified)

    def forget(self, site_id: int) -> None:
        """Stop trusting every remembered credential of ``site_id`` (it was revoked)."""
        with self._lock:
            self._known = {k: v for k, v in self._known.items() if v[0] != site_id}

    def recheck(self, sessions: sessionmaker[Session]) -> None:
        """Verify every remembered credential again; forget those that name no site now."""
        with self._lock:
            keys, began = list(self._known), time.monotonic()
        valid: dict[str, tuple[int, str]] = {}
        with sessions() as session:
            for start in range(0, len(keys), self.CHUNK):
                chunk = keys[start : start + self.CHUNK]
                found = select(Site.credential_hash, Site.id, Site.name).where(
                    Site.credential_hash.in_(chunk), Site.disabled_at.is_(None)
                )
                valid.update((str(h), (i, n)) for h, i, n in session.execute(found))
        with self._lock:
            for key in keys:
                known = self._known.get(key)
                if known is None or known[2] > began:  # verified meanwhile: that stands
                    continue
                if key in valid:
                    self._known[key] = (*valid[key], began)
                else:
                    del self._known[key]


def list_sites(session: Session, window: timedelta) -> list[SitePublic]:
    now = utcnow()
    return [
        SitePublic(
            name=site.name,
            enrolled=site.credential_hash is not None,
            last_seen=site.last_seen_at,
            connected=recent(site.last_seen_at, now, window),
            key_fingerprint=fingerprint(bytes.fromhex(site.identity_key))
            if site.identity_key
            else None,
            revoked=site.revoked_at,
            disabled=site.disabled_at,
        )
        for site in session.scalars(
            select(Site).where(Site.removed_at.is_(None)).order_by(Site.name)
        )
    ]


def recent(seen: datetime | None, now: datetime, window: timedelta) -> bool:
    """Whether a site last ``seen`` then was seen within ``window`` of ``now``."""
    return seen is not None and now - seen <= window


def _flush_unique(session: Session, message: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(message) from exc
