"""Secure rounds under dropouts, restarts, hostile posts and tampered tasks: the real
coordinator (SQLite and PostgreSQL; over HTTP where a post is refused) and five sites playing
the real runner, ledger and secure sessions (``tests/sites.py``) on GBSG2.

Five sites give a threshold of 4 (t = floor(0.75 n) + 1): a round goes on without one site
and fails cleanly without two. Suppression is off (threshold 1), so a secure Kaplan-Meier
analysis equals the plain one over the same sites exactly, and every round is checked against
the plain analysis of the sites it says it holds."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from oncofed.edge import EdgePolicy, LocalStore
from oncofed.edge.runner import Outcome, TaskRunner
from oncofed.edge.secure import Post
from oncofed.orchestrator.db import Round, SecureMessage, Task
from oncofed.privacy.layouts import round_layout
from oncofed.privacy.secagg import check_masked, encode_masked, masked_shapes, new_identity
from oncofed.privacy.secagg.crypto import advert_payload
from oncofed.wire.analysis import AnalysisReport, AnalysisSpec, RegressionReport, SurvivalReport
from oncofed.wire.messages import JobPublic, ResultAck, TaskAssignment
from oncofed.wire.secagg import (
    KeyAdvert,
    MaskedHeader,
    SealedShare,
    ShareBundle,
    UnmaskShares,
)
from oncofed.wire.spec import JobSpec
from oncofed.wire.stream import DTYPES, Shapes, TensorWriter
from tests.sites import Mortal, Site, Watch, drive, enrol, job, mortals, play, sixty_each
from tests.support import SITE_KEY, State, auth

HOSTILE = "gamma"
NAMES = [HOSTILE, "alpha", "beta", "delta", "epsilon"]
"""The hostile site first: it acts first in each pass, so a phase stops before it posts."""
BREAST = {"primary_site": "C50", "time_origin": "diagnosis"}
RFS = {"time": "rfs_days", "event": "rfs_event"}
KM = {"type": "kaplan_meier", "outcome": RFS, "group": "grade", "grid_days": 90}
LOGISTIC = {
    "type": "logistic",
    "outcome": {"type": "binary", "label": "rfs_event"},
    "covariates": ["age_at_diagnosis", "treatment.endocrine"],
}
TIMEOUT = 0.3
"""Seconds each phase of a round waits for its sites."""
PATIENT = 60.0
"""Seconds of a phase in tests that post by hand (no site is waited for)."""
POLICY = EdgePolicy(small_cell_threshold=1)
T = TypeVar("T")


def variants(name: str, values: list[str]) -> pytest.MarkDecorator:
    """Parametrize ``name`` over ``values``, each on SQLite and the first also on PostgreSQL:
    the variants differ in what is checked, not in what the database does with a refusal."""
    postgres = pytest.param("postgresql", values[0], marks=pytest.mark.postgres)
    cases = [("sqlite", value) for value in values] + [postgres]
    return pytest.mark.parametrize(("state", name), cases, indirect=["state"])


SQLITE = pytest.mark.parametrize("state", ["sqlite"], indirect=True)
Reference = Callable[[State, Mapping[str, Mortal], dict[str, Any]], AnalysisReport]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LocalStore]:
    """Five hospitals of 60 GBSG2 patients each, every one imported from its CSV export."""
    return sixty_each(tmp_path_factory.mktemp("five"), NAMES)


@pytest.fixture
def five(
    state: State, stores: dict[str, LocalStore], tmp_path: Path
) -> Iterator[dict[str, Mortal]]:
    enrol(state, [name for name in NAMES if name not in state.sites])
    with ExitStack() as stack:
        yield mortals(state, stores, stack, tmp_path / "edges", POLICY)


@pytest.fixture(scope="module")
def plain() -> Reference:
    """The plain analysis (``body``) over the given sites, run once per module and sites."""
    done: dict[tuple[str, tuple[str, ...]], AnalysisReport] = {}

    def reference(
        state: State, played: Mapping[str, Mortal], body: dict[str, Any]
    ) -> AnalysisReport:
        key = (repr(body), tuple(sorted(played)))
        if key not in done:
            public = play(state, played, analysis(body, secure=False, sites=sorted(played)))
            assert public.status == "completed" and public.report is not None, public.error
            done[key] = public.report
        return done[key]

    return reference


def analysis(
    body: dict[str, Any],
    secure: bool = True,
    sites: list[str] | None = None,
    timeout: float = TIMEOUT,
) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {
            "name": "robust",
            "dataset": "gbsg2",
            "cohort": BREAST,
            "sites": sites,
            "analysis": body,
            "round_timeout_s": timeout,
            "privacy": {"secure_aggregation": secure},
        }
    )


def without(played: Mapping[str, T], *names: str) -> dict[str, T]:
    return {name: site for name, site in played.items() if name not in names}


def same_curves(public: JobPublic, reference: AnalysisReport, sites: Mapping[str, Mortal]) -> None:
    """The secure job completed over exactly ``sites``, with the plain analysis's curves."""
    assert public.status == "completed", public.error
    report = public.report
    assert isinstance(report, SurvivalReport) and isinstance(reference, SurvivalReport)
    assert report.secure_sites == sorted(sites)
    assert report.groups.keys() == reference.groups.keys() == {"G1", "G2", "G3"}
    for group, curve in report.groups.items():
        assert curve == reference.groups[group]
    assert report.logrank == reference.logrank


def same_fit(public: JobPublic, reference: AnalysisReport, sites: Mapping[str, Mortal]) -> None:
    assert public.status == "completed", public.error
    report = public.report
    assert isinstance(report, RegressionReport) and isinstance(reference, RegressionReport)
    assert report.secure_sites == sorted(sites) and report.n == reference.n
    for mine, theirs in zip(report.terms, reference.terms, strict=True):
        assert mine.coef == pytest.approx(theirs.coef, rel=1e-9, abs=1e-12)
        assert mine.se == pytest.approx(theirs.se, rel=1e-9)


def phase(name: str) -> Callable[[JobPublic], bool]:
    """True once the job's open round is in phase ``name``."""
    return lambda public: public.rounds[-1].phase == name


def honest(site: Mortal) -> tuple[TaskAssignment, Post]:
    """The site's next task and what its secure session would post, not yet sent."""
    task = site.state.coordinator.next_task(site.id)
    assert task is not None and task.secure is not None
    outcome = site.secure.step(task, task.secure, lambda: site.runner.run(task, site.fetch))
    assert isinstance(outcome, Post), outcome
    return task, outcome


def post(
    api: TestClient, state: State, site: str, task_id: str, phase: str, body: bytes | str
) -> httpx.Response:
    kind = "application/octet-stream" if phase == "masked" else "application/json"
    headers = {**auth(state.credentials[site]), "Content-Type": kind}
    return api.post(f"/tasks/{task_id}/secure/{phase}", content=body, headers=headers)


def refused(response: httpx.Response, *detail: str) -> ResultAck:
    """A post that drops its site from the round: 422 with the reason."""
    assert response.status_code == 422, response.text
    ack = ResultAck.model_validate_json(response.content)
    assert ack.status == "rejected" and all(d in ack.detail for d in detail), ack.detail
    return ack


def error(response: httpx.Response, status: int, detail: str) -> None:
    """A post refused without touching the round: an HTTP error naming why."""
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"], response.text


def submit(state: State, spec: AnalysisSpec | JobSpec) -> str:
    return state.coordinator.submit(spec, state.admin_id).id


def stored_rounds(state: State, job_id: str) -> list[Round]:
    with state.sessions() as session:
        return list(session.scalars(select(Round).where(Round.job_id == job_id)))


def masked_blobs(state: State, job_id: str) -> list[str]:
    """The masked inputs the job's rounds received (their blobs' hashes)."""
    with state.sessions() as session:
        rows = session.scalars(
            select(Task.result_sha).join(Round).where(Round.job_id == job_id)
        ).all()
    return [sha for sha in rows if sha]


# -- dropouts ---------------------------------------------------------------------------


def test_a_site_killed_after_its_shares_is_dropped_at_the_deadline(
    state: State, five: dict[str, Mortal], plain: Reference
) -> None:
    five[HOSTILE].kill_after = "shares"
    public = play(state, five, analysis(KM))
    survivors = without(five, HOSTILE)
    same_curves(public, plain(state, survivors, KM), survivors)
    dropped = "expired: no answer before the round deadline (in the masked phase)"
    assert public.report is not None and public.report.excluded == {HOSTILE: dropped}
    sites = public.rounds[0].sites
    assert sites[HOSTILE].status == "expired" and dropped.endswith(sites[HOSTILE].detail)
    assert all(sites[name].status == "accepted" for name in survivors)
    received = masked_blobs(state, public.id)
    assert len(received) == 4
    assert not any(state.coordinator.blobs.path(sha).exists() for sha in received)


def test_a_site_killed_after_its_masked_input_is_in_the_sum(
    state: State, five: dict[str, Mortal], plain: Reference
) -> None:
    reference = plain(state, five, KM)
    five[HOSTILE].kill_after = "masked"
    public = play(state, five, analysis(KM))
    same_curves(public, reference, five)
    assert public.report is not None and public.report.excluded == {}
    assert public.rounds[0].sites[HOSTILE].status == "accepted"


@pytest.mark.parametrize("narrowed", [False, True])
def test_a_policy_narrowed_after_the_keys_phase_stops_the_masked_input(
    state: State, five: dict[str, Mortal], plain: Reference, narrowed: bool
) -> None:
    """A site computed its part at the keys phase; its admin then closes the dataset to jobs.
    The masked input is checked against the policy in force when it would leave: the site
    declines, and the others' sum is unmasked without it. A policy re-read with the same
    values lets the part go, and the sum is every site's."""
    site = five[HOSTILE]
    stricter = POLICY.model_copy(update={"allowed_datasets": ["other"] if narrowed else None})

    def narrow(who: Site, task: TaskAssignment, outcome: object, ack: ResultAck) -> None:
        if isinstance(outcome, Post) and outcome.phase == "keys":
            who.runner = TaskRunner(site.store, stricter, who.name, who.ledger, SITE_KEY)
            who.secure.use(stricter)

    site.watch = narrow
    public = play(state, five, analysis(KM))
    counted = without(five, HOSTILE) if narrowed else five
    same_curves(public, plain(state, counted, KM), counted)
    assert public.report is not None
    if narrowed:
        reason = public.report.excluded[HOSTILE]
        assert reason.startswith("declined: secure round: dataset 'gbsg2' is not open to")
    else:
        assert public.report.excluded == {}


FEWER = {
    "shares": "only 3 of 5 sites sent their masked input and the threshold is 4: the round fails",
    "masked": "only 3 sites sent unmasking shares and the threshold is 4",
}


@pytest.mark.parametrize("after", list(FEWER))
def test_fewer_survivors_than_the_threshold_fail_the_job_and_nothing_is_unmasked(
    state: State, five: dict[str, Mortal], after: str
) -> None:
    """Two sites killed after their shares leave three masked inputs, too few to ask for
    unmasking shares; killed after their masked inputs, they leave three sets of unmasking
    shares, too few to rebuild any secret. The job fails saying so; no sum is decoded and the
    masked inputs are let go (no longer in the store)."""
    for name in ("delta", HOSTILE):
        five[name].kill_after = after
    public = play(state, five, analysis(KM))
    assert public.status == "failed" and public.report is None
    assert public.error is not None
    reason, left_out = public.error.split(". ", 1)
    assert reason == f"round 0 (analysis), secure aggregation: {FEWER[after]}"
    expired = "expired (no answer before the round deadline (in the"
    assert left_out.count(expired) == 2 and "delta: " in left_out and f"{HOSTILE}: " in left_out
    (rnd,) = stored_rounds(state, public.id)
    assert rnd.status == "closed" and rnd.result_json is None
    assert (rnd.survivors_json is None) == (after == "shares")
    posted = "masked" if after == "shares" else "accepted"  # its unmasking shares are in
    assert {name: site.status for name, site in public.rounds[0].sites.items()} == {
        name: "expired" if name in ("delta", HOSTILE) else posted for name in NAMES
    }
    received = masked_blobs(state, public.id)
    assert len(received) == (3 if after == "shares" else 5)
    assert not any(state.coordinator.blobs.path(sha).exists() for sha in received)


# -- restarts ----------------------------------------------------------------------------


def restarts(state: State, posts: int) -> tuple[Watch, list[str]]:
    """A watch restarting the coordinator in each phase of a secure round, once ``posts``
    sites have posted in it; and the phases it restarted in."""
    seen: dict[str, int] = {}
    restarted: list[str] = []

    def watch(site: Site, task: TaskAssignment, outcome: Outcome | Post, ack: ResultAck) -> None:
        if isinstance(outcome, Post):
            assert ack.status == "accepted", ack
            seen[outcome.phase] = seen.get(outcome.phase, 0) + 1
            if seen[outcome.phase] == posts:
                state.restart()
                restarted.append(outcome.phase)

    return watch, restarted


def test_a_coordinator_restarted_in_every_phase_finishes_the_round(
    state: State, five: dict[str, Mortal], plain: Reference
) -> None:
    """Restarted after two keys, two sets of shares, two masked inputs and two unmasking
    replies: each time it rebuilds the phase (and the sum of masked inputs) from the database
    and its blobs, and the result is the plain one."""
    watch, restarted = restarts(state, 2)
    for site in five.values():
        site.watch = watch
    same_curves(play(state, five, analysis(KM)), plain(state, five, KM), five)
    assert restarted == ["keys", "shares", "masked", "unmask"]


def test_a_restarted_coordinator_keeps_the_input_of_a_site_that_left_the_unmask_phase(
    state: State, five: dict[str, Mortal], plain: Reference
) -> None:
    """An edge restarted after its masked input has no secrets left and declines the unmask
    phase; its input is in the sum, and a coordinator restarted before the round closes must
    rebuild the sum with it."""
    job_id = submit(state, analysis(KM))
    drive(state, five, job_id, until=phase("unmask"))
    five[HOSTILE].restart()
    assert five[HOSTILE].act()
    assert job(state, job_id).rounds[0].sites[HOSTILE].status == "declined"
    assert five["alpha"].act()
    state.restart()
    public = drive(state, five, job_id)
    same_curves(public, plain(state, five, KM), five)


# -- hostile and broken posts ------------------------------------------------------------


@variants("forgery", ["another key", "another round", "another site's"])
def test_a_forged_key_advert_is_refused_and_the_round_goes_on(
    state: State, http: TestClient, five: dict[str, Mortal], plain: Reference, forgery: str
) -> None:
    job_id = submit(state, analysis(KM, timeout=PATIENT))
    task, honest_post = honest(five[HOSTILE])
    advert = KeyAdvert.model_validate_json(honest_post.body)
    assert task.secure is not None
    context = task.secure.context
    if forgery == "another site's":
        beta_task, beta_post = honest(five["beta"])
        five["beta"].deliver(beta_task, beta_post)
        forged, reason = beta_post.body, "the advert is from 'beta', not this site"
    else:
        signer = new_identity() if forgery == "another key" else five[HOSTILE].identity
        if forgery == "another round":
            context = context.model_copy(update={"round": context.round + 1})
        payload = advert_payload(context, HOSTILE, advert.mask_key, advert.share_key)
        forged = advert.model_copy(update={"signature": signer.sign(payload)}).model_dump_json()
        reason = "does not verify with its identity key"
    refused(post(http, state, HOSTILE, task.task_id, "keys", forged), reason)
    error(post(http, state, HOSTILE, task.task_id, "keys", honest_post.body), 409, "rejected")
    public = drive(state, five, job_id)
    others = without(five, HOSTILE)
    same_curves(public, plain(state, others, KM), others)
    assert public.report is not None
    assert public.report.excluded[HOSTILE].startswith("failed: its answer was refused: keys: ")


@variants("wrong", ["missing", "unknown", "another site's"])
def test_shares_for_the_wrong_sites_are_refused_and_the_round_goes_on(
    state: State, http: TestClient, five: dict[str, Mortal], plain: Reference, wrong: str
) -> None:
    job_id = submit(state, analysis(KM, timeout=PATIENT))
    drive(state, five, job_id, until=phase("shares"))
    task, honest_post = honest(five[HOSTILE])
    bundle = ShareBundle.model_validate_json(honest_post.body)
    first, *rest = bundle.shares
    if wrong == "missing":
        body, reason = ShareBundle(sender=HOSTILE, shares=rest), "missing ['alpha']"
    elif wrong == "unknown":
        stranger = SealedShare(sender=HOSTILE, recipient="zeta", ciphertext=first.ciphertext)
        body = ShareBundle(sender=HOSTILE, shares=[stranger, *rest])
        reason = "unexpected ['zeta']"
    else:
        beta_task, beta_post = honest(five["beta"])
        five["beta"].deliver(beta_task, beta_post)
        body = ShareBundle.model_validate_json(beta_post.body)
        reason = "the shares are not from this site"
    refused(post(http, state, HOSTILE, task.task_id, "shares", body.model_dump_json()), reason)
    public = drive(state, five, job_id)
    others = without(five, HOSTILE)
    same_curves(public, plain(state, others, KM), others)
    assert public.report is not None
    assert public.report.excluded[HOSTILE].startswith("failed: its answer was refused: shares: ")


def masked_body(shapes: Shapes, header: MaskedHeader, dtype: str = "U64") -> bytes:
    """A masked input of these tensors (zeros), as a site would send one."""
    buffer = io.BytesIO()
    writer = TensorWriter(buffer, shapes, header, dtype)
    for name, shape in shapes.items():
        writer.write(name, 0, np.zeros(int(np.prod(shape)), dtype=DTYPES[dtype]))
    writer.finish()
    return buffer.getvalue()


@variants("wrong", ["shape", "dtype", "segments", "site", "truncated", "not safetensors"])
def test_a_masked_input_of_the_wrong_layout_is_refused_and_the_site_dropped(
    state: State, http: TestClient, five: dict[str, Mortal], plain: Reference, wrong: str
) -> None:
    """Refused, the site is dropped after sharing its keys: the sum is unmasked without it,
    its pairwise masks removed with its mask key rebuilt from the others' shares."""
    spec = analysis(KM, timeout=PATIENT)
    job_id = submit(state, spec)
    drive(state, five, job_id, until=phase("masked"))
    task, honest_post = honest(five[HOSTILE])
    layout = round_layout(spec, "analysis", 0, len(five))
    header = check_masked(honest_post.body, layout)
    shapes = dict(masked_shapes(layout))
    if wrong == "shape":
        groups, bins, limbs = shapes["events"]
        shapes["events"] = (groups, bins + 1, limbs)
        body, reason = masked_body(shapes, header), "events"
    elif wrong == "dtype":
        body, reason = masked_body(shapes, header, "F32"), "dtype F32"
    elif wrong == "segments":
        shapes["deaths"] = shapes.pop("events")
        body, reason = masked_body(shapes, header), "deaths"
    elif wrong == "site":
        masked = {name: np.zeros(shape, np.uint64) for name, shape in shapes.items()}
        body = encode_masked(
            masked, layout, header.model_copy(update={"site": "beta", "next": None})
        )
        reason = "the masked input is for another round or site"
    elif wrong == "truncated":
        body, reason = honest_post.body[:-8], "data section does not match the header"
    else:
        body, reason = b"\xff" * 64, "header length exceeds the payload"
    refused(post(http, state, HOSTILE, task.task_id, "masked", body), reason)
    public = drive(state, five, job_id)
    others = without(five, HOSTILE)
    same_curves(public, plain(state, others, KM), others)
    assert public.report is not None
    assert public.report.excluded[HOSTILE].startswith("failed: its answer was refused: masked: ")


def test_an_oversized_masked_input_is_refused_before_it_is_read(
    state: State, http: TestClient, five: dict[str, Mortal], plain: Reference
) -> None:
    job_id = submit(state, analysis(KM, timeout=PATIENT))
    drive(state, five, job_id, until=phase("masked"))
    task, honest_post = honest(five[HOSTILE])
    padded = honest_post.body + b"\0" * (2 << 20)
    error(post(http, state, HOSTILE, task.task_id, "masked", padded), 413, "bytes this task takes")
    assert post(http, state, HOSTILE, task.task_id, "masked", honest_post.body).status_code == 200
    same_curves(drive(state, five, job_id), plain(state, five, KM), five)


@variants(
    "wrong", ["a survivor as dropped", "a survivor missing", "outside the field", "another site's"]
)
def test_unmask_shares_naming_the_wrong_sites_are_refused_and_the_round_goes_on(
    state: State, http: TestClient, five: dict[str, Mortal], plain: Reference, wrong: str
) -> None:
    """The site's masked input is in the sum and stays there; the other four sites' shares
    unmask it."""
    job_id = submit(state, analysis(KM, timeout=PATIENT))
    drive(state, five, job_id, until=phase("unmask"))
    task, honest_post = honest(five[HOSTILE])
    reply = UnmaskShares.model_validate_json(honest_post.body)
    (first, share), *rest = reply.self_mask.items()
    if wrong == "a survivor as dropped":
        body = UnmaskShares(sender=HOSTILE, self_mask=dict(rest), mask_key={first: share})
        reason = "other sites than the survivor list"
    elif wrong == "a survivor missing":
        body = UnmaskShares(sender=HOSTILE, self_mask=dict(rest), mask_key={})
        reason = "other sites than the survivor list"
    elif wrong == "outside the field":
        body = reply.model_copy(update={"self_mask": {first: b"\xff" * 66, **dict(rest)}})
        reason = "site 'gamma' sent a share outside the field"
    else:
        beta_task, beta_post = honest(five["beta"])
        five["beta"].deliver(beta_task, beta_post)
        body = UnmaskShares.model_validate_json(beta_post.body)
        reason = "the shares are not this site's"
    refused(post(http, state, HOSTILE, task.task_id, "unmask", body.model_dump_json()), reason)
    public = drive(state, five, job_id)
    same_curves(public, plain(state, five, KM), five)


@variants("replies", ["more than t", "exactly t"])
def test_a_wrong_unmask_share_fails_the_round_cleanly(
    state: State, http: TestClient, five: dict[str, Mortal], replies: str
) -> None:
    """A share of the right form but the wrong value cannot be told from a right one when it
    arrives. With more replies than the threshold two sets of them rebuild different secrets;
    with exactly the threshold (a site left the unmask phase) the one secret they rebuild is
    not a 32-byte seed. Either way the round fails instead of releasing a wrong sum."""
    job_id = submit(state, analysis(KM, timeout=PATIENT))
    drive(state, five, job_id, until=phase("unmask"))
    if replies == "exactly t":
        five["beta"].restart()
        assert five["beta"].act()  # without its secrets it declines the unmask phase
    task, honest_post = honest(five[HOSTILE])
    reply = UnmaskShares.model_validate_json(honest_post.body)
    (a, share_a), (b, share_b), *rest = reply.self_mask.items()
    swapped = reply.model_copy(update={"self_mask": {a: share_b, b: share_a, **dict(rest)}})
    ack = post(http, state, HOSTILE, task.task_id, "unmask", swapped.model_dump_json())
    assert ack.status_code == 200
    public = drive(state, five, job_id)
    assert public.status == "failed" and public.report is None and public.error is not None
    assert public.error.startswith(
        "round 0 (analysis), secure aggregation: the shares of site 'alpha''s self-mask seed "
        "do not agree: at least one site sent a wrong share; the round's sum cannot be unmasked"
    )
    (rnd,) = stored_rounds(state, job_id)
    assert rnd.result_json is None


def test_posts_out_of_turn_are_refused_without_harm(
    state: State, http: TestClient, five: dict[str, Mortal], plain: Reference
) -> None:
    """Posts in the wrong phase, for another site's task or no task, malformed ones and
    replays: each refused (or acknowledged as a duplicate) with a clear status, never a 500;
    the round goes on with every site."""
    job_id = submit(state, analysis(KM, timeout=PATIENT))
    task, keys = honest(five[HOSTILE])
    beta = five["beta"].state.coordinator.next_task(five["beta"].id)
    assert beta is not None
    tid = task.task_id
    headers = {**auth(state.credentials[HOSTILE]), "Content-Type": "application/json"}
    stats = '{"n": 1, "sums": [], "sumsq": []}'
    result = http.post(f"/tasks/{tid}/result", content=stats, headers=headers)
    error(result, 400, "is securely aggregated: it takes no plain result")
    update = http.post(f"/tasks/{tid}/update", content=b"\0" * 64, headers=headers)
    error(update, 400, "is an analysis: it takes no models")
    empty_shares = ShareBundle(sender=HOSTILE, shares=[]).model_dump_json()
    empty_unmask = UnmaskShares(sender=HOSTILE, self_mask={}, mask_key={}).model_dump_json()
    error(post(http, state, HOSTILE, tid, "shares", empty_shares), 409, "not in its 'shares'")
    error(post(http, state, HOSTILE, tid, "unmask", empty_unmask), 409, "not in its 'unmask'")
    error(post(http, state, HOSTILE, tid, "masked", b"\0" * 64), 409, "takes no masked input")
    error(post(http, state, HOSTILE, beta.task_id, "keys", keys.body), 403, "another site")
    error(post(http, state, HOSTILE, "f" * 32, "keys", keys.body), 404, "no task")
    malformed = keys.body.replace(b'"signature":"', b'"signature":"!')
    assert post(http, state, HOSTILE, tid, "keys", malformed).status_code == 422
    assert post(http, state, HOSTILE, tid, "keys", keys.body).json()["status"] == "accepted"
    replay = post(http, state, HOSTILE, tid, "keys", keys.body)
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    drive(state, five, job_id, until=phase("masked"))
    task, masked = honest(five[HOSTILE])
    assert post(http, state, HOSTILE, tid, "masked", masked.body).json()["status"] == "accepted"
    assert post(http, state, HOSTILE, tid, "masked", masked.body).json()["status"] == "duplicate"
    assert post(http, state, HOSTILE, tid, "keys", keys.body).json()["status"] == "duplicate"
    error(post(http, state, HOSTILE, tid, "unmask", empty_unmask), 409, "(it is masked)")
    same_curves(drive(state, five, job_id), plain(state, five, KM), five)


# -- a site sent something different -----------------------------------------------------


def tamper(
    monkeypatch: pytest.MonkeyPatch,
    state: State,
    site: Mortal,
    change: Callable[[TaskAssignment], TaskAssignment | None],
) -> None:
    """The coordinator sends ``site`` ``change(task)`` instead of its task (None: unchanged),
    as an orchestrator that sends one site something different would."""
    real = state.coordinator.next_task

    def next_task(site_id: int) -> TaskAssignment | None:
        task = real(site_id)
        if task is None or site_id != site.id:
            return task
        return change(task) or task

    monkeypatch.setattr(state.coordinator, "next_task", next_task)


def other_params(task: TaskAssignment) -> TaskAssignment:
    assert task.params is not None
    params = task.params.model_copy(update={"pooled": [0.01] * len(task.params.pooled)})
    return task.model_copy(update={"params": params})


CONTEXT_MISMATCH = "secure round: the round's context does not match the task this site was sent"


def test_a_site_sent_other_newton_parameters_declines(
    state: State, five: dict[str, Mortal], plain: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other coefficients in the first round: the site's task does not hash to the round's
    context, so it declines before it joins; the regression runs on the other four."""
    tamper(monkeypatch, state, five[HOSTILE], lambda t: other_params(t) if t.round == 0 else None)
    public = play(state, five, analysis(LOGISTIC))
    others = without(five, HOSTILE)
    same_fit(public, plain(state, others, LOGISTIC), others)
    assert public.rounds[0].sites[HOSTILE].status == "declined"
    assert public.rounds[0].sites[HOSTILE].detail.startswith(CONTEXT_MISMATCH)


@SQLITE  # its refusal is a forged advert's, tested on both databases above
def test_a_site_sent_another_analysis_and_its_context_is_refused(
    state: State, five: dict[str, Mortal], plain: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another analysis (other confidence bands) with a round context to match it, in every
    phase: the site takes part, but its masked input is bound to other round contents than
    the others' (its masks could not cancel), so the coordinator refuses it and the round goes
    on without it."""
    other = analysis({**KM, "confidence": 0.9})

    def change(task: TaskAssignment) -> TaskAssignment | None:
        if task.secure is None:
            return None
        changed = task.model_copy(update={"spec": other})
        context = task.secure.context.model_copy(update={"announced": changed.announced()})
        return changed.model_copy(
            update={"secure": task.secure.model_copy(update={"context": context})}
        )

    tamper(monkeypatch, state, five[HOSTILE], change)
    public = play(state, five, analysis(KM))
    others = without(five, HOSTILE)
    same_curves(public, plain(state, others, KM), others)
    site = public.rounds[0].sites[HOSTILE]
    assert site.status == "rejected"
    assert site.detail == "masked: the masked input is for another round or site"


def test_a_site_sent_other_parameters_later_fails_the_regression(
    state: State, five: dict[str, Mortal], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a later Newton round the site declines; the round's sum is over the other four,
    which the analysis refuses to use (two sums differing by one site would reveal it)."""
    tamper(monkeypatch, state, five[HOSTILE], lambda t: other_params(t) if t.round == 1 else None)
    public = play(state, five, analysis(LOGISTIC))
    assert public.status == "failed" and public.report is None
    assert public.error is not None and public.error.startswith(
        "site(s) gamma left the analysis at Newton iteration 2"
    )
    assert public.rounds[1].sites[HOSTILE].detail.startswith(CONTEXT_MISMATCH)


@SQLITE  # its decline is that of other parameters, tested on both databases
def test_a_site_sent_another_model_takes_no_part(
    state: State, five: dict[str, Mortal], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = secure_training(rounds=1)

    def change(task: TaskAssignment) -> TaskAssignment | None:
        if task.kind != "train":
            return None
        return task.model_copy(update={"model_sha256": "0" * 64})

    tamper(monkeypatch, state, five[HOSTILE], change)
    public = play(state, five, spec)
    assert public.status == "completed", public.error
    assert [r.kind for r in public.rounds] == ["stats", "train", "evaluate"]
    assert public.rounds[1].sites[HOSTILE].status == "declined"
    assert public.rounds[1].sites[HOSTILE].detail.startswith(CONTEXT_MISMATCH)
    assert HOSTILE not in public.rounds[2].sites
    assert all(s.status == "accepted" for s in without(public.rounds[1].sites, HOSTILE).values())


# -- the next round's keys, sent ahead ---------------------------------------------------


def secure_posts(state: State, job_id: str) -> dict[int, dict[str, int]]:
    """How many sites posted (or were credited) each secure message, by round number."""
    with state.sessions() as session:
        rows = session.execute(
            select(Round.number, SecureMessage.phase)
            .join(Task, Task.round_id == Round.id)
            .join(SecureMessage, SecureMessage.task_id == Task.id)
            .where(Round.job_id == job_id)
        ).all()
    posted: dict[int, dict[str, int]] = {}
    for number, kind in rows:
        posted.setdefault(number, {}).setdefault(kind, 0)
        posted[number][kind] += 1
    return posted


def secure_training(rounds: int, round_timeout_s: float = TIMEOUT) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "t",
            "dataset": "gbsg2",
            "cohort": BREAST,
            "features": ["age_at_diagnosis", "treatment.endocrine"],
            "outcome": {"type": "binary", "label": "rfs_event"},
            "model": {"type": "logistic"},
            "rounds": rounds,
            "round_timeout_s": round_timeout_s,
            "privacy": {"secure_aggregation": True},
        }
    )


def test_later_rounds_open_at_their_masked_phase_with_keys_sent_ahead(
    state: State, five: dict[str, Mortal], plain: Reference
) -> None:
    """Each round's keys come with the previous round's masked inputs and its shares with the
    unmasking shares: after the first, a Newton round has no keys phase (two exchanges per
    site, not four), every task is still delivered, and the fit is the plain one."""
    public = play(state, five, analysis(LOGISTIC))
    same_fit(public, plain(state, five, LOGISTIC), five)
    posted = secure_posts(state, public.id)
    first, *later = sorted(posted)
    assert len(later) >= 3
    assert posted[first] == {"keys": 5, "shares": 5, "unmask": 5}
    assert all(posted[number] == {"shares": 5, "unmask": 5} for number in later)
    with state.sessions() as session:
        tasks = session.scalars(select(Task).join(Round).where(Round.job_id == public.id)).all()
        assert all(task.delivered_at is not None for task in tasks)


def test_a_site_that_sent_no_keys_ahead_rejoins_the_next_round_at_its_keys_phase(
    state: State, five: dict[str, Mortal]
) -> None:
    """A site gone after its masked input (in the sum) sends no shares for the next round:
    that round opens at its keys phase, the site back in time takes part with fresh keys
    (those it made ahead are dropped), and the rounds after it are set up ahead again."""
    five[HOSTILE].kill_after = "masked"
    job_id = submit(state, secure_training(rounds=3))

    def revive(_: int) -> None:
        if five[HOSTILE].killed and len(job(state, job_id).rounds) > 1:
            five[HOSTILE].killed, five[HOSTILE].kill_after = False, None

    public = drive(state, five, job_id, between=revive)
    assert public.status == "completed", public.error
    assert [r.kind for r in public.rounds] == ["stats", "train", "train", "train", "evaluate"]
    assert public.rounds[0].sites[HOSTILE].status == "accepted"  # in the stats round's sum
    assert all(site.status == "accepted" for r in public.rounds[1:] for site in r.sites.values())
    posted = secure_posts(state, job_id)
    assert posted[0] == {"keys": 5, "shares": 5, "unmask": 4}
    assert posted[1] == {"keys": 5, "shares": 5, "unmask": 5}
    assert all(posted[number] == {"shares": 5, "unmask": 5} for number in (2, 3, 4))


def test_a_next_roster_below_the_sites_policy_is_refused_and_the_round_set_up_afresh(
    state: State,
    five: dict[str, Mortal],
    plain: Reference,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The orchestrator lowers the threshold of the next round's roster it sends one site:
    the site shares nothing for it, so each next round opens at its keys phase and is set up
    under the site's checks; the fit is the plain one."""

    def lower(task: TaskAssignment) -> TaskAssignment | None:
        step = task.secure
        if step is None or step.next_roster is None:
            return None
        roster = step.next_roster.model_copy(update={"threshold": 2})
        return task.model_copy(update={"secure": step.model_copy(update={"next_roster": roster})})

    tamper(monkeypatch, state, five[HOSTILE], lower)
    public = play(state, five, analysis(LOGISTIC))
    same_fit(public, plain(state, five, LOGISTIC), five)
    posted = secure_posts(state, public.id)
    assert len(posted) >= 4
    assert all(kinds == {"keys": 5, "shares": 5, "unmask": 5} for kinds in posted.values())
    assert "threshold 2 of 5 sites is too low" in caplog.text
