"""The notifier's idle marks: a site found to have nothing to do is not looked up again until
something is published for it, and a publication that raced the check is never lost."""

from __future__ import annotations

from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oncofed.orchestrator import notifier as notifier_module
from oncofed.orchestrator.notifier import Notifier
from tests.support import Clock, State, auth, frozen_clock, make_spec


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock the notifier reads (only its module's ``time`` is replaced)."""
    return frozen_clock(monkeypatch, notifier_module)


def test_a_site_is_not_idle_until_a_check_found_nothing() -> None:
    notifier = Notifier()
    assert not notifier.idle(1)
    notifier.found_nothing(notifier.generations([1]))
    assert notifier.idle(1) and not notifier.idle(2)


def test_generations_of_unknown_sites_are_zero() -> None:
    notifier = Notifier()
    assert notifier.generations([1, 2]) == {1: 0, 2: 0}
    notifier.notify([1, 1, 3])
    assert notifier.generations([1, 2, 3]) == {1: 2, 2: 0, 3: 1}


def test_a_publication_during_the_check_keeps_the_site_from_being_marked_idle() -> None:
    """The check read the generations, then a task was published for site 1 (which the check
    may not have seen): site 1 stays unmarked, site 2, published nothing, is marked."""
    notifier = Notifier()
    before = notifier.generations([1, 2])
    notifier.notify([1])
    notifier.found_nothing(before)
    assert not notifier.idle(1)
    assert notifier.idle(2)


def test_a_publication_clears_the_idle_mark() -> None:
    notifier = Notifier()
    notifier.found_nothing(notifier.generations([1, 2]))
    notifier.notify([1])
    assert not notifier.idle(1)
    assert notifier.idle(2)  # only the sites published for
    notifier.found_nothing(notifier.generations([1]))  # a later check marks it again
    assert notifier.idle(1)


def test_an_idle_mark_older_than_trust_is_not_trusted(clock: Clock) -> None:
    notifier = Notifier(trust=30.0)
    notifier.found_nothing(notifier.generations([1]))
    clock.now += 29.9
    assert notifier.idle(1)
    clock.now += 0.1
    assert not notifier.idle(1)


def test_notify_without_a_loop_still_counts_and_clears() -> None:
    """Before the app's loop is bound (or after it closed) a publication is not lost."""
    notifier = Notifier()
    notifier.found_nothing({5: 0})
    notifier.notify([5])
    assert notifier.generations([5]) == {5: 1} and not notifier.idle(5)


def test_a_site_that_found_nothing_gets_its_task_once_a_job_is_submitted(
    api: TestClient, state: State
) -> None:
    """Its empty poll marks the site idle, so polls skip the database; the job's first round
    opening publishes to it, which clears the mark: its next poll is handed the task."""
    notifier: Notifier = cast(FastAPI, api.app).state.notifier
    alpha = auth(state.credentials["alpha"])
    assert api.get("/tasks/next", params={"wait": 0}, headers=alpha).status_code == 204
    assert notifier.idle(state.sites["alpha"])
    assert api.get("/tasks/next", params={"wait": 0}, headers=alpha).status_code == 204
    job = api.post(
        "/jobs", json=make_spec().model_dump(mode="json"), headers=auth(state.admin_token)
    )
    assert job.status_code == 201
    assert not notifier.idle(state.sites["alpha"])
    response = api.get("/tasks/next", params={"wait": 0}, headers=alpha)
    assert response.status_code == 200
    assert response.json()["kind"] == "stats" and response.json()["job_id"] == job.json()["id"]
