"""The cache of verified site credentials: a request of a site reads no database while its
credential is fresh, and the tick's recheck makes a credential that no longer names a site
stop working within a tick."""

from __future__ import annotations

import hashlib
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, update
from sqlalchemy.orm import Session, sessionmaker

from oncofed.orchestrator import identity
from oncofed.orchestrator.auth import token_hash
from oncofed.orchestrator.db import Site
from oncofed.orchestrator.identity import Credentials
from tests.support import Clock, State, auth, frozen_clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock the credential cache reads (only its module's ``time`` is replaced)."""
    return frozen_clock(monkeypatch, identity)


def key_of(state: State, name: str) -> str:
    return token_hash(state.credentials[name])


def remember(state: State, credentials: Credentials, name: str, verified: float) -> str:
    """Put the site ``name``'s credential in the cache as verified at ``verified``."""
    key = key_of(state, name)
    credentials.put(key, state.sites[name], name, verified)
    return key


def set_credential(state: State, name: str, value: str | None) -> None:
    """Change the credential on record for the site ``name`` (``None``: as a revocation)."""
    with state.sessions.begin() as session:
        site = state.sites[name]
        session.execute(update(Site).where(Site.id == site).values(credential_hash=value))


def recheck_queries(state: State, credentials: Credentials) -> list[str]:
    """Recheck ``credentials``; the statements it sent to the database."""
    engine = cast(Engine, state.sessions.kw["bind"])
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        credentials.recheck(state.sessions)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return [sql for sql in statements if "credential_hash IN" in sql]


def test_a_remembered_credential_is_returned_while_fresh_and_not_after_ttl(
    clock: Clock,
) -> None:
    credentials = Credentials(ttl=5.0)
    assert credentials.get("a" * 64) is None
    credentials.put("a" * 64, 7, "alpha", clock.now)
    assert credentials.get("a" * 64) == (7, "alpha")
    clock.now += 4.9
    assert credentials.get("a" * 64) == (7, "alpha")
    clock.now += 0.1  # exactly ttl after it was verified
    assert credentials.get("a" * 64) is None
    assert credentials.get("b" * 64) is None  # never verified


def test_recheck_keeps_credentials_that_still_name_a_site_and_refreshes_them(
    state: State, clock: Clock
) -> None:
    credentials = Credentials(ttl=5.0)
    verified = clock.now
    alpha = remember(state, credentials, "alpha", verified)
    beta = remember(state, credentials, "beta", verified)
    clock.now = verified + 4.0
    credentials.recheck(state.sessions)
    clock.now = verified + 8.0  # stale had the recheck not refreshed them
    assert credentials.get(alpha) == (state.sites["alpha"], "alpha")
    assert credentials.get(beta) == (state.sites["beta"], "beta")
    clock.now = verified + 9.0  # ttl after the recheck began
    assert credentials.get(alpha) is None


def test_recheck_forgets_a_credential_its_site_no_longer_holds(state: State, clock: Clock) -> None:
    """One site's credential is revoked (no credential on record), the other's replaced: both
    are forgotten at once, though they were verified a moment ago."""
    credentials = Credentials(ttl=5.0)
    alpha = remember(state, credentials, "alpha", clock.now)
    beta = remember(state, credentials, "beta", clock.now)
    set_credential(state, "alpha", None)
    set_credential(state, "beta", token_hash("ofsite_a-new-credential"))
    credentials.recheck(state.sessions)
    assert credentials.get(alpha) is None and credentials.get(beta) is None


def test_recheck_keeps_unaffected_sites_when_one_is_revoked(state: State, clock: Clock) -> None:
    credentials = Credentials(ttl=5.0)
    alpha = remember(state, credentials, "alpha", clock.now)
    beta = remember(state, credentials, "beta", clock.now)
    set_credential(state, "alpha", None)
    credentials.recheck(state.sessions)
    assert credentials.get(alpha) is None
    assert credentials.get(beta) == (state.sites["beta"], "beta")


def test_a_credential_verified_while_a_recheck_runs_is_not_dropped_by_it(
    state: State, clock: Clock
) -> None:
    """The recheck's query does not see alpha's credential, but a request verified it after
    the recheck began: that newer verification stands (until the next recheck)."""
    credentials = Credentials(ttl=5.0)
    alpha = remember(state, credentials, "alpha", clock.now - 1.0)
    set_credential(state, "alpha", None)  # what the recheck's query will read

    def meanwhile() -> Session:
        """A request verifying alpha while the recheck opens its session."""
        clock.now += 0.5
        credentials.put(alpha, state.sites["alpha"], "alpha", clock.now)
        return state.sessions()

    credentials.recheck(cast(sessionmaker[Session], meanwhile))
    assert credentials.get(alpha) == (state.sites["alpha"], "alpha")
    credentials.recheck(state.sessions)  # the next one drops it
    assert credentials.get(alpha) is None


def test_more_credentials_than_a_chunk_are_all_rechecked(state: State, clock: Clock) -> None:
    """Hashes that name no site fill the first query; the two sites' are in the second: the
    valid one is kept, the revoked one and the unknown ones forgotten."""
    credentials = Credentials(ttl=5.0)
    unknown = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(Credentials.CHUNK)]
    for key in unknown:
        credentials.put(key, 10_000, "nobody", clock.now)
    alpha = remember(state, credentials, "alpha", clock.now)
    beta = remember(state, credentials, "beta", clock.now)
    set_credential(state, "beta", None)
    assert len(recheck_queries(state, credentials)) == 2  # CHUNK + 2 hashes
    clock.now += 4.0
    assert credentials.get(alpha) == (state.sites["alpha"], "alpha")
    assert credentials.get(beta) is None
    assert all(credentials.get(key) is None for key in unknown)


def test_recheck_of_an_empty_cache_sends_no_query(state: State) -> None:
    assert recheck_queries(state, Credentials()) == []


def test_a_revoked_credential_stops_working_after_a_recheck(api: TestClient, state: State) -> None:
    """The attack: a credential revoked in the database must not be served from the cache
    forever. After the tick's recheck the next request of the site is refused."""
    app = cast(FastAPI, api.app)
    alpha, beta = auth(state.credentials["alpha"]), auth(state.credentials["beta"])
    assert api.get("/tasks/next", params={"wait": 0}, headers=alpha).status_code == 204
    assert api.get("/tasks/next", params={"wait": 0}, headers=beta).status_code == 204
    cache: Credentials = app.state.credentials
    assert cache.get(key_of(state, "alpha")) == (state.sites["alpha"], "alpha")
    set_credential(state, "alpha", None)
    cache.recheck(app.state.sessions)
    assert cache.get(key_of(state, "alpha")) is None
    refused = api.get("/tasks/next", params={"wait": 0}, headers=alpha)
    assert refused.status_code == 401 and "unknown" in refused.json()["detail"]
    assert api.get("/tasks/next", params={"wait": 0}, headers=beta).status_code == 204
