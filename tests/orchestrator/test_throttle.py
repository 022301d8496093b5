"""Failed authentications: a burst of bad credentials (the attack: 3,000 at ~200 a second,
neither throttled nor logged) is answered 401 every time and logged nowhere by a naive app;
under the defaults it is refused with 429 after the limit, in a bounded number of log lines,
while a site's valid credential still works, and the source may try again after the window."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from oncofed.orchestrator import Settings, create_app, throttle
from oncofed.orchestrator.auth import token_hash
from oncofed.wire.messages import API_PREFIX
from tests.support import State, auth, frozen_clock

ATTACKER, SITE_ADDRESS = "198.51.100.7", "192.0.2.10"
BURST = 60


class FromAddress:
    """The app as reached from the address in the ``x-test-source`` header."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            scope["client"] = (headers.get(b"x-test-source", b"127.0.0.1").decode(), 40000)
        await self.app(scope, receive, send)


@contextmanager
def served(state: State, naive: bool = False) -> Iterator[tuple[TestClient, FastAPI]]:
    app = create_app(Settings.load(state.home))
    if naive:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not throttle.Throttle]
    with TestClient(FromAddress(app), base_url=f"http://test{API_PREFIX}") as client:
        yield client, app


def attempt(client: TestClient, source: str, token: str | None, path: str = "/jobs") -> Any:
    headers = {"x-test-source": source, **(auth(token) if token else {})}
    return client.get(path, headers=headers)


def auth_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "oncofed.orchestrator.auth"]


def test_a_naive_app_answers_every_bad_credential_and_logs_nothing(
    state: State, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with served(state, naive=True) as (client, _):
        codes = {attempt(client, ATTACKER, f"ofres_guess{i}").status_code for i in range(BURST)}
    assert codes == {401} and auth_lines(caplog) == []


def test_a_burst_is_refused_after_the_limit_in_bounded_log_lines(
    state: State, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="oncofed.orchestrator.auth")
    clock = frozen_clock(monkeypatch, throttle)
    settings = Settings.load(state.home)
    limit = settings.auth_failure_limit
    seen: list[tuple[str, str, str | None]] = []
    with served(state) as (client, app):
        app.state.auth_failures.on_failure = lambda *failure: seen.append(failure)
        site = state.credentials["alpha"]
        assert attempt(client, ATTACKER, site, "/tasks/next?wait=0").status_code == 204
        guesses = [f"ofres_guess{i}" for i in range(BURST)]
        answers = [attempt(client, ATTACKER, guess) for guess in guesses]
        assert [a.status_code for a in answers] == [401] * limit + [429] * (BURST - limit)
        refused = answers[-1]
        assert int(refused.headers["Retry-After"]) >= 1
        assert "from this address" in refused.json()["detail"]

        # The attacker's address is refused even without a token; a valid site credential
        # works from another address, and from the attacker's too (a shared NAT).
        assert attempt(client, ATTACKER, None).status_code == 429
        assert attempt(client, SITE_ADDRESS, site, "/tasks/next?wait=0").status_code == 204
        assert attempt(client, ATTACKER, site, "/tasks/next?wait=0").status_code == 204
        assert attempt(client, SITE_ADDRESS, "ofres_other").status_code == 401

        lines = auth_lines(caplog)
        assert len(lines) <= throttle.LOG_PER_SOURCE + 2
        assert sum("refused (429)" in line for line in lines) == 1
        assert all("ofres_guess" not in line for line in lines)  # never a token
        assert f"source={ATTACKER}" in lines[0] and "route=GET /v1/jobs" in lines[0]
        assert len(seen) == limit + 1  # the hook hears every failure
        assert seen[0] == (ATTACKER, "GET /v1/jobs", token_hash(guesses[0]))

        clock.now += settings.auth_failure_window_seconds  # the window passes
        assert attempt(client, ATTACKER, "ofres_again").status_code == 401


def test_one_credential_is_refused_from_any_address(state: State) -> None:
    limit = Settings.load(state.home).auth_failure_limit
    with served(state) as (client, _):
        codes = [attempt(client, f"203.0.113.{i}", "ofres_stolen").status_code for i in range(30)]
        assert codes == [401] * limit + [429] * (30 - limit)
        answer = attempt(client, "203.0.113.200", "ofres_stolen")
        assert "with this credential" in answer.json()["detail"]
        assert attempt(client, "203.0.113.200", "ofres_fresh").status_code == 401


def test_a_success_on_an_open_route_does_not_vouch_for_a_credential(state: State) -> None:
    """A garbage token accepted by the health route (which asks for none) is not thereby
    good: it cannot slip past its source's refusal."""
    limit = Settings.load(state.home).auth_failure_limit
    with served(state) as (client, _):
        for i in range(limit):
            attempt(client, ATTACKER, f"ofres_guess{i}")
        assert attempt(client, ATTACKER, "ofres_new", "/health").status_code == 429
        assert attempt(client, "192.0.2.99", "ofres_new", "/health").status_code == 200
        assert attempt(client, ATTACKER, "ofres_new").status_code == 429


def test_memory_and_log_lines_stay_bounded_whatever_the_keys(
    state: State, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spoofed sources and credentials: the tables keep ``TRACKED`` keys, the log
    ``LOG_PER_WINDOW`` lines a window and one summary line."""
    caplog.set_level(logging.WARNING, logger="oncofed.orchestrator.auth")
    monkeypatch.setattr(throttle, "TRACKED", 50)
    clock = frozen_clock(monkeypatch, throttle)
    settings = Settings.load(state.home)
    failures = throttle.AuthFailures(settings)
    for i in range(1000):
        failures.failed(f"10.0.{i // 250}.{i % 250}", "GET /v1/jobs", token_hash(str(i)), "x")
        failures.succeeded(token_hash(f"good{i}"))
    assert len(failures._sources._levels) == len(failures._credentials._levels) == 50
    assert len(failures._known) == 50
    assert len(auth_lines(caplog)) == throttle.LOG_PER_WINDOW
    clock.now += settings.auth_failure_window_seconds
    failures.failed("10.9.9.9", "GET /v1/jobs", None, "x")
    lines = auth_lines(caplog)
    assert "900 more failed authentications not logged" in lines[throttle.LOG_PER_WINDOW]
    assert len(lines) == throttle.LOG_PER_WINDOW + 2


def test_ipv6_sources_count_by_their_64() -> None:
    one = throttle.source_of({"client": ("2001:db8:1:2::1", 1)})
    other = throttle.source_of({"client": ("2001:db8:1:2:ffff::9", 1)})
    assert one == other == "2001:db8:1:2::/64"
    assert throttle.source_of({"client": ("192.0.2.1", 1)}) == "192.0.2.1"
