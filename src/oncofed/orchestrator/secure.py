"""Secure rounds (a spec's ``privacy.secure_aggregation``): the orchestrator relays keys and
sealed shares, adds up masked inputs, and unmasks only their sum (Bonawitz et al. 2017).

A secure round moves through four phases; each stays open until every site still in the round
has posted, or its deadline passes and the sites behind are dropped:

==========  ================================  =========================================
phase       a site is sent                    it posts
==========  ================================  =========================================
keys        the task                          its signed key advert
shares      the roster (every advert)         its sealed shares, one per peer
masked      the shares addressed to it        its masked input (a blob), with its
                                              advert for the job's next round
unmask      the signed survivor list, and     its unmasking shares, with its sealed
            the next round's roster           shares for the next round
==========  ================================  =========================================

The next round's keys and shares thus arrive with this round's last two phases. When every
site of the next round sent both, it opens at its masked phase (two exchanges instead of
four); when any did not (it dropped out, or its advert or shares were refused), it opens at
its keys phase, and every site takes part afresh.

A task's status says where its site is: ``pending``/``delivered`` (keys), then ``keys``,
``shares`` and ``masked`` after each post, and ``accepted`` once its unmasking shares are in.
What sites post is kept (``SecureMessage`` rows; masked inputs as blobs until the round
closes), so a restarted orchestrator rebuilds the running sum and goes on where it was.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from oncofed.learning import secure as learning
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import Job, Round, SecureMessage, Site, Task, utcnow
from oncofed.orchestrator.errors import BadRequest, Conflict
from oncofed.orchestrator.progress import (
    LEFT,
    Averages,
    Effects,
    Progress,
    check_not_withdrawn,
    end,
    parse_spec,
    statuses,
)
from oncofed.privacy import layouts
from oncofed.privacy.secagg import (
    SITES,
    Layout,
    MaskedSum,
    SecAggError,
    build_roster,
    check_bundle,
    check_masked,
    check_unmask,
    inbox_for,
    sign_survivors,
)
from oncofed.privacy.secagg.crypto import check_usable, verify_advert
from oncofed.wire.analysis import AnalysisSpec, OwnEstimate
from oncofed.wire.errors import BadAnswer
from oncofed.wire.messages import PooledRound, ResultAck
from oncofed.wire.secagg import (
    Inbox,
    KeyAdvert,
    MaskedHeader,
    Roster,
    RoundContext,
    SecureStep,
    ShareBundle,
    Survivors,
    UnmaskShares,
)
from oncofed.wire.spec import JobSpec
from oncofed.wire.stream import CHUNK, MAX_HEADER, TensorFile

log = logging.getLogger("oncofed.orchestrator")
WAITING = {
    "keys": ("pending", "delivered"),
    "shares": ("keys",),
    "masked": ("shares",),
    "unmask": ("masked",),
}
"""Statuses of the tasks a phase still waits for."""
POSTED = {"keys": "keys", "shares": "shares", "masked": "masked", "unmask": "accepted"}
"""A task's status once its site posted in a phase."""
NEXT = {"keys": "shares", "shares": "masked", "masked": "unmask"}
PROGRESS = ("pending", "delivered", "keys", "shares", "masked", "accepted")
"""The statuses of a task still in the round, in order."""


def context(rnd: Round) -> RoundContext:
    assert rnd.announced_sha is not None  # set when the round opened
    return RoundContext(job_id=rnd.job_id, round=rnd.number, announced=rnd.announced_sha)


class SecureRounds:
    """The phases of every secure round, and the running sums of their masked inputs."""

    def __init__(self, blobs: BlobStore, progress: Progress, key: Ed25519PrivateKey | None) -> None:
        self._blobs, self._progress, self._key = blobs, progress, key
        self._sums: dict[int, MaskedSum] = {}  # round id -> masked inputs folded so far
        self._inboxes: dict[int, dict[str, Inbox]] = {}  # round id -> recipient -> inbox
        self._inboxes_built = threading.Lock()  # sites polling at once build them once

    def forget(self, round_id: int) -> None:
        """Drop what memory holds of a round (rebuilt from the database when needed)."""
        self._sums.pop(round_id, None)
        self._inboxes.pop(round_id, None)

    # -- what a site is sent -----------------------------------------------------------

    def step(self, session: Session, rnd: Round, site: str) -> SecureStep:
        """The phase the round is in, with what ``site`` needs for it."""
        phase, ctx = rnd.phase, context(rnd)
        if phase == "keys":
            return SecureStep(phase="keys", context=ctx)
        if phase == "shares":
            return SecureStep(phase="shares", context=ctx, roster=_roster(rnd))
        if phase == "masked":
            return SecureStep(phase="masked", context=ctx, inbox=self._inbox(session, rnd, site))
        assert phase == "unmask"
        following = _parse_roster(rnd.next_roster_json) if rnd.next_roster_json else None
        return SecureStep(
            phase="unmask", context=ctx, survivors=_survivors(rnd), next_roster=following
        )

    def _inbox(self, session: Session, rnd: Round, site: str) -> Inbox:
        """The sealed shares sent to ``site``, sorted into inboxes once for the round. Under
        the lock the session only reads (a read waits for no writer): its changes are written
        before, so a thread holding the database's write lock and waiting for this lock (a
        transaction handing out the phase it opened) never waits on one that holds the lock
        and waits for the database."""
        session.flush()
        with self._inboxes_built, session.no_autoflush:
            if rnd.id not in self._inboxes:
                bundles = [
                    ShareBundle.model_validate_json(b) for _, b in _posts(session, rnd, "shares")
                ]
                self._inboxes[rnd.id] = {s: inbox_for(s, bundles) for s in _roster(rnd).sites}
            return self._inboxes[rnd.id][site]

    # -- what a site posts -------------------------------------------------------------

    def keys(self, session: Session, effects: Effects, task: Task, advert: KeyAdvert) -> ResultAck:
        """A site's key advert, checked against its registered identity key."""
        if (ack := self._expect(task, "keys")) is not None:
            return ack
        identity = task.site.identity_key
        try:
            if advert.site != task.site.name:
                raise Conflict(f"the advert is from {advert.site!r}, not this site")
            if identity is None:
                raise Conflict("this site has no registered identity key (its edge registers one)")
            verify_advert(context(task.round), advert, bytes.fromhex(identity))
            check_usable(advert)
        except (SecAggError, Conflict) as exc:
            return self._reject(session, effects, task, "keys", str(exc))
        return self._posted(session, effects, task, "keys", advert.model_dump_json())

    def shares(
        self, session: Session, effects: Effects, task: Task, bundle: ShareBundle
    ) -> ResultAck:
        if (ack := self._expect(task, "shares")) is not None:
            return ack
        try:
            if bundle.sender != task.site.name:
                raise Conflict("the shares are not from this site")
            check_bundle(_roster(task.round), bundle)
        except (SecAggError, Conflict) as exc:
            return self._reject(session, effects, task, "shares", str(exc))
        return self._posted(session, effects, task, "shares", bundle.model_dump_json())

    def masked(
        self, session: Session, effects: Effects, task: Task, path: Path, sha: str
    ) -> ResultAck:
        """A site's masked input, spooled at ``path``: checked against the round's layout, its
        header's own estimate against the job (``_check_own``), kept as a blob and folded into
        the round's sum."""
        if (ack := self._expect(task, "masked")) is not None:
            path.unlink(missing_ok=True)
            return ack
        rnd = task.round
        try:
            header = check_masked(path, self._layout(rnd))
            if header.context != context(rnd) or header.site != task.site.name:
                raise Conflict("the masked input is for another round or site")
            _check_own(parse_spec(rnd.job.spec_json), header.clear.own)
        except (SecAggError, Conflict, ValueError) as exc:
            path.unlink(missing_ok=True)
            return self._reject(session, effects, task, "masked", str(exc))
        stored = self._blobs.adopt(path, sha)
        self._sum(session, rnd).add(stored)
        task.result_sha, task.bytes_received = sha, stored.stat().st_size
        task.result_json = header.model_dump_json()
        return self._posted(session, effects, task, "masked", None)

    def unmask(
        self, session: Session, effects: Effects, task: Task, reply: UnmaskShares
    ) -> ResultAck:
        if (ack := self._expect(task, "unmask")) is not None:
            return ack
        rnd = task.round
        try:
            if reply.sender != task.site.name:
                raise Conflict("the shares are not this site's")
            check_unmask(_survivors(rnd), reply)
        except (SecAggError, Conflict) as exc:
            return self._reject(session, effects, task, "unmask", str(exc))
        if reply.next is not None:
            try:
                if rnd.next_roster_json is None:
                    raise SecAggError("the next round has no roster")
                check_bundle(_parse_roster(rnd.next_roster_json), reply.next)
            except SecAggError as exc:  # the next round then opens at its keys phase
                log.warning("site %s: shares for round %d refused: %s", task.site.name,
                            rnd.number + 1, exc)  # fmt: skip
                reply = reply.model_copy(update={"next": None})
        return self._posted(session, effects, task, "unmask", reply.model_dump_json())

    def _expect(self, task: Task, phase: str) -> ResultAck | None:
        """None when the task takes this phase's post now; a duplicate's ack when its site
        posted in this phase already (a retry after a lost answer); ``Conflict`` otherwise."""
        if task.status in PROGRESS and PROGRESS.index(task.status) >= PROGRESS.index(POSTED[phase]):
            return ResultAck(task_id=task.id, status="duplicate", detail=f"{phase} already in")
        check_not_withdrawn(task)
        if task.round.status != "open" or task.round.phase != phase:
            raise Conflict(
                f"task {task.id}: the round is not in its {phase!r} phase "
                f"(it is {task.round.phase if task.round.status == 'open' else 'closed'})"
            )
        if task.status not in WAITING[phase]:
            raise Conflict(f"task {task.id} is {task.status}; it takes no {phase!r} post")
        return None

    def _posted(
        self, session: Session, effects: Effects, task: Task, phase: str, body: str | None
    ) -> ResultAck:
        if body is not None:
            session.add(SecureMessage(task_id=task.id, phase=phase, body=body))
        task.status = POSTED[phase]
        if phase == "unmask":
            task.finished_at = utcnow()
        self.advance(session, effects, task.round)
        return ResultAck(task_id=task.id, status="accepted")

    def _reject(
        self, session: Session, effects: Effects, task: Task, phase: str, reason: str
    ) -> ResultAck:
        """A post that breaks the protocol drops its site from the round (it goes on without
        it, as when a site drops out)."""
        log.warning(
            "secure round: site %s dropped in the %s phase: %s", task.site.name, phase, reason
        )
        task.status, task.detail, task.finished_at = "rejected", f"{phase}: {reason}", utcnow()
        self.advance(session, effects, task.round)
        return ResultAck(task_id=task.id, status="rejected", detail=reason)

    def decline(
        self, session: Session, effects: Effects, task: Task, reason: str, status: str
    ) -> None:
        """A site that will not go on with the round (its policy, or a check of what it was
        sent; ``status`` failed: an error there); it is left out of this round and of the
        job's later ones."""
        rnd = task.round
        if rnd.status != "open" or rnd.phase is None or task.status not in WAITING[rnd.phase]:
            raise Conflict(f"task {task.id} is {task.status}; there is nothing to decline now")
        _drop(task, status, reason)
        log.info("site %s %s task %s: %s", task.site.name, status, task.id, reason)
        self.advance(session, effects, rnd)

    def withdraw(self, session: Session, effects: Effects, task: Task, reason: str) -> None:
        """The operator disabled the task's site: it leaves the round in whatever phase, one it
        has posted in too (the others' shares unmask what it sent), so no phase waits for it."""
        rnd = task.round
        unanswered = {status for statuses in WAITING.values() for status in statuses}
        if rnd.status != "open" or rnd.phase is None or task.status not in unanswered:
            raise Conflict(f"task {task.id} is {task.status}; there is nothing to withdraw")
        _drop(task, "failed", reason)
        log.info("site %s withdrawn from task %s: %s", task.site.name, task.id, reason)
        self.advance(session, effects, rnd)

    def expire(self, session: Session, effects: Effects, rnd: Round) -> None:
        """The phase's deadline passed: its sites that have not posted are dropped."""
        assert rnd.phase is not None
        for task in rnd.tasks:
            if task.status in WAITING[rnd.phase]:
                _drop(task, "expired", "no answer before the round deadline")
        self.advance(session, effects, rnd)

    def forget_job(self, job_id: str) -> None:
        """Drop every sum of a job whose transaction failed (rebuilt from the database)."""
        for round_id in [r for r, total in self._sums.items() if total.context.job_id == job_id]:
            self.forget(round_id)

    def masked_bytes(self, rnd: Round) -> int:
        """The size of a masked input of the round (header room included)."""
        if rnd.phase != "masked":
            raise Conflict(f"round {rnd.number} takes no masked input now")
        layout = self._layout(rnd)
        return 8 + MAX_HEADER + sum(8 * s.size * s.limbs for s in layout.values())

    # -- phases --------------------------------------------------------------------------

    def advance(self, session: Session, effects: Effects, rnd: Round) -> None:
        """Close the round's phase when no site is left to post in it."""
        phase = rnd.phase
        assert phase is not None  # a secure round
        waiting = session.scalar(  # autoflush makes the answer just given count
            select(func.count()).where(Task.round_id == rnd.id, Task.status.in_(WAITING[phase]))
        )
        if waiting:
            return
        try:
            if phase == "unmask":
                self._close(session, effects, rnd)
                return
            self._open_phase(session, effects, rnd, NEXT[phase])
        except SecAggError as exc:
            self._fail(effects, rnd, str(exc))

    def _open_phase(self, session: Session, effects: Effects, rnd: Round, phase: str) -> None:
        ctx, spec = context(rnd), parse_spec(rnd.job.spec_json)
        if phase == "shares":
            adverts = {
                t.site.name: KeyAdvert.model_validate_json(body)
                for t, body in _posts(session, rnd, "keys")
            }
            identities = {name: bytes.fromhex(_key(rnd, name)) for name in adverts}
            roster = build_roster(ctx, adverts.values(), identities, spec.privacy.threshold)
            rnd.roster_json = roster.model_dump_json()
        elif phase == "masked":
            roster = _roster(rnd)
            sharing = sum(t.status == "shares" for t in rnd.tasks)
            if sharing < roster.threshold:
                raise SecAggError(
                    f"only {sharing} sites shared their keys and the threshold is "
                    f"{roster.threshold}"
                )
        else:
            if self._key is None:
                raise SecAggError("this orchestrator has no signing key for survivor lists")
            shared = [t.site.name for t, _ in _posts(session, rnd, "shares")]
            masked = [t for t in rnd.tasks if t.status == "masked"]
            survivors = sign_survivors(
                ctx, _roster(rnd), self._key, shared, [t.site.name for t in masked]
            )
            rnd.survivors_json = survivors.model_dump_json()
            rnd.next_roster_json = _next_roster(ctx, spec, masked)
        rnd.phase = phase
        rnd.deadline = utcnow() + timedelta(seconds=spec.round_timeout_s)
        effects.notify.update(t.site_id for t in rnd.tasks if t.status in WAITING[phase])

    def _close(self, session: Session, effects: Effects, rnd: Round) -> None:
        """Unmask the sum, then move the job on as a plain round's pooled numbers would."""
        survivors = _survivors(rnd)
        replies = [UnmaskShares.model_validate_json(b) for _, b in _posts(session, rnd, "unmask")]
        roster = _roster(rnd)
        if len(replies) < roster.threshold:
            raise SecAggError(
                f"only {len(replies)} sites sent unmasking shares and the threshold is "
                f"{roster.threshold}"
            )
        sums = self._sum(session, rnd).unmask(roster, survivors, replies)
        job = rnd.job
        rnd.status, rnd.closed_at = "closed", utcnow()
        effects.drop_sums.add(rnd.id)
        included = [t for t in rnd.tasks if t.site.name in survivors.survivors]
        for task in included:  # in the sum, whether or not it sent its unmasking shares
            task.status = "accepted"
        blobs = {t.result_sha for t in rnd.tasks if t.result_sha}
        effects.retire.update(blobs)
        if self._progress.too_few(job, rnd, included):
            return
        active = [t.site_id for t in rnd.tasks if t.status not in LEFT]
        spec = parse_spec(job.spec_json)
        rnd.result_json = _pooled_view(spec, rnd.kind, sums, _threshold(included))
        following = {reply.sender: reply.next for reply in replies if reply.next is not None}
        self._progress_after(session, effects, rnd, spec, sums, included, active)
        nxt = next((r for r in job.rounds if r.number == rnd.number + 1), None)
        if nxt is not None and nxt.status == "open" and nxt.phase == "keys":
            _pipeline(session, rnd, nxt, following)
        log.info(
            "job %s secure round %d (%s) closed with %d sites",
            job.id, rnd.number, rnd.kind, len(included),
        )  # fmt: skip

    def _progress_after(
        self,
        session: Session,
        effects: Effects,
        rnd: Round,
        spec: JobSpec | AnalysisSpec,
        sums: Mapping[str, np.ndarray],
        included: list[Task],
        active: list[int],
    ) -> None:
        """Move the job on with the round's unmasked sums, as a plain round's would."""
        job, progress = rnd.job, self._progress
        if isinstance(spec, AnalysisSpec):
            from oncofed.orchestrator import analysis

            headers = [stored_header(t) for t in included]
            outcome = analysis.close_secure(spec, rnd.params_json, sums, headers)
            progress.after_analysis(
                session, effects, job, rnd, outcome, [t.site_id for t in included]
            )
        elif rnd.kind == "stats":
            progress.after_stats(session, effects, job, learning.pooled_stats(sums), active)
        elif rnd.kind == "train":
            shapes = {name[len(learning.MODEL):]: s.shape for name, s in self._layout(rnd).items()
                      if name.startswith(learning.MODEL)}  # fmt: skip
            averages = _averages(self._blobs, job, sums)
            progress.after_train(session, effects, job, rnd, shapes, averages, active)
        else:
            end(job, "completed", None)

    def _fail(self, effects: Effects, rnd: Round, reason: str) -> None:
        rnd.status, rnd.closed_at = "closed", utcnow()
        effects.drop_sums.add(rnd.id)
        effects.retire.update(t.result_sha for t in rnd.tasks if t.result_sha)
        left = statuses(t for t in rnd.tasks if t.status in (*LEFT, "expired", "rejected"))
        error = f"round {rnd.number} ({rnd.kind}), secure aggregation: {reason}"
        end(rnd.job, "failed", f"{error}. {left}" if left else error)

    # -- the running sum -----------------------------------------------------------------

    def _layout(self, rnd: Round) -> Layout:
        sites = len(_roster(rnd).adverts)
        return _round_layout(rnd.job.spec_json, rnd.kind, rnd.number, sites)

    def _sum(self, session: Session, rnd: Round) -> MaskedSum:
        """The round's sum of masked inputs, rebuilt from their blobs after a restart."""
        if rnd.id not in self._sums:
            total = MaskedSum(context(rnd), self._layout(rnd))
            for task in rnd.tasks:
                if task.result_sha:
                    total.add(self._blobs.path(task.result_sha))
            self._sums[rnd.id] = total
        return self._sums[rnd.id]


def check_secure(spec: JobSpec | AnalysisSpec, sites: list[Site]) -> None:
    """``BadRequest`` when a securely aggregated job cannot run with these sites: fewer than
    two, a site without a registered identity key, or no safe encoding of its numbers."""
    if len(sites) < 2:
        raise BadRequest("secure aggregation needs at least 2 sites")
    missing = [site.name for site in sites if site.identity_key is None]
    if missing:
        raise BadRequest(
            f"sites {missing} have no identity key registered (their edges register one when "
            "they next connect); secure aggregation needs every site's key"
        )
    try:
        if isinstance(spec, JobSpec):
            layouts.update_fraction_bits(spec, len(sites))
        else:
            layouts.round_layout(spec, "analysis", 0, len(sites))
    except ValueError as exc:  # EncodingError is a ValueError
        raise BadRequest(f"no safe secure encoding for this job: {exc}") from exc


def _check_own(spec: JobSpec | AnalysisSpec, own: OwnEstimate | None) -> None:
    """A site's own estimate in a masked input's header only where the job takes one, fitting
    it (``analysis.check_own``). BadAnswer otherwise."""
    if own is None:
        return
    if isinstance(spec, JobSpec):
        raise BadAnswer("clear.own: a training round takes no estimates of a site's own")
    from oncofed.orchestrator import analysis  # scipy, loaded by the first analysis only

    analysis.check_own(spec, own)


STALE_OWN = OwnEstimate(withheld="what it sent of its own fit is out of today's bounds")
"""A site's own estimate in a header stored before it was range-checked, and out of range."""


def stored_header(task: Task) -> MaskedHeader:
    """The header of a task's masked input, as stored when it arrived. One stored before today's
    bounds on a site's own estimate (issue 10) that no longer validates keeps the rest, its own
    estimate withheld (``STALE_OWN``): the round closes with the site in its sum."""
    text = task.result_json or ""
    try:
        return MaskedHeader.model_validate_json(text)
    except ValidationError:
        stored = json.loads(text)
        stored["clear"]["own"] = STALE_OWN.model_dump(mode="json")
        log.warning("site %s: its own estimate stored in round %d is out of bounds: withheld",
                    task.site.name, task.round.number)  # fmt: skip
        return MaskedHeader.model_validate_json(json.dumps(stored))


def _drop(task: Task, status: str, detail: str) -> None:
    """A site leaves a secure round in its current phase."""
    phase = task.round.phase
    task.status, task.finished_at = status, utcnow()
    task.detail = detail if phase == "keys" else f"{detail} (in the {phase} phase)"


def _next_roster(ctx: RoundContext, spec: JobSpec | AnalysisSpec, masked: list[Task]) -> str | None:
    """The job's next round's roster, from the adverts that came with the masked inputs: only
    when every site that sent one sent an advert, and they all verify (else None: that round
    opens at its keys phase)."""
    headers = [stored_header(t) for t in masked]
    adverts = [header.next for header in headers if header.next is not None]
    if len(adverts) != len(masked) or len(adverts) < 2:
        return None
    identities = {t.site.name: bytes.fromhex(t.site.identity_key or "") for t in masked}
    try:
        roster = build_roster(ctx.following(), adverts, identities, spec.privacy.threshold)
    except SecAggError as exc:
        log.warning("job %s: no roster for round %d ahead: %s", ctx.job_id, ctx.round + 1, exc)
        return None
    return roster.model_dump_json()


def _pipeline(session: Session, rnd: Round, nxt: Round, bundles: Mapping[str, ShareBundle]) -> None:
    """Open ``nxt`` at its masked phase when each of its sites is in the roster made ahead
    and sent its shares for it with ``rnd``'s unmasking shares; else it stays at keys."""
    if rnd.next_roster_json is None:
        return
    roster = _parse_roster(rnd.next_roster_json)
    sites = {task.site.name for task in nxt.tasks}
    if not sites == set(roster.sites) == set(bundles):
        log.info("job %s round %d opens at its keys phase: sites %s did not set it up ahead",
                 nxt.job_id, nxt.number, sorted(sites ^ set(bundles)))  # fmt: skip
        return
    nxt.roster_json, nxt.phase = rnd.next_roster_json, "masked"
    for task in nxt.tasks:
        bundle = bundles[task.site.name].model_dump_json()
        session.add(SecureMessage(task_id=task.id, phase="shares", body=bundle))
        task.status = "shares"


def _roster(rnd: Round) -> Roster:
    assert rnd.roster_json is not None  # set when the keys phase closed
    return _parse_roster(rnd.roster_json)


def _survivors(rnd: Round) -> Survivors:
    assert rnd.survivors_json is not None  # set when the unmask phase opened
    return _parse_survivors(rnd.survivors_json)


# A round's roster, survivor list and layout never change once set, and every post and poll
# of the round reads them: parsed (and derived) once. The models are frozen.
@lru_cache(maxsize=64)
def _parse_roster(roster_json: str) -> Roster:
    return Roster.model_validate_json(roster_json)


@lru_cache(maxsize=64)
def _parse_survivors(survivors_json: str) -> Survivors:
    return Survivors.model_validate_json(survivors_json)


@lru_cache(maxsize=64)
def _round_layout(spec_json: str, kind: str, number: int, sites: int) -> Layout:
    return layouts.round_layout(parse_spec(spec_json), kind, number, sites)


def _posts(session: Session, rnd: Round, phase: str) -> list[tuple[Task, str]]:
    """The round's tasks with what their sites posted in ``phase``, by site name."""
    rows = session.execute(
        select(Task, SecureMessage.body)
        .join(SecureMessage, SecureMessage.task_id == Task.id)
        .where(Task.round_id == rnd.id, SecureMessage.phase == phase)
        .options(joinedload(Task.site))  # sorted by site name: one query, not one per site
    ).all()
    return sorted(((task, body) for task, body in rows), key=lambda row: row[0].site.name)


def _key(rnd: Round, site: str) -> str:
    """The registered identity key (hex) of a site of the round."""
    for task in rnd.tasks:
        if task.site.name == site and task.site.identity_key is not None:
            return task.site.identity_key
    raise SecAggError(f"site {site!r} has no registered identity key")


def _averages(blobs: BlobStore, job: Job, sums: Mapping[str, np.ndarray]) -> Averages:
    """The mean of the sites' models, tensor by tensor: the current global model plus the
    sum of the weighted updates over the sum of the weights."""
    rows = float(sums["n_train"])
    if rows <= 0:
        raise SecAggError("the sites' updates weigh no training rows")
    assert job.model_sha is not None  # set at submission

    def averages(name: str) -> Iterator[tuple[int, np.ndarray]]:
        total = sums[learning.MODEL + name].reshape(-1)
        with TensorFile(blobs.path(job.model_sha or "")) as current:
            for offset in range(0, total.size, CHUNK):
                piece = total[offset : offset + CHUNK]
                model = current.read(name, offset, piece.size).astype(np.float64)
                yield offset, model + piece / rows

    return averages


def _threshold(included: Sequence[Task]) -> int:
    """The largest small-cell threshold the sites in a sum sent in the clear: the pooled
    numbers are released under it, as an analysis's are."""
    return max((stored_header(t).clear.threshold for t in included), default=1000)


def _pooled_view(
    spec: JobSpec | AnalysisSpec, kind: str, sums: Mapping[str, np.ndarray], threshold: int
) -> str:
    """What the round's public view shows of the unmasked sums (never a model): the pooled
    held-out figures released under the sites' largest small-cell ``threshold``."""
    if isinstance(spec, AnalysisSpec):
        return PooledRound(sites=int(sums[SITES])).model_dump_json()
    if kind == "stats":
        return PooledRound(sites=int(sums[SITES]), n_train=int(sums["n"])).model_dump_json()
    shown: dict[str, object] = {}
    if kind == "train":
        rows = int(sums["n_train"])
        private = spec.privacy.differential_privacy is not None  # its sites send no loss
        loss = float(sums["loss"]) / rows if rows and not private else None
        shown = {"n_train": rows, "train_loss": loss}
    if "n_eval" in sums:  # not in a training round the job does not score
        evaluation = learning.pooled_evaluation(spec, sums, threshold)
        shown |= {
            "n_eval": evaluation.n_eval,
            "metrics": evaluation.metrics,
            "metric_rows": evaluation.rows,
            "notes": evaluation.notes,
        }
    return PooledRound.model_validate({"sites": int(sums[SITES]), **shown}).model_dump_json()
