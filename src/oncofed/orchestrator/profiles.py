"""Sites' data quality reports, as the orchestrator keeps them: the latest per site and dataset.

A report holds only suppressed aggregates (``DataProfile`` cells are counts, ``"<N"`` or
``"suppressed"``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from oncofed.orchestrator.db import DatasetProfile, Site, utcnow
from oncofed.orchestrator.errors import NotFound
from oncofed.orchestrator.limits import declared
from oncofed.wire.profile import DataProfile

MAX_PROFILE_BYTES = 1 << 20
"""Largest report body accepted (with 2,000 distinct codes in every code field, ~160 KB)."""


def save(session: Session, site_id: int, profile: DataProfile) -> None:
    """Store ``profile`` as the site's report on its dataset, replacing any earlier one (in
    one statement: two requests racing cannot both insert)."""
    text = profile.model_dump_json()
    values = {"profile_json": text, "received_at": utcnow()}
    insert = _insert(session).values(site_id=site_id, dataset=profile.dataset, **values)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[DatasetProfile.site_id, DatasetProfile.dataset], set_=values
        )
    )
    declared(text)  # what the site's answers will be checked against


def _insert(session: Session) -> postgresql.Insert | sqlite.Insert:
    """An insert with the upsert clause of the database in use (the two we support)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(DatasetProfile)
    return sqlite.insert(DatasetProfile)


def site_profiles(session: Session, site: str) -> list[DataProfile]:
    """The latest report on each dataset of the site named ``site``, by dataset name."""
    site_id = session.scalar(select(Site.id).where(Site.name == site))
    if site_id is None:
        raise NotFound(f"no site {site!r}")
    rows = session.scalars(
        select(DatasetProfile.profile_json)
        .where(DatasetProfile.site_id == site_id)
        .order_by(DatasetProfile.dataset)
    )
    return [DataProfile.model_validate_json(row) for row in rows]
