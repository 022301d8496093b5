"""Authentication in the audit log without a write per request: each credential's first
success in this process, and every failure, gathered in memory and written by the tick in one
transaction (``flush``). A flood of failures costs at most ``LIMIT`` entries per tick: the
rest are counted in one more."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy.orm import Session, sessionmaker

from oncofed.audit import clip
from oncofed.orchestrator.db import AUDIT

LIMIT = 100
"""Most entries of each kind written per flush."""
MAX_SEEN = 100_000
"""Credentials remembered as already logged in; past it the memory starts again (a success
is then logged a second time, never missed)."""


class AuthLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._successes: list[str] = []
        self._failures: Counter[tuple[str, str, str]] = Counter()

    def success(self, key: str, who: str) -> None:
        """``who`` presented the credential whose hash is ``key``: logged the first time."""
        with self._lock:
            if key in self._seen:
                return
            if len(self._seen) >= MAX_SEEN:
                self._seen.clear()
            self._seen.add(key)
            self._successes.append(who)

    def failure(self, source: str, route: str, credential_hash: str | None) -> None:
        """A request from ``source`` to ``route`` failed to authenticate (the credential it
        presented, by hash, if any: only a prefix is kept)."""
        with self._lock:
            self._failures[source, route, (credential_hash or "none")[:8]] += 1

    def flush(self, sessions: sessionmaker[Session]) -> None:
        """Write what was gathered (kept for the next flush when the write fails)."""
        with self._lock:
            successes, self._successes = self._successes, []
            failures, self._failures = self._failures, Counter()
        if not successes and not failures:
            return
        try:
            with sessions.begin() as session:
                self._write(session, successes, failures)
        except BaseException:
            with self._lock:
                self._successes[:0] = successes
                self._failures.update(failures)
            raise

    @staticmethod
    def _write(
        session: Session, successes: list[str], failures: Counter[tuple[str, str, str]]
    ) -> None:
        for who in successes[:LIMIT]:
            AUDIT.record(session, "auth.success", actor=who)
        if len(successes) > LIMIT:
            more = {"count": len(successes) - LIMIT}
            AUDIT.record(session, "auth.success", actor="orchestrator", detail=more)
        ranked = failures.most_common()
        for (source, route, credential), count in ranked[:LIMIT]:
            detail = {"source": clip(source), "route": clip(route), "credential": credential}
            AUDIT.record(
                session, "auth.failure", actor="anonymous", detail=detail | {"count": count}
            )
        if len(ranked) > LIMIT:
            rest = {"sources": len(ranked) - LIMIT, "count": sum(n for _, n in ranked[LIMIT:])}
            AUDIT.record(session, "auth.failure", actor="anonymous", detail=rest)
