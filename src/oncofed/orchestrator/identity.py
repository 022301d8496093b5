"""Principals (operator, researchers) and sites: creation, enrolment, authentication."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from oncofed.orchestrator.auth import new_token, token_hash
from oncofed.orchestrator.db import Principal, Site, utcnow
from oncofed.orchestrator.errors import Conflict, Unauthorized
from oncofed.privacy.secagg.identity import fingerprint
from oncofed.wire.messages import EnrolResponse, SiteCreated, SitePublic

ROLES = ("admin", "researcher")


def create_principal(session: Session, name: str, role: str) -> str:
    """Create a principal and return its token (shown once; only the hash is stored)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    token = new_token("ofadm" if role == "admin" else "ofres")
    session.add(Principal(name=name, role=role, token_hash=token_hash(token)))
    _flush_unique(session, f"a principal named {name!r} exists already")
    return token


def authenticate_principal(session: Session, token: str) -> Principal:
    principal = session.scalar(select(Principal).where(Principal.token_hash == token_hash(token)))
    if principal is None:
        raise Unauthorized("unknown or revoked token")
    return principal


def create_site(session: Session, name: str) -> SiteCreated:
    """Register a site and return its one-time enrolment token."""
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


def site_for(session: Session, credential: str) -> Site:
    """The site holding ``credential``."""
    site = session.scalar(select(Site).where(Site.credential_hash == token_hash(credential)))
    if site is None:
        raise Unauthorized("unknown site credential")
    return site


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
    names a site stops working within a tick; one not rechecked for ``ttl`` seconds (the tick
    stalled) is verified again by the request that presents it."""

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

    def recheck(self, sessions: sessionmaker[Session]) -> None:
        """Verify every remembered credential again; forget those that name no site now."""
        with self._lock:
            keys, began = list(self._known), time.monotonic()
        valid: dict[str, tuple[int, str]] = {}
        with sessions() as session:
            for start in range(0, len(keys), self.CHUNK):
                chunk = keys[start : start + self.CHUNK]
                found = select(Site.credential_hash, Site.id, Site.name).where(
                    Site.credential_hash.in_(chunk)
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
            connected=_recent(site.last_seen_at, now, window),
            key_fingerprint=fingerprint(bytes.fromhex(site.identity_key))
            if site.identity_key
            else None,
        )
        for site in session.scalars(select(Site).order_by(Site.name))
    ]


def _recent(seen: datetime | None, now: datetime, window: timedelta) -> bool:
    return seen is not None and now - seen <= window


def _flush_unique(session: Session, message: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(message) from exc
