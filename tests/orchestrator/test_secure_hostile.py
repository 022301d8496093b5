"""A site that sends, in the clear beside the first round of a secure Newton loop, an own fit
(``OwnEstimate``) with numbers no fit has: a coefficient of 1e308 or 1e400, a standard error
not a positive number, terms that are not the model's, more iterations than the analysis
allows. Its masked input is refused when it arrives (422, the task rejected naming the field),
the site is dropped from the round as any site whose masked input is refused, and the sum is
unmasked without it: the regression finishes over the other sites (or, with too few left,
fails saying so), never with a 500 and never with the hostile numbers in its report.

Before issue 10's check of it, all but the non-finite ones were accepted: a coefficient of
1e308 or a standard error of 0 then made Cochran's Q of the heterogeneity check infinite or NaN,
and building the report at the round's close raised, in the post of the site that closed it;
terms of another length or order were dropped silently at the close. Five sites of 60 GBSG2
patients give a threshold of 4 (t = floor(0.75 n) + 1): the round goes on without one site and
fails without two (SQLite and PostgreSQL, over HTTP)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from oncofed.edge import LocalStore
from oncofed.edge.secure import Post
from oncofed.orchestrator.db import Task
from oncofed.wire.analysis import (
    MAX_LOG_RATIO,
    AnalysisSpec,
    OwnEstimate,
    RegressionReport,
    Term,
)
from oncofed.wire.secagg import MaskedHeader
from oncofed.wire.spec import JobSpec
from oncofed.wire.stream import META_KEY
from tests.orchestrator.test_hostile_numbers import refused
from tests.orchestrator.test_secure_robustness import (
    BREAST,
    HOSTILE,
    LOGISTIC,
    NAMES,
    POLICY,
    secure_training,
)
from tests.sites import Site, drive, enrol, play, sites, sixty_each
from tests.support import State, auth

TERMS = ["intercept", "age_at_diagnosis", "treatment.endocrine"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LocalStore]:
    """Five hospitals of 60 GBSG2 patients each, every one imported from its CSV export."""
    return sixty_each(tmp_path_factory.mktemp("five"), NAMES)


@pytest.fixture
def five(state: State, stores: dict[str, LocalStore], tmp_path: Path) -> Iterator[dict[str, Site]]:
    enrol(state, [name for name in NAMES if name not in state.sites])
    with ExitStack() as stack:
        yield sites(state, stores, stack, tmp_path / "edges", POLICY)


PLAIN: dict[tuple[str, ...], RegressionReport] = {}
"""The plain regression's report by its sites, computed once per module."""


def plain_fit(state: State, played: Mapping[str, Site]) -> RegressionReport:
    key = tuple(sorted(played))
    if key not in PLAIN:
        public = play(state, played, spec(secure=False, sites=sorted(played)))
        assert public.status == "completed" and public.report is not None, public.error
        assert isinstance(public.report, RegressionReport)
        PLAIN[key] = public.report
    return PLAIN[key]


def spec(
    body: dict[str, Any] = LOGISTIC, secure: bool = True, sites: list[str] | None = None
) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {
            "name": "hostile-own",
            "dataset": "gbsg2",
            "cohort": BREAST,
            "sites": sites,
            "analysis": body,
            "round_timeout_s": 60.0,  # no site is waited for: every one answers in each pass
            "privacy": {"secure_aggregation": secure},
        }
    )


def masked_post(played: Mapping[str, Site], name: str, job_id: str) -> tuple[str, bytes]:
    """Drive the job to its masked phase; the task of site ``name`` and the masked input it
    would send (its real one, not yet sent)."""
    state, site = played[name].state, played[name]
    drive(state, played, job_id, until=lambda job: job.rounds[-1].phase == "masked")
    task = state.coordinator.next_task(site.id)
    assert task is not None and task.secure is not None and task.secure.phase == "masked"
    outcome = site.secure.step(task, task.secure, lambda: site.runner.run(task, site.fetch))
    assert isinstance(outcome, Post) and outcome.phase == "masked", outcome
    return task.task_id, outcome.body


def header_of(body: bytes) -> tuple[dict[str, Any], int]:
    size = int.from_bytes(body[:8], "little")
    header: dict[str, Any] = json.loads(body[8 : 8 + size])
    return header, size


def with_header(body: bytes, text: str) -> bytes:
    """The masked input ``body`` with ``text`` as its ``MaskedHeader``: the same masked numbers,
    what it says in the clear changed (as a hostile site would send it)."""
    header, size = header_of(body)
    header["__metadata__"][META_KEY] = text
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + body[8 + size :]


def clear_of(body: bytes) -> dict[str, Any]:
    """The ``MaskedHeader`` of a masked input, as JSON data."""
    header, _ = header_of(body)
    clear: dict[str, Any] = json.loads(header["__metadata__"][META_KEY])
    return clear


def post_masked(http: TestClient, state: State, site: str, task_id: str, body: bytes) -> Any:
    headers = {**auth(state.credentials[site]), "Content-Type": "application/octet-stream"}
    return http.post(f"/tasks/{task_id}/secure/masked", content=body, headers=headers)


def hostile(body: bytes, case: str) -> bytes:
    """The site's masked input with its own fit changed as ``case`` says."""
    header = clear_of(body)
    own = header["clear"]["own"]
    assert [term["name"] for term in own["terms"]] == TERMS, own  # the site's real fit
    first = own["terms"][0]
    if case == "coef 1e308":
        first["coef"] = 1e308
    elif case == "coef 1e400":
        first["coef"] = "COEF"
    elif case == "se NaN":
        first["se"] = float("nan")
    elif case == "se negative":
        first["se"] = -first["se"]
    elif case == "se 0":
        first["se"] = 0.0
    elif case == "terms short":
        own["terms"] = own["terms"][:-1]
    elif case == "terms reordered":
        own["terms"] = own["terms"][::-1]
    else:
        assert case == "iterations"
        own["iterations"] = 200
    return with_header(body, json.dumps(header).replace('"COEF"', "1e400"))


def variants(name: str, values: list[str]) -> pytest.MarkDecorator:
    """Parametrize ``name`` over ``values``, each on SQLite and the first also on PostgreSQL:
    the variants differ in what is checked, not in what the database does with a refusal."""
    postgres = pytest.param("postgresql", values[0], marks=pytest.mark.postgres)
    cases = [("sqlite", value) for value in values] + [postgres]
    return pytest.mark.parametrize(("state", name), cases, indirect=["state"])


REFUSALS = {
    "coef 1e308": ("clear.own.terms.0", "coef 1e+308 is not within [-709.78"),
    "coef 1e400": ("clear.own.terms.0.coef", "finite number"),
    "se NaN": ("clear.own.terms.0.se", "finite number"),
    "se negative": ("clear.own.terms.0", "se -", "is not within [1e-100, 1e+100]"),
    "se 0": ("clear.own.terms.0", "se 0 is not within [1e-100, 1e+100]"),
    "terms short": (f"clear.own.terms: 2 given, not the model's 3 in order {TERMS}",),
    "terms reordered": (f"clear.own.terms: 3 given, not the model's 3 in order {TERMS}",),
    "iterations": ("clear.own.iterations: 200, above the analysis' max_iterations 50",),
}


@variants("case", list(REFUSALS))
def test_an_own_fit_no_fit_has_is_refused_and_the_regression_goes_on(
    state: State, http: TestClient, five: dict[str, Site], case: str
) -> None:
    job_id = state.coordinator.submit(spec(), state.admin_id).id
    task_id, body = masked_post(five, HOSTILE, job_id)
    detail = refused(post_masked(http, state, HOSTILE, task_id, hostile(body, case)))
    assert all(word in detail for word in REFUSALS[case]), detail
    replay = post_masked(http, state, HOSTILE, task_id, body)  # the site is out of the round
    assert replay.status_code == 409 and "rejected" in replay.json()["detail"], replay.text

    public = drive(state, five, job_id)
    others = {name: site for name, site in five.items() if name != HOSTILE}
    assert public.status == "completed", public.error
    report, reference = public.report, plain_fit(state, others)
    assert isinstance(report, RegressionReport) and report.secure_sites == sorted(others)
    assert report.n == reference.n
    for mine, theirs in zip(report.terms, reference.terms, strict=True):
        assert mine.coef == pytest.approx(theirs.coef, rel=1e-9, abs=1e-12)
    assert list(report.excluded) == [HOSTILE]
    assert report.excluded[HOSTILE].startswith("failed: its answer was refused: masked: ")
    assert sorted(report.sites) == sorted(others) and report.pooled_only == {}
    assert [h.df for h in report.heterogeneity] == [3, 3, 3]
    assert public.rounds[0].sites[HOSTILE].status == "rejected"
    assert public.rounds[0].sites[HOSTILE].detail == f"masked: {detail}"
    assert all(HOSTILE not in rnd.sites for rnd in public.rounds[1:])
    listing = http.get("/jobs", headers=auth(state.admin_token))
    assert listing.status_code == 200 and job_id in listing.text


def test_two_hostile_sites_leave_too_few_and_the_job_fails_cleanly(
    state: State, http: TestClient, five: dict[str, Site]
) -> None:
    """Two masked inputs refused leave three, fewer than the threshold of 4: the job fails
    saying so, each refused site's task naming its own refusal."""
    job_id = state.coordinator.submit(spec(), state.admin_id).id
    for name, case in ((HOSTILE, "coef 1e308"), ("delta", "terms short")):
        task_id, body = masked_post(five, name, job_id)
        refused(post_masked(http, state, name, task_id, hostile(body, case)), *REFUSALS[case])
    public = drive(state, five, job_id)
    assert public.status == "failed" and public.report is None and public.error is not None
    assert public.error.startswith(
        "round 0 (analysis), secure aggregation: only 3 of 5 sites sent their masked input "
        "and the threshold is 4: the round fails"
    )
    sites = public.rounds[0].sites
    assert sites[HOSTILE].detail.startswith("masked: invalid result header")
    assert sites["delta"].detail.startswith("masked: clear.own.terms: 2 given")
    assert http.get(f"/jobs/{job_id}", headers=auth(state.admin_token)).status_code == 200


@pytest.mark.parametrize("state", ["sqlite"], indirect=True)
@pytest.mark.parametrize("job", ["kaplan_meier", "training"])
def test_an_own_fit_beside_a_job_that_takes_none_is_refused(
    state: State, http: TestClient, five: dict[str, Site], job: str
) -> None:
    """Only a secure regression takes a site's own fit; another job's round refuses one."""
    own = {"terms": [TERM], "iterations": 4}
    if job == "training":
        other: AnalysisSpec | JobSpec = secure_training(rounds=1, round_timeout_s=600)
        words = "clear.own: a training round takes no estimates of a site's own"
    else:
        km = {"type": "kaplan_meier", "outcome": {"time": "rfs_days", "event": "rfs_event"}}
        other = spec(km)
        words = "clear.own: a kaplan_meier analysis takes no estimates of a site's own"
    job_id = state.coordinator.submit(other, state.admin_id).id
    task_id, body = masked_post(five, HOSTILE, job_id)
    header = clear_of(body)
    header["clear"]["own"] = own
    refused(
        post_masked(http, state, HOSTILE, task_id, with_header(body, json.dumps(header))), words
    )
    public = drive(state, five, job_id)
    assert public.status == "completed", public.error


def test_an_own_fit_stored_before_the_checks_is_withheld_and_the_round_closes(
    state: State, http: TestClient, five: dict[str, Site]
) -> None:
    """An orchestrator upgraded with a masked input accepted before its header was checked,
    whose own fit has a coefficient of 1e308, in an open round: the round closes with the site
    in its sum, its own fit withheld as out of today's bounds; the report and the listings
    hold no 1e308."""
    job_id = state.coordinator.submit(spec(), state.admin_id).id
    task_id, body = masked_post(five, HOSTILE, job_id)
    accepted = post_masked(http, state, HOSTILE, task_id, body)
    assert accepted.status_code == 200, accepted.text
    header = clear_of(body)
    header["clear"]["own"]["terms"][0]["coef"] = 1e308
    text = json.dumps(header)
    with pytest.raises(ValueError, match="coef 1e\\+308 is not within"):
        MaskedHeader.model_validate_json(text)
    with state.sessions.begin() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.status == "masked"
        task.result_json = text

    public = drive(state, five, job_id)
    assert public.status == "completed", public.error
    report = public.report
    assert isinstance(report, RegressionReport) and report.secure_sites == sorted(five)
    assert report.n == plain_fit(state, five).n
    withheld = "no estimates of its own: what it sent of its own fit is out of today's bounds"
    assert report.pooled_only == {HOSTILE: withheld} and HOSTILE not in report.sites
    one = http.get(f"/jobs/{job_id}", headers=auth(state.admin_token))
    assert one.status_code == 200
    assert max(map(abs, numbers(one.json())), default=0.0) < 1e300
    # Digests and tokens are hex and may hold "e308"; the number itself, as any text, is not.
    assert not re.search(r"(?<![0-9a-zA-Z_-])1(\.0*)?[eE]\+?308", one.text)


def numbers(value: Any) -> Iterator[float]:
    """Every number in a parsed JSON value."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)


# -- the bounds on the wire ----------------------------------------------------------------

TERM = {"name": "a", "coef": 0.1, "se": 0.2, "lower": -0.3, "upper": 0.5, "z": 0.5, "p": 0.6,
        "ratio": 1.1, "ratio_lower": 0.7, "ratio_upper": 1.6}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("coef", "1e400", "finite number"),
        ("coef", "1e308", "coef 1e+308 is not within"),
        ("lower", "-710", "lower -710 is not within [-709.78"),
        ("upper", "Infinity", "finite number"),
        ("se", "NaN", "finite number"),
        ("se", "-0.2", "se -0.2 is not within [1e-100, 1e+100]"),
        ("se", "0", "se 0 is not within"),
        ("se", "1e-101", "se 1e-101 is not within"),
        ("se", "1e101", "se 1e+101 is not within"),
        ("p", "1.5", "p 1.5 is not within [0, 1]"),
        ("ratio", "-1.1", "ratio -1.1 is not within [0, inf]"),
        ("coef", "0.6", "coef 0.6 is not within [lower, upper]"),
        ("ratio", "2", "ratio 2 is not within [ratio_lower, ratio_upper]"),
    ],
)
def test_a_term_of_an_own_fit_is_bounded_on_the_wire(field: str, value: str, words: str) -> None:
    text = json.dumps({"terms": [{**TERM, field: "VALUE"}], "iterations": 4})
    with pytest.raises(ValueError, match=r"terms\.0") as refused:
        OwnEstimate.model_validate_json(text.replace('"VALUE"', value))
    assert words in str(refused.value)


def test_a_term_at_the_bounds_passes_and_a_report_term_is_not_bounded() -> None:
    """The bounds are on what a site sends; the orchestrator's own terms (the report's) are
    only finite."""
    edge = {**TERM, "coef": -MAX_LOG_RATIO, "lower": -MAX_LOG_RATIO, "se": 1e-100, "z": -1e102}
    assert OwnEstimate.model_validate({"terms": [edge], "iterations": 4}).terms == [Term(**edge)]
    assert Term(**{**TERM, "coef": 1e308, "se": 0.0}).coef == 1e308
