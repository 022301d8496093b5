"""Sites' data quality reports: an edge puts its own, researchers and the operator read them."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from oncofed.orchestrator import limits
from oncofed.orchestrator.db import DatasetProfile
from oncofed.orchestrator.limits import read_patient_limits
from oncofed.orchestrator.profiles import MAX_PROFILE_BYTES
from oncofed.orchestrator.setup import add_principal
from oncofed.wire.profile import DataProfile
from tests.support import State, auth, sample_profile


def put(api: TestClient, state: State, site: str, profile: DataProfile) -> int:
    response = api.put(
        f"/profiles/{profile.dataset}",
        content=profile.model_dump_json(),
        headers={**auth(state.credentials[site]), "Content-Type": "application/json"},
    )
    return response.status_code


def read(api: TestClient, token: str, site: str) -> list[DataProfile]:
    response = api.get(f"/sites/{site}/profiles", headers=auth(token))
    assert response.status_code == 200, response.text
    return [DataProfile.model_validate(p) for p in response.json()]


def test_a_site_puts_its_profiles_and_a_new_import_replaces_one(
    api: TestClient, state: State
) -> None:
    first, other = sample_profile(), sample_profile("trial-b", source_format="omop")
    assert put(api, state, "alpha", first) == 204
    assert put(api, state, "alpha", other) == 204
    assert read(api, state.admin_token, "alpha") == [first, other]
    with state.sessions() as session:
        before = session.scalar(select(DatasetProfile.received_at))
    again = sample_profile(patients=700, imported_at=datetime(2026, 11, 21, tzinfo=UTC))
    assert put(api, state, "alpha", again) == 204
    assert read(api, state.admin_token, "alpha") == [again, other]
    with state.sessions() as session:
        rows = session.scalars(select(DatasetProfile).order_by(DatasetProfile.dataset)).all()
    assert [(r.site_id, r.dataset) for r in rows] == [
        (state.sites["alpha"], "gbsg2"),
        (state.sites["alpha"], "trial-b"),
    ]
    assert before is not None and rows[0].received_at > before
    assert rows[0].received_at.tzinfo is not None


def test_a_profile_is_read_for_the_sites_limits_when_published(
    api: TestClient, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The most patients a site's answers may count is read from its profile as it arrives,
    so the first batch of its answers finds it read."""
    monkeypatch.setattr(limits, "_limits", OrderedDict())  # none kept from another test
    parsed: list[str] = []
    parse = limits._parsed_limit
    monkeypatch.setattr(limits, "_parsed_limit", lambda text: parsed.append(text) or parse(text))
    assert put(api, state, "alpha", sample_profile(patients=700)) == 204
    assert len(parsed) == 1
    site = state.sites["alpha"]
    with state.sessions() as session:
        assert read_patient_limits(session, [site], "gbsg2") == {site: 700}
    assert len(parsed) == 1


def test_a_site_putting_many_profiles_leaves_a_bounded_digest_of_each(
    api: TestClient, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is kept of the profiles put is their limits, by the digest of their text, and at
    most ``KEPT_LIMITS`` of them: a site putting profile after profile, each up to the body's
    limit, grows nothing."""
    monkeypatch.setattr(limits, "KEPT_LIMITS", 2)
    monkeypatch.setattr(limits, "_limits", OrderedDict())
    for patients in (700, 701, 702):
        assert put(api, state, "alpha", sample_profile(patients=patients)) == 204
    assert list(limits._limits.values()) == [701, 702]
    assert {len(key) for key in limits._limits} == {32}


def test_each_site_has_its_own_profiles(api: TestClient, state: State) -> None:
    alpha, beta = sample_profile(), sample_profile(patients=120, rows_read=120, rejected={})
    assert put(api, state, "alpha", alpha) == 204
    assert read(api, state.admin_token, "beta") == []
    assert put(api, state, "beta", beta) == 204
    researcher = add_principal(state.home, "rita", "researcher").token
    assert read(api, researcher, "alpha") == [alpha]
    assert read(api, researcher, "beta") == [beta]


def test_only_researchers_and_the_operator_read_and_only_sites_put(
    api: TestClient, state: State
) -> None:
    assert put(api, state, "alpha", sample_profile()) == 204
    site_reads = api.get("/sites/alpha/profiles", headers=auth(state.credentials["beta"]))
    assert site_reads.status_code == 401
    assert api.get("/sites/alpha/profiles").status_code == 401
    researcher = add_principal(state.home, "rita", "researcher").token
    body = sample_profile(patients=1).model_dump_json()
    for headers in ({}, auth(researcher), auth(state.admin_token)):
        response = api.put("/profiles/gbsg2", content=body, headers=headers)
        assert response.status_code == 401
    assert read(api, researcher, "alpha") == [sample_profile()]


def test_an_unknown_site_is_a_404(api: TestClient, state: State) -> None:
    response = api.get("/sites/gamma/profiles", headers=auth(state.admin_token))
    assert response.status_code == 404 and response.json()["detail"] == "no site 'gamma'"


def test_the_path_must_name_the_profiles_dataset(api: TestClient, state: State) -> None:
    response = api.put(
        "/profiles/other",
        content=sample_profile().model_dump_json(),
        headers=auth(state.credentials["alpha"]),
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "dataset"]
    assert error["msg"] == "the path names dataset 'other' but the body is about 'gbsg2'"
    assert read(api, state.admin_token, "alpha") == []


@pytest.mark.parametrize(
    ("change", "field", "msg"),
    [
        (
            {"patients": 68.5},
            "patients",
            "Input should be a valid integer, got a number with a fractional part",
        ),
        ({"patients": "68 or so"}, "patients", "String should match pattern '^<\\d{1,4}$'"),
        ({"rows_read": -1}, "rows_read", "Input should be greater than or equal to 0"),
        ({"age_mean": 61.2}, "age_mean", "Extra inputs are not permitted"),
    ],
)
def test_a_malformed_profile_is_a_422_naming_the_field(
    api: TestClient, state: State, change: dict[str, object], field: str, msg: str
) -> None:
    body = {**sample_profile().model_dump(mode="json"), **change}
    response = api.put("/profiles/gbsg2", json=body, headers=auth(state.credentials["alpha"]))
    assert response.status_code == 422
    errors = [(error["loc"][:2], error["msg"]) for error in response.json()["detail"]]
    assert (["body", field], msg) in errors, errors
    assert read(api, state.admin_token, "alpha") == []


def test_a_profile_that_is_not_json_is_a_422(api: TestClient, state: State) -> None:
    response = api.put("/profiles/gbsg2", content=b"{", headers=auth(state.credentials["alpha"]))
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_an_oversized_profile_is_refused(api: TestClient, state: State) -> None:
    response = api.put(
        "/profiles/gbsg2",
        content=b" " * (MAX_PROFILE_BYTES + 1),
        headers=auth(state.credentials["alpha"]),
    )
    assert response.status_code == 413
    assert f"{MAX_PROFILE_BYTES} bytes" in response.json()["detail"]  # refused before read
