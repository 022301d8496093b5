"""Operator actions on an orchestrator's state directory, without going through HTTP."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from oncofed._files import private_dir
from oncofed.orchestrator import identity, pki
from oncofed.orchestrator.db import Principal, make_engine, migrate, session_factory
from oncofed.orchestrator.errors import Conflict
from oncofed.orchestrator.settings import Settings
from oncofed.privacy.secagg import load_identity, new_identity, save_identity
from oncofed.wire.access import TokenCreated
from oncofed.wire.messages import SiteCreated


def initialise(
    home: Path, database_url: str | None = None, hosts: Sequence[str] = pki.DEFAULT_HOSTS
) -> str:
    """Create the state directory, identity key, schema, consortium CA and a server
    certificate naming ``hosts`` (the names and addresses edges dial); return the operator's
    token (shown once)."""
    private_dir(home)
    settings = Settings.load(home)
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    settings.save()
    identity_key(settings)
    migrate(settings.url)
    with transaction(home) as session:
        if session.scalar(select(Principal).where(Principal.role == "operator")) is not None:
            raise Conflict(f"{home} is initialised already (it has an operator token)")
        lifetime = timedelta(days=settings.token_days)
        token = identity.create_principal(session, "operator", "operator", None, lifetime).token
        pki.initialise(home, hosts)
        return token


def identity_key(settings: Settings) -> Ed25519PrivateKey:
    """The orchestrator's identity key, created on first use (for state directories made
    before it existed) and kept ever after: sites pin it."""
    path = settings.identity_file
    if not path.exists():
        save_identity(new_identity(), path)
    return load_identity(path)


@contextmanager
def transaction(home: Path) -> Iterator[Session]:
    """A committed-on-success session on the orchestrator state in ``home``."""
    engine = make_engine(Settings.load(home).url)
    try:
        with session_factory(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def add_site(home: Path, name: str) -> SiteCreated:
    with transaction(home) as session:
        return identity.create_site(session, name)


def add_principal(
    home: Path, name: str, role: str, site: str | None = None, days: float | None = None
) -> TokenCreated:
    """Add a person (their first token lives ``days``, the settings' default if ``None``)."""
    lifetime = timedelta(days=days if days is not None else Settings.load(home).token_days)
    with transaction(home) as session:
        return identity.create_principal(session, name, role, site, lifetime)
