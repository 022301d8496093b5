"""The job and round state machine: publish tasks, accept results, aggregate, advance.

A training job runs a ``stats`` round (pooled feature scaling), then ``train`` rounds 1..R,
then one ``evaluate`` round of the final model. An analysis runs ``analysis`` rounds: one, or
one per Newton iteration (``orchestrator.analysis``). Every state change is one database
transaction taken under the job's lock. Accepted updates are folded into one running weighted
sum per round; their files stay in the blob store until the round closes, so after a restart
the sum is rebuilt from exactly the updates the database recorded as accepted: never lost,
never twice.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import uuid
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from sqlalchemy import Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, joinedload, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from oncofed.learning.aggregate import HeldStart, WeightedMean
from oncofed.learning.data import holdout_size, pooled_stats
from oncofed.learning.registry import initial_weights, parameter_count, parameter_shapes
from oncofed.learning.steps import Tensors
from oncofed.learning.strategies import build_strategy
from oncofed.orchestrator import identity, journal, updates
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.combine import Combiner, Pending
from oncofed.orchestrator.db import Job, Round, Site, Task, UpdateBody, utcnow, written
from oncofed.orchestrator.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    OrchestratorError,
)
from oncofed.orchestrator.limits import (
    check_evaluation,
    check_patients,
    check_stats,
    describe,
    patient_limit,
    read_patient_limits,
    scored,
)
from oncofed.orchestrator.notifier import Notifier
from oncofed.orchestrator.progress import (
    LEFT,
    WITHDRAWN,
    Effects,
    Progress,
    check_not_withdrawn,
    end,
    parse_spec,
    pooled,
    scaling,
    training,
)
from oncofed.orchestrator.secure import WAITING, SecureRounds, check_secure
from oncofed.orchestrator.settings import ANSWER_HOLD_SECONDS
from oncofed.privacy.secagg import public_bytes
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisParams, AnalysisResult, AnalysisSpec
from oncofed.wire.errors import BadAnswer, BadTensorPayload, WireError
from oncofed.wire.messages import (
    INLINE_MODEL_BYTES,
    EvaluateResult,
    JobCreated,
    ResultAck,
    StatsResult,
    TaskAssignment,
    TrainResult,
)
from oncofed.wire.secagg import KeyAdvert, ShareBundle, UnmaskShares
from oncofed.wire.spec import JobSpec
from oncofed.wire.stream import MAX_HEADER, TensorFile, check_file

log = logging.getLogger("oncofed.orchestrator")
T = TypeVar("T")
Work = Callable[[Session, Effects], T]
"""A change of state: run in a transaction, with what to do once it has committed."""


class Handout(NamedTuple):
    """The sites a transaction published new tasks for, and the tasks it handed out with them
    (to the sites waiting for one, and those it recorded the answers of)."""

    notified: frozenset[int]
    handed: Mapping[int, TaskAssignment]


Recorded = tuple[ResultAck, Handout]
"""An answer's acknowledgement, and what its transaction published."""
_NOTHING = Handout(frozenset(), {})


def _handout(effects: Effects) -> Handout:
    return Handout(frozenset(effects.notify), effects.handed)


class Answer(NamedTuple):
    """A site's answer to a task, to record."""

    site_id: int
    task_id: str
    work: Work[ResultAck]


class Submission(NamedTuple):
    """A site's answer, ready to be recorded with the others to its job (``record``)."""

    job_id: str
    answer: Answer

    @property
    def site_id(self) -> int:
        return self.answer.site_id


OPEN_TASK = ("pending", "delivered")
UNANSWERED = tuple(dict.fromkeys(s for statuses in WAITING.values() for s in statuses))
"""A task's statuses while its site still has to answer (plainly, or in a secure phase)."""
BATCH_THREADS = 16
"""Jobs whose answers are recorded at the same time (and task deliveries) at most."""
MAX_PARAMETERS = 200_000_000


def _seen(site: Site, within: timedelta | None) -> bool:
    """Whether ``site`` was seen within ``within`` (any site, when no window is given)."""
    return within is None or identity.recent(site.last_seen_at, utcnow(), within)


def _params(params_json: str | None, site: str) -> AnalysisParams | None:
    """What a Newton round sends ``site`` (None for other rounds). The analytics modules
    (scipy) are imported on first use: a training-only orchestrator never loads them."""
    if not params_json:
        return None
    from oncofed.orchestrator import analysis

    return analysis.params_for(analysis.NewtonState.from_json(params_json), site)


_TASK_IN_ROUND = [joinedload(Task.round).joinedload(Round.job)]
"""What answering a task reads, loaded with the task in one query."""


_WAITING = or_(
    and_(Round.phase.is_(None), Task.status.in_(OPEN_TASK)),
    *(and_(Round.phase == phase, Task.status.in_(statuses)) for phase, statuses in WAITING.items()),
)
"""A task its site has something to do for: an open plain task, or the phase of a secure round
the site has not posted in yet."""

_DELIVERABLE = (
    select(Task, Round, Job, Site.name)
    .join(Round, Task.round_id == Round.id)
    .join(Job, Round.job_id == Job.id)
    .join(Site, Task.site_id == Site.id)
    .where(
        Task.site_id.in_(bindparam("sites", expanding=True)),
        Task.status.in_(UNANSWERED),  # by ``ix_task_site_id_status``: none of the answered
        Round.status == "open",
        _WAITING,
    )
    .order_by(Round.opened_at)
)
"""The tasks waiting for the ``sites``, oldest round first (built once: it is the hot path).
Its cost does not grow with the tasks a site answered before (``test_hand_out_at_scale``)."""

# The other statements of answering and handing out, built once too: building one (its
# columns compared, its lists coerced) took 6% of the orchestrator's CPU at 4 sites.
_IN_BATCH = Task.id.in_(bindparam("ids", expanding=True))
_BATCH = select(Task).options(*_TASK_IN_ROUND).where(_IN_BATCH)
_BATCH_ROUNDS = (
    select(Task)
    .options(*_TASK_IN_ROUND)
    .where(Task.round_id.in_(select(Task.round_id).where(_IN_BATCH)))
)
"""Every task of the rounds of the tasks ``ids``: a batch that likely closes its round."""
_TASKS = cast(Table, Task.__table__)
_HAND_OUT = (
    update(_TASKS)
    .where(_TASKS.c.id.in_(bindparam("ids", expanding=True)), _TASKS.c.status.in_(OPEN_TASK))
    .values(status="delivered", delivered_at=bindparam("now"))
    .returning(_TASKS.c.id)
)
"""Marks the tasks handed out, on the connection: the tasks read with them keep the statuses
they were read with (``_hand_out`` reads those), and the session has nothing to flush first."""
_KEEP_BODY = insert(cast(Table, UpdateBody.__table__))
_ANSWER_COLUMNS = ("status", "detail", "result_sha", "result_json", "bytes_received", "finished_at")
_FINISHED = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("task_id"))
    .values({name: bindparam(name) for name in _ANSWER_COLUMNS})
)
"""The columns an answer sets on its task, for a batch's answers in one statement (``_finish``)."""
_STILL_OPEN = select(func.count()).where(
    Task.round_id == bindparam("round_id"), Task.status.in_(OPEN_TASK)
)
_ROUND_SITES = (
    select(Site).join(Task, Task.site_id == Site.id).where(Task.round_id == bindparam("round_id"))
)


class Coordinator:
    """Owns every change of job, round and task state."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        notifier: Notifier | None = None,
        key: Ed25519PrivateKey | None = None,
        hold_seconds: float = ANSWER_HOLD_SECONDS,
    ) -> None:
        """``key`` signs secure rounds' survivor lists (the orchestrator's identity key);
        ``hold_seconds``: how long patient answers may wait for others (``_hold``)."""
        self._sessions = sessions
        self.hold_seconds = hold_seconds
        self.blobs = blobs
        self._notifier = notifier or Notifier()
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        # Batches for requests waiting on the event loop are served by threads of their own:
        # the loop's default executor runs the tick, which must not queue behind them.
        self._batches = ThreadPoolExecutor(BATCH_THREADS, thread_name_prefix="oncofed-batch")
        self._answers: Combiner[Answer, Recorded] = Combiner(
            self._record, self._batches, hold=self._hold
        )
        self._left: dict[str, int] = {}  # job id -> its open round's unanswered tasks (Effects)
        self._deliveries: Combiner[int, TaskAssignment | None] = Combiner(
            self._deliver, self._batches
        )
        self._sums: dict[int, WeightedMean] = {}  # round id -> running sum
        self._starts: dict[int, HeldStart | None] = {}  # round id -> its global model, held
        self._sum_jobs: dict[int, str] = {}  # round id -> job id, to drop sums without the db
        # rounds opened here: until their sums are dropped (``_drop_sum``), every update
        # they accepted went into the sum
        self._fresh: set[int] = set()
        self._readable: set[tuple[int, str]] = set()
        self._owners: dict[str, tuple[int, str]] = {}  # task id -> (site id, job id)
        self._specs: dict[str, JobSpec | AnalysisSpec] = {}  # job id -> spec (immutable)
        self._reported: dict[tuple[str, int], int] = {}  # (job, site) -> stats round's n
        self._progress = Progress(blobs)
        self._secure = SecureRounds(blobs, self._progress, key)
        self.public_key = public_bytes(key).hex() if key is not None else None
        """The orchestrator's identity key (hex), which sites pin."""

    def close(self) -> None:
        """Let the threads that served batches go (once no request is waiting)."""
        self._batches.shutdown(wait=False)

    # -- plumbing ----------------------------------------------------------------------

    def _lock(self, job_id: Hashable) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(str(job_id), threading.RLock())

    def _transact(
        self,
        job_id: str | None,
        work: Callable[[Session, Effects], T],
        effects: Effects | None = None,
    ) -> T:
        """Run ``work`` in one transaction (under the job's lock), then apply its effects."""
        effects = effects if effects is not None else Effects()
        lock = self._lock(job_id) if job_id else threading.RLock()
        with lock:
            try:
                with self._sessions.begin() as session:
                    result = work(session, effects)
                    if effects.bodies:  # the batch's held updates, in one statement
                        session.connection().execute(_KEEP_BODY, effects.bodies)
                    if effects.finished:  # before anything reads the tasks' statuses
                        session.connection().execute(_FINISHED, effects.finished)
                    for rnd in effects.answered.values():
                        self._maybe_close(session, effects, rnd)
                    journal.closed(session, effects.drop_sums)
                    self._hand_out_published(session, effects)
            except BaseException:
                if job_id:  # a running sum may hold an update the database never recorded
                    self._drop_job_sums(job_id)
                    self._secure.forget_job(job_id)
                    self._left.pop(job_id, None)
                raise
            if len(self._left) > 10_000:  # a hint, not a record (a job ended elsewhere): bound it
                self._left.clear()
            for job, left in effects.left.items():
                if left is None:
                    self._left.pop(job, None)
                else:
                    self._left[job] = left
            for round_id in effects.drop_sums:
                self._drop_sum(round_id)
                self._secure.forget(round_id)
            for round_id, opened_in in effects.opened.items():
                self._fresh.add(round_id)
                self._sum_jobs[round_id] = opened_in
        self._granted(effects.handed)
        for sha in effects.retire:
            self.blobs.retire(sha)
        if effects.notify:
            self._notifier.notify(effects.notify, effects.handed)
        return result

    def _hand_out_published(self, session: Session, effects: Effects) -> None:
        """Hand the tasks a change published out, in the change's transaction, to the sites
        that wait for one (their polls, and the acknowledgements of the answers it records): a
        round's close and the next round's work need no transaction between them. A change
        that published nothing (most answers) asks the notifier nothing."""
        if not effects.notify:
            return
        ready = effects.notify & (effects.answering | self._notifier.waiting())
        if ready:
            found = self._hand_out(session, ready, utcnow())
            effects.handed = {s: t for s, t in found.items() if isinstance(t, TaskAssignment)}

    def record(self, submission: Submission) -> ResultAck:
        """Record a site's answer with the other answers to its job that came meanwhile (a
        group commit, ``combine``). When that opened a round the site is part of, hand the
        site its next task with the acknowledgement, so it need not wait for a poll."""
        ack, handout = self._answers(submission.job_id, submission.answer)
        site_id = submission.site_id
        if site_id in handout.notified:
            task = handout.handed.get(site_id) or self.next_task(site_id)
            ack = ack.model_copy(update={"next_task": task})
        return ack

    async def record_soon(self, submission: Submission, patient: bool = False) -> ResultAck:
        """``record`` for a request handler: it waits on the event loop, in no thread. A
        ``patient`` answer (its site waits for its next task anyway) may wait a little for
        others to be recorded with it (``_hold``)."""
        ack, handout = await self._answers.submit(submission.job_id, submission.answer, patient)
        site_id = submission.site_id
        if site_id in handout.notified:
            task = handout.handed.get(site_id) or await self.deliver(site_id)
            ack = ack.model_copy(update={"next_task": task})
        return ack

    def _hold(self, job_id: Hashable, queued: Sequence[Answer]) -> float:
        """How long patient answers to a job may wait for others (``combine``):
        ``hold_seconds`` while its open round awaits more answers than are queued (all of its
        tasks as it opened, then as its last batch left it); none for its last."""
        left = self._left.get(str(job_id))
        return self.hold_seconds if left is not None and len(queued) < left else 0.0

    def _alone(self, site_id: int, job_id: str, work: Work[ResultAck]) -> ResultAck:
        """``record`` an answer in a transaction of its own: a decline and a secure round's
        steps (rare, and their checks read what a batch has not written yet)."""
        effects = Effects(answering={site_id})
        ack = self._transact(job_id, work, effects)
        if site_id in effects.notify:
            task = effects.handed.get(site_id) or self.next_task(site_id)
            ack = ack.model_copy(update={"next_task": task})
        return ack

    def _record(self, job_id: Hashable, batch: Sequence[Pending[Answer, Recorded]]) -> None:
        """Record a batch of answers to one job in one transaction. An answer refused with an
        ``OrchestratorError`` (raised before it changes anything) gets that error and the others
        go on; any other error rolls the batch back, and each answer is then recorded alone, so
        an error fails only its own caller."""
        effects = Effects(answering={item.request.site_id for item in batch})

        def each(session: Session, effects: Effects) -> None:
            ids = [item.request.task_id for item in batch]  # read together; found by each work
            # held while the batch runs: the session keeps what no one refers to only weakly
            held = self._batch_tasks(session, str(job_id), ids)
            if held:  # and what their counts are checked against
                sites, job = {task.site_id for task in held}, held[0].round.job
                read_patient_limits(session, sites, self._spec(job).dataset)
                if any(task.round.kind in ("train", "evaluate") for task in held):
                    self._prefetch_reported(session, job.id, sites)
            with session.no_autoflush:  # written together when the rounds are checked
                for item in batch:
                    try:
                        item.result = (item.request.work(session, effects), _NOTHING)
                    except OrchestratorError as exc:
                        item.error = exc

        try:
            self._transact(str(job_id), each, effects)
        except Exception:
            if len(batch) == 1:
                raise
            for item in batch:
                alone = Effects(answering={item.request.site_id})
                try:
                    ack = self._transact(str(job_id), item.request.work, alone)
                    item.result, item.error = (ack, _handout(alone)), None
                except Exception as exc:
                    item.error = exc
            return
        handout = _handout(effects)
        for item in batch:
            if item.result is not None:
                item.result = (item.result[0], handout)

    def _batch_tasks(self, session: Session, job_id: str, ids: list[str]) -> list[Task]:
        """A batch's tasks, with their rounds and job. When the batch likely holds its round's
        last answers (the hint ``_left``), every task of the round comes in the same query and
        is the round's ``tasks`` (its close reads them), instead of a query of their own."""
        left = self._left.get(job_id)
        if left is None or left > len(ids):
            return list(session.scalars(_BATCH, {"ids": ids}))
        read = list(session.scalars(_BATCH_ROUNDS, {"ids": ids}))
        rounds: dict[Round, list[Task]] = {}
        for task in read:
            rounds.setdefault(task.round, []).append(task)
        for rnd, tasks in rounds.items():
            set_committed_value(rnd, "tasks", sorted(tasks, key=lambda task: task.site_id))
        wanted = set(ids)
        return [task for task in read if task.id in wanted]

    def _drop_job_sums(self, job_id: str) -> None:
        """Forget a job's running sums (rebuilt from the database on next use). Touches no
        database: it runs when the database may be what failed."""
        for round_id in [r for r, job in self._sum_jobs.items() if job == job_id]:
            self._drop_sum(round_id)

    def _drop_sum(self, round_id: int) -> None:
        self._sums.pop(round_id, None)
        self._fresh.discard(round_id)
        self._starts.pop(round_id, None)
        self._sum_jobs.pop(round_id, None)

    # -- jobs --------------------------------------------------------------------------

    def submit(
        self,
        spec: JobSpec | AnalysisSpec,
        owner_id: int,
        project_id: int | None = None,
        approved: Collection[str] | None = None,
        seen_within: timedelta | None = None,
    ) -> JobCreated:
        """Store a job (a training job with its initial model) and its first round; publish
        the round's tasks. A job of a project goes only to ``approved``, the sites that
        approved it (the API always gives a project; tests and benchmarks may not). Unless
        its spec lists its sites, it goes only to those seen within ``seen_within`` (when
        given): an offline site never holds a job; a listed one that was not seen is named in
        the answer's ``unseen``."""
        model_sha = None if isinstance(spec, AnalysisSpec) else self._initial_model(spec)

        def work(session: Session, effects: Effects) -> JobCreated:
            sites = self._resolve_sites(session, spec, approved, seen_within)
            names = [s.name for s in sites]
            if spec.privacy.secure_aggregation:
                check_secure(spec, sites)
            job = Job(
                id=uuid.uuid4().hex,
                name=spec.name,
                owner_id=owner_id,
                project_id=project_id,
                spec_json=spec.model_dump_json(),
                sites_json=json.dumps(names),
                model_sha=model_sha,
            )
            session.add(job)
            session.flush()
            journal.submitted(session, job, spec, names)
            site_ids = [s.id for s in sites]
            if isinstance(spec, AnalysisSpec):
                from oncofed.orchestrator import analysis

                state = analysis.start(spec, names)
                params = state.to_json() if state else None
                job.state_json = params
                self._progress.open_round(
                    session, effects, job, 0, "analysis", None, site_ids, params
                )
            else:
                self._progress.open_round(session, effects, job, 0, "stats", None, site_ids)
            window = seen_within.total_seconds() if seen_within is not None else None
            unseen = [s.name for s in sites if not _seen(s, seen_within)]
            return JobCreated(
                id=job.id, name=job.name, sites=names, unseen=unseen, seen_window_s=window
            )

        created = self._transact(None, work)
        log.info("job %s (%s) submitted for sites %s", created.id, spec.name, created.sites)
        return created

    def _initial_model(self, spec: JobSpec) -> str:
        n_params = parameter_count(spec.model, spec.n_inputs)
        if n_params > MAX_PARAMETERS:
            raise BadRequest(f"model has {n_params:,} parameters; the limit is {MAX_PARAMETERS:,}")
        with self.blobs.write_tensors(parameter_shapes(spec.model, spec.n_inputs)) as model:
            for name, array in initial_weights(spec.model, spec.n_inputs, spec.seed).items():
                model.write(name, 0, array)
        return model.sha256

    @staticmethod
    def _resolve_sites(
        session: Session,
        spec: JobSpec | AnalysisSpec,
        approved: Collection[str] | None,
        seen_within: timedelta | None,
    ) -> list[Site]:
        enrolled = {
            s.name: s
            for s in session.scalars(select(Site).where(Site.credential_hash.is_not(None)))
            if approved is None or s.name in approved
        }
        among = "enrolled sites" if approved is None else f"sites that approved {spec.project}"
        if spec.sites is not None:
            names = spec.sites
            unknown = [n for n in names if n not in enrolled]
            if unknown:
                raise BadRequest(f"sites: {unknown} are not {among}")
            disabled = [n for n in names if enrolled[n].disabled_at is not None]
            if disabled:
                raise BadRequest(f"sites: {disabled} are disabled by the operator")
        else:  # the enabled ones seen lately: an offline site holds no job
            names = [
                name
                for name, site in sorted(enrolled.items())
                if site.disabled_at is None and _seen(site, seen_within)
            ]
            if seen_within is not None:
                among = f"{among} seen in the last {seen_within.total_seconds():g} s"
        if len(names) < spec.min_sites:
            raise BadRequest(f"min_sites is {spec.min_sites} but only {len(names)} {among}")
        return [enrolled[n] for n in names]

    # -- edge side ---------------------------------------------------------------------

    def next_task(self, site_id: int) -> TaskAssignment | None:
        """The site's oldest open task (again, if it was delivered and never answered), or the
        next phase of a secure round it is in; with those of the sites asking meanwhile.

        One short transaction and no job lock: the conditional UPDATE loses cleanly to a round
        that closed in between (no row changes, nothing is delivered).
        """
        return self._deliveries("tasks", site_id)

    async def deliver(self, site_id: int) -> TaskAssignment | None:
        """``next_task`` for a request handler: it waits on the event loop, in no thread."""
        return await self._deliveries.submit("tasks", site_id)

    def _deliver(self, _: Hashable, batch: Sequence[Pending[int, TaskAssignment | None]]) -> None:
        """``next_task`` for every site in ``batch``, in one transaction."""
        generations = self._notifier.generations({item.request for item in batch})
        with self._sessions.begin() as session:
            tasks = self._hand_out(session, generations, utcnow())
        self._granted(tasks)
        self._notifier.found_nothing(
            {site: generation for site, generation in generations.items() if site not in tasks}
        )
        for item in batch:
            found = tasks.get(item.request)
            if isinstance(found, Exception):
                item.error = found
            else:
                item.result = found

    def _hand_out(
        self, session: Session, site_ids: Collection[int], now: datetime
    ) -> dict[int, TaskAssignment | Exception]:
        """Each site's oldest task waiting, marked delivered (a task delivered and never
        answered comes again); a site whose task cannot be made has the error instead."""
        rows = session.execute(_DELIVERABLE, {"sites": list(site_ids)}).all()
        oldest: dict[int, tuple[Task, Round, Job, str]] = {}
        for task, rnd, job, site in rows:
            oldest.setdefault(task.site_id, (task, rnd, job, site))
        opening = [row[0].id for row in oldest.values() if row[0].status in OPEN_TASK]
        connection = session.connection()
        delivered = set(
            connection.scalars(_HAND_OUT, {"ids": opening, "now": now}) if opening else ()
        )
        tasks: dict[int, TaskAssignment | Exception] = {}
        for site_id, (task, rnd, job, site) in oldest.items():
            if task.status in OPEN_TASK and task.id not in delivered:
                continue  # its round closed in between
            if task.id not in delivered and task.delivered_at is None:
                task.delivered_at = now  # a secure round that opened with its keys in
            try:
                tasks[site_id] = self._assignment(session, task, rnd, job, site)
            except Exception as exc:  # that site's alone (its job's state): the rest go
                log.exception("job %s: task %s could not be handed out", job.id, task.id)
                tasks[site_id] = exc
        return tasks

    def _granted(self, tasks: Mapping[int, TaskAssignment | Exception]) -> None:
        """Once the tasks are committed as delivered, their sites may read the models they
        name."""
        for site_id, task in tasks.items():
            if isinstance(task, TaskAssignment) and task.model_sha256 is not None:
                self._may_read(site_id, task.model_sha256)

    def _assignment(
        self, session: Session, task: Task, rnd: Round, job: Job, site: str
    ) -> TaskAssignment:
        spec = self._spec(job)
        self._remember_owner(task.id, task.site_id, job.id)
        return TaskAssignment(
            task_id=task.id,
            job_id=job.id,
            round=rnd.number,
            kind=rnd.kind,
            spec=spec,
            model_sha256=rnd.input_sha,
            model=self._inline(rnd.input_sha),
            standardization=scaling(job.scaling_json),
            pooled=pooled(job.pooled_json),
            proximal_mu=(
                build_strategy(spec.strategy).proximal_mu if isinstance(spec, JobSpec) else 0.0
            ),
            params=_params(rnd.params_json, site),
            secure=self._secure.step(session, rnd, site) if rnd.phase else None,
        )

    def _inline(self, sha: str | None) -> bytes | None:
        """A global model small enough to go with its task (``INLINE_MODEL_BYTES``): the
        site need not ask for it (None: it asks, and learns then if the model is gone)."""
        try:
            data = self.blobs.small(sha) if sha is not None else None
        except NotFound:
            return None
        return data if data is not None and len(data) <= INLINE_MODEL_BYTES else None

    def sent_blob(self, site_id: int, sha: str) -> Path | None:
        """A global model the site is known to have been sent (memory only; None: ask
        ``blob_for_site``)."""
        return self.blobs.path(sha) if (site_id, sha) in self._readable else None

    def blob_for_site(self, site_id: int, sha: str) -> Path:
        """A global model the site was sent; nothing else is readable by a site."""
        if (path := self.sent_blob(site_id, sha)) is not None:
            return path
        with self._sessions() as session:
            allowed = session.scalar(
                select(Task.id)
                .join(Round, Task.round_id == Round.id)
                .where(Task.site_id == site_id, Round.input_sha == sha)
                .limit(1)
            )
        if allowed is None:
            raise NotFound(f"no blob {sha} for this site")
        self._may_read(site_id, sha)
        return self.blobs.path(sha)

    def _may_read(self, site_id: int, sha: str) -> None:
        """Once sent to a site, a model is always readable by it."""
        if len(self._readable) > 100_000:  # a cache, not a record: bound it
            self._readable.clear()
        self._readable.add((site_id, sha))

    def _job_of(self, site_id: int, task_id: str) -> str:
        """The job of a task of this site (a task's site and job never change: cached)."""
        owner = self._owners.get(task_id)
        if owner is None:
            with self._sessions() as session:
                row = session.execute(
                    select(Task.site_id, Round.job_id)
                    .join(Round, Task.round_id == Round.id)
                    .where(Task.id == task_id)
                ).first()
            if row is None:
                raise NotFound(f"no task {task_id}")
            owner = self._remember_owner(task_id, row.site_id, str(row.job_id))
        if owner[0] != site_id:
            raise Forbidden(f"task {task_id} belongs to another site")
        return owner[1]

    def _spec(self, job: Job) -> JobSpec | AnalysisSpec:
        """The job's spec, parsed once (a spec never changes)."""
        if (spec := self._specs.get(job.id)) is None:
            spec = self._specs[job.id] = parse_spec(job.spec_json)
        return spec

    def _remember_owner(self, task_id: str, site_id: int, job_id: str) -> tuple[int, str]:
        if len(self._owners) > 100_000:  # a cache, not a record: bound it
            self._owners.clear()
        self._owners[task_id] = (site_id, job_id)
        return site_id, job_id

    def _open_task(
        self, session: Session, task_id: str, kind: str | None, sha: str | None
    ) -> Task | ResultAck:
        """The task if it can take a result of ``kind`` now, or the answer to give instead."""
        task = session.get(Task, task_id, options=_TASK_IN_ROUND)
        assert task is not None  # _job_of found it
        check_not_withdrawn(task)
        if task.status == "accepted":
            if sha is not None and task.result_sha == sha:
                return ResultAck(task_id=task_id, status="duplicate", detail="already accepted")
            raise Conflict(f"task {task_id} already has a different accepted result")
        if task.status not in OPEN_TASK or task.round.status != "open":
            raise Conflict(f"task {task_id} is closed ({task.status}); its round has moved on")
        if kind is not None and task.round.kind != kind:
            raise BadRequest(f"task {task_id} is a {task.round.kind} task, not {kind}")
        if kind is not None and task.round.phase is not None:
            raise BadRequest(f"task {task_id} is securely aggregated: it takes no plain result")
        return task

    def update_limit(self, site_id: int, task_id: str) -> int:
        """Most bytes an update for this task of this site may have; checked before a body is
        read, so nobody can fill the disk with uploads for tasks that are not theirs."""
        job_id = self._job_of(site_id, task_id)
        if job_id not in self._specs:
            with self._sessions() as session:
                job = session.get(Job, job_id)
                assert job is not None  # the task refers to it
                self._spec(job)
        spec = training(self._specs[job_id])
        return 8 + MAX_HEADER + 4 * parameter_count(spec.model, spec.n_inputs)

    def knows(self, task_id: str) -> bool:
        """Whether a task's job and spec are known from memory (its answer is prepared, and
        its limit found, without reading the database)."""
        return (owner := self._owners.get(task_id)) is not None and owner[1] in self._specs

    def accept_update(self, site_id: int, task_id: str, body: Path | bytes, sha: str) -> ResultAck:
        """Validate a safetensors update, fold it into the round's sum, maybe close."""
        return self.record(self.update_answer(site_id, task_id, body, sha))

    def update_answer(self, site_id: int, task_id: str, body: Path | bytes, sha: str) -> Submission:
        """``accept_update``'s answer, to ``record``: ``body`` is the update's bytes, kept in
        the transaction that accepts it (``UpdateBody``), or a spooled file, which must stay
        until it is recorded and is then adopted into the blob store."""
        job_id = self._job_of(site_id, task_id)

        def work(session: Session, effects: Effects) -> ResultAck:
            task = self._open_task(session, task_id, "train", sha)
            if isinstance(task, ResultAck):
                return task
            # Recorded again after its batch was rolled back, it may be in the store already.
            source = body if isinstance(body, bytes) or body.exists() else self.blobs.path(sha)
            spec, shapes = updates.layout(task.round)
            with contextlib.ExitStack() as opened:  # each file opened once for all of it
                try:
                    update = opened.enter_context(TensorFile(source))
                    start = opened.enter_context(self._start(task.round))
                    meta = check_file(update, shapes, TrainResult)  # chunk by chunk
                    if meta.task_id != task_id:
                        raise BadTensorPayload(f"payload is for task {meta.task_id}, not {task_id}")
                    evaluation = scored(spec, task.round.number, meta.evaluation)
                    n_eval = evaluation.n_eval if evaluation is not None else None
                    self._check_counts(session, task, spec, n_eval, meta.n_train)
                    if evaluation is not None:
                        check_evaluation(spec, evaluation)
                    scale = updates.clip_factor(task.round, update, start)  # or refused
                except WireError as exc:
                    self._finish(task, "rejected", effects=effects, detail=str(exc))
                    log.warning(
                        "rejected update for task %s from site %s: %s", task_id, site_id, exc
                    )
                    effects.answered[task.round_id] = task.round
                    return ResultAck(task_id=task_id, status="rejected", detail=str(exc))
                if isinstance(source, bytes):
                    size = len(source)
                    effects.bodies.append({"task_id": task_id, "data": source})
                else:
                    size = source.stat().st_size
                    if source == body:  # its open handle reads on after the move
                        self.blobs.adopt(source, sha)
                if not updates.robust(task.round):  # a robust strategy reads them all at close
                    updates.fold(self._sum(task.round), update, start, scale, meta.n_train)
            result = meta.model_dump_json()
            self._finish(task, "accepted", effects=effects, sha=sha, result=result, size=size)
            effects.answered[task.round_id] = task.round
            return ResultAck(task_id=task_id, status="accepted")

        return Submission(job_id, Answer(site_id, task_id, work))

    def accept_result(
        self,
        site_id: int,
        task_id: str,
        result: StatsResult | EvaluateResult | AnalysisResult | bytes,
    ) -> ResultAck:
        """A JSON result: feature statistics, an evaluation of the final model, or a site's
        part of an analysis; or its body, read as the result its task takes. An answer that
        does not validate, or does not fit the task and the site (``limits``), is refused and
        recorded as the site's failure of the task; it never reaches the round's numbers."""
        return self.record(self.result_answer(site_id, task_id, result))

    def result_answer(
        self,
        site_id: int,
        task_id: str,
        result: StatsResult | EvaluateResult | AnalysisResult | bytes,
    ) -> Submission:
        """``accept_result``'s answer, to ``record``."""
        job_id = self._job_of(site_id, task_id)
        readers: dict[str, type[StatsResult | EvaluateResult | AnalysisResult]] = {
            "stats": StatsResult,
            "evaluate": EvaluateResult,
            "analysis": AnalysisResult,
        }
        kinds = {model: kind for kind, model in readers.items()}

        def refuse(session: Session, effects: Effects, task: Task, detail: str) -> ResultAck:
            self._finish(task, "rejected", effects=effects, detail=detail)
            log.warning("rejected result for task %s from site %s: %s", task_id, site_id, detail)
            effects.answered[task.round_id] = task.round
            return ResultAck(task_id=task_id, status="rejected", detail=detail)

        def work(session: Session, effects: Effects) -> ResultAck:
            parsed = result
            if isinstance(result, bytes):
                found = session.get(Task, task_id, options=_TASK_IN_ROUND)
                assert found is not None  # _job_of found it
                model = readers.get(found.round.kind)
                if model is None:
                    raise BadRequest(f"task {task_id} is a {found.round.kind} task: post an update")
                try:
                    parsed = model.model_validate_json(result)
                except ValidationError as exc:
                    task = self._open_task(session, task_id, found.round.kind, None)
                    assert isinstance(task, Task)  # no digest: never a duplicate
                    return refuse(session, effects, task, f"invalid result: {describe(exc)}")
            assert not isinstance(parsed, bytes)
            body = parsed.model_dump_json()
            digest = tensors.sha256(body.encode())
            task = self._open_task(session, task_id, kinds[type(parsed)], digest)
            if isinstance(task, ResultAck):
                return task
            any_spec = self._spec(task.round.job)
            limit = patient_limit(session, task.site_id, any_spec.dataset)
            try:
                if isinstance(parsed, AnalysisResult):
                    assert isinstance(any_spec, AnalysisSpec)  # an analysis round's task
                    from oncofed.orchestrator import analysis

                    analysis.check_part(any_spec, parsed, limit)
                elif isinstance(parsed, StatsResult):
                    check_stats(parsed, len(training(any_spec).numeric_names), limit)
                else:
                    job = training(any_spec)
                    self._check_counts(session, task, job, parsed.evaluation.n_eval)
                    check_evaluation(job, parsed.evaluation)
            except WireError as exc:
                return refuse(session, effects, task, str(exc))
            self._finish(task, "accepted", effects=effects, sha=digest, result=body)
            effects.answered[task.round_id] = task.round
            return ResultAck(task_id=task_id, status="accepted")

        return Submission(job_id, Answer(site_id, task_id, work))

    def decline(
        self,
        site_id: int,
        task_id: str,
        reason: str,
        *,
        failed: bool = False,
        withdrawn: bool = False,
    ) -> ResultAck:
        """The site will not take part (its policy, its data), or ``failed`` (an error there);
        either way it is left out of later rounds. ``withdrawn``: the operator disabled it, so
        it leaves a secure round even in a phase it has posted in."""
        status = "failed" if failed or withdrawn else "declined"
        job_id = self._job_of(site_id, task_id)

        def work(session: Session, effects: Effects) -> ResultAck:
            found = session.get(Task, task_id, options=_TASK_IN_ROUND)
            assert found is not None  # _job_of found it
            if found.round.phase is not None and withdrawn:
                self._secure.withdraw(session, effects, found, reason)
                return ResultAck(task_id=task_id, status="declined", detail=reason)
            if found.round.phase is not None:
                self._secure.decline(session, effects, found, reason, status)
                return ResultAck(task_id=task_id, status="declined", detail=reason)
            task = self._open_task(session, task_id, None, None)
            if isinstance(task, ResultAck):
                return task
            self._finish(task, status, detail=reason)
            log.info("site %s %s task %s: %s", site_id, status, task_id, reason)
            effects.answered[task.round_id] = task.round
            return ResultAck(task_id=task_id, status="declined", detail=reason)

        return self._alone(site_id, job_id, work)

    def cancel(self, job_id: str, by: str) -> None:
        """Cancel a running job for ``by`` (``researcher:rita``): its open rounds close, their
        unanswered tasks are withdrawn (a site asking gets none; one posting an answer is told
        why), the updates they hold are let go (``BlobStore.retire``), and the job ends
        ``cancelled``. ``Conflict`` when it has ended already."""

        def work(session: Session, effects: Effects) -> None:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            if job.status != "running":
                raise Conflict(
                    f"job {job_id} has ended ({job.status}): only a running job is cancelled"
                )
            why = f"job {job_id} was cancelled by {by}"
            for rnd in job.rounds:
                if rnd.status != "open":
                    continue
                effects.retire.update(updates.drop(session, rnd))
                for task in rnd.tasks:
                    if task.status in UNANSWERED:
                        self._finish(task, WITHDRAWN, detail=why)
                rnd.status, rnd.closed_at = "closed", utcnow()
                effects.drop_sums.add(rnd.id)
            journal.ended_by(session, job, by)
            end(job, "cancelled", why)

        self._transact(job_id, work)
        log.info("job %s cancelled by %s", job_id, by)

    def withdraw_site(self, site_id: int, reason: str) -> None:
        """Take a site out of every round waiting for it (the operator disabled it): each of
        its unanswered tasks fails with ``reason``, so no round waits for it, and the job goes
        on without it."""
        with self._sessions() as session:
            waiting = session.scalars(
                select(Task.id)
                .join(Round, Task.round_id == Round.id)
                .where(Task.site_id == site_id, Round.status == "open")
                .where(Task.status.in_(UNANSWERED))
            ).all()
        for task_id in waiting:
            with contextlib.suppress(Conflict):  # answered or closed meanwhile
                self.decline(site_id, task_id, reason, withdrawn=True)

    def secure_post(
        self, site_id: int, task_id: str, message: KeyAdvert | ShareBundle | UnmaskShares
    ) -> ResultAck:
        """A site's key advert, sealed shares or unmasking shares in a secure round."""
        job_id = self._job_of(site_id, task_id)

        def work(session: Session, effects: Effects) -> ResultAck:
            task = self._secure_task(session, task_id)
            if isinstance(message, KeyAdvert):
                return self._secure.keys(session, effects, task, message)
            if isinstance(message, ShareBundle):
                return self._secure.shares(session, effects, task, message)
            return self._secure.unmask(session, effects, task, message)

        return self._alone(site_id, job_id, work)

    def masked_limit(self, site_id: int, task_id: str) -> int:
        """Most bytes a masked input for this task may have, known before its body is read."""
        self._job_of(site_id, task_id)
        with self._sessions() as session:
            return self._secure.masked_bytes(self._secure_task(session, task_id).round)

    def accept_masked(self, site_id: int, task_id: str, path: Path, sha: str) -> ResultAck:
        """A spooled masked input: checked against the round's layout and added to its sum."""
        job_id = self._job_of(site_id, task_id)

        def work(session: Session, effects: Effects) -> ResultAck:
            task = self._secure_task(session, task_id)
            return self._secure.masked(session, effects, task, path, sha)

        return self._alone(site_id, job_id, work)

    @staticmethod
    def _secure_task(session: Session, task_id: str) -> Task:
        task = session.get(Task, task_id, options=_TASK_IN_ROUND)
        assert task is not None  # _job_of found it
        if task.round.phase is None:
            raise BadRequest(f"task {task_id} is not in a securely aggregated round")
        return task

    def expire(self) -> None:
        """Close every open round whose deadline has passed, without its missing sites. Each
        job apart: when closing one fails, the error is logged once and that job ends failed
        (a database error is retried at the next tick); the other jobs go on."""
        now = utcnow()
        with self._sessions() as session:
            due = session.execute(
                select(Round.id, Round.job_id).where(Round.status == "open", Round.deadline < now)
            ).all()
        for round_id, job_id in due:

            def work(session: Session, effects: Effects, round_id: int = round_id) -> None:
                rnd = session.get(Round, round_id)
                if rnd is None or rnd.status != "open" or rnd.deadline >= now:
                    return
                if rnd.phase is not None:
                    self._secure.expire(session, effects, rnd)
                    return
                for task in rnd.tasks:
                    if task.status in OPEN_TASK:
                        self._finish(task, "expired", detail="no result before the round deadline")
                effects.answered[rnd.id] = rnd

            def abandon(
                session: Session, effects: Effects, round_id: int = round_id, error: str = ""
            ) -> None:
                rnd = session.get(Round, round_id)
                if rnd is None or rnd.status != "open":
                    return
                for task in rnd.tasks:
                    if task.status in OPEN_TASK:
                        self._finish(task, "expired", detail="the round could not be closed")
                rnd.status, rnd.closed_at = "closed", utcnow()
                effects.drop_sums.add(rnd.id)
                effects.retire.update(updates.drop(session, rnd))
                end(rnd.job, "failed", f"round {rnd.number} could not be closed: {error}")

            try:
                self._transact(job_id, work)
            except SQLAlchemyError as exc:
                log.warning("job %s: round id %d not closed, retried: %s", job_id, round_id, exc)
            except Exception as exc:  # a bug, or data no check foresaw: end that job alone
                log.exception("job %s: closing round id %d failed", job_id, round_id)
                try:
                    self._transact(job_id, functools.partial(abandon, error=repr(exc)))
                except SQLAlchemyError as again:
                    log.warning("job %s: round id %d not closed: %s", job_id, round_id, again)

    # -- aggregation and round transitions ---------------------------------------------

    def _check_counts(
        self,
        session: Session,
        task: Task,
        spec: JobSpec,
        n_eval: int | None,
        n_train: int | None = None,
    ) -> None:
        """Counts weight the aggregate, so they must fit what the site reported in the stats
        round, the job's hold-out fraction and the patients it declared in its data profile
        (at most ``MAX_PATIENTS``); a site cannot claim more patients than it has. ``n_eval``
        is None in a training round the job does not score."""
        n_stats = self._reported_n(session, task)
        if n_stats is not None:
            if n_train is not None and n_train != n_stats:
                raise BadTensorPayload(f"n_train {n_train} differs from the {n_stats} reported")
            n_train = n_stats
        limit = patient_limit(session, task.site_id, spec.dataset)
        check_patients((n_train or 0) + (n_eval or 0), limit, "n_train + n_eval")
        if n_eval is None:
            return
        if (
            n_train is not None
            and holdout_size(n_train + n_eval, spec.evaluation.holdout) != n_eval
        ):
            raise BadTensorPayload(f"n_eval {n_eval} does not fit the job's hold-out fraction")

    def _reported_n(self, session: Session, task: Task) -> int | None:
        """The patients the site reported in the job's stats round (an accepted result never
        changes: read once); None before it has one."""
        key = (task.round.job_id, task.site_id)
        if key not in self._reported:
            reported = self._read_reported(session, task.round.job_id, [task.site_id])
            if task.site_id not in reported:
                return None
            try:
                n = StatsResult.model_validate_json(reported[task.site_id]).n
            except ValidationError as exc:  # stored before today's bounds
                raise BadAnswer("the statistics the site sent earlier are out of bounds") from exc
            self._remember_reported(key, n)
        return self._reported[key]

    def _prefetch_reported(self, session: Session, job_id: str, site_ids: set[int]) -> None:
        """``_reported_n`` of the sites of a batch, read in one query (one that does not
        validate is left for its own answer to be refused)."""
        missing = [site_id for site_id in site_ids if (job_id, site_id) not in self._reported]
        for site_id, reported in self._read_reported(session, job_id, missing).items():
            with contextlib.suppress(ValidationError):
                n = StatsResult.model_validate_json(reported).n
                self._remember_reported((job_id, site_id), n)

    @staticmethod
    def _read_reported(session: Session, job_id: str, site_ids: list[int]) -> dict[int, str]:
        """The accepted results of the job's stats round of ``site_ids``, by site."""
        if not site_ids:
            return {}
        rows = session.execute(
            select(Task.site_id, Task.result_json)
            .join(Round, Task.round_id == Round.id)
            .where(
                Round.job_id == job_id,
                Round.kind == "stats",
                Task.site_id.in_(site_ids),
                Task.status == "accepted",
            )
        )
        return {site_id: reported or "" for site_id, reported in rows}

    def _remember_reported(self, key: tuple[str, int], n: int) -> None:
        if len(self._reported) > 100_000:  # a cache, not a record: bound it
            self._reported.clear()
        self._reported[key] = n

    @staticmethod
    def _finish(
        task: Task,
        status: str,
        *,
        effects: Effects | None = None,
        detail: str | None = None,
        sha: str | None = None,
        result: str | None = None,
        size: int | None = None,
    ) -> None:
        """Set the task's outcome; with ``effects`` (an answer's), written with the other
        answers of its batch in one statement (``_FINISHED``) once their work is done, rather
        than by the session's flush, whose unit of work (with the next round's new tasks) was a
        third of a batch's CPU under cProfile (DEVELOPERS.md, "Sixteenth pass")."""
        outcome = (status, detail, sha, result, size, utcnow())
        values = dict(zip(_ANSWER_COLUMNS, outcome, strict=True))
        if effects is None:
            for name, value in values.items():
                setattr(task, name, value)
            return
        for name, value in values.items():  # as read: the statement writes them
            set_committed_value(task, name, value)
        effects.finished.append({"task_id": task.id, **values})

    def _sum(self, rnd: Round) -> WeightedMean:
        """The round's running sum: empty for a round opened here (``_fresh``), else rebuilt
        from its accepted updates (after a restart, or a batch rolled back)."""
        if rnd.id not in self._sums:
            total = WeightedMean(updates.layout(rnd)[1])
            for task in () if rnd.id in self._fresh else rnd.tasks:  # read unless opened here
                if task.status == "accepted" and task.result_sha and task.result_json:
                    meta = TrainResult.model_validate_json(task.result_json)
                    with (
                        TensorFile(updates.stored(self.blobs, task)) as update,
                        self._start(rnd) as start,
                    ):
                        scale = updates.clip_factor(rnd, update, start)
                        updates.fold(total, update, start, scale, meta.n_train)
            self._sums[rnd.id], self._sum_jobs[rnd.id] = total, rnd.job_id
        return self._sums[rnd.id]

    def _start(self, rnd: Round) -> contextlib.AbstractContextManager[Tensors]:
        """The global model the round's updates move from: held while the round is open
        (``updates.held_start``; dropped with its running sum), or its file."""
        if rnd.id not in self._starts:
            self._starts[rnd.id], self._sum_jobs[rnd.id] = (
                updates.held_start(self.blobs, rnd),
                rnd.job_id,
            )
        held = self._starts[rnd.id]
        if held is None:
            return updates.start_model(self.blobs, rnd)
        return contextlib.nullcontext(held)

    def _maybe_close(self, session: Session, effects: Effects, rnd: Round) -> None:
        """Close ``rnd`` and move its job on once no task of it is open."""
        if rnd.status != "open":
            return
        left = self._left.get(rnd.job_id)
        if left is not None and left <= len(effects.finished):  # likely its last answers:
            # its tasks read now (a close reads them), as the answers left them in memory
            still_open = sum(task.status in OPEN_TASK for task in rnd.tasks)
        else:  # counted (autoflush makes the answers' own statuses count)
            still_open = session.scalar(_STILL_OPEN, {"round_id": rnd.id}) or 0
        effects.left[rnd.job_id] = still_open or None
        if still_open:
            return
        job, progress = rnd.job, self._progress
        spec = self._spec(job)
        accepted = [t for t in rnd.tasks if t.status == "accepted"]
        if isinstance(spec, AnalysisSpec) or len(accepted) < spec.min_sites:
            # its sites' names are read (an analysis's parts, a failure's message): the
            # round's sites in one query, held, where ``t.site`` finds them
            _sites = session.scalars(_ROUND_SITES, {"round_id": rnd.id}).all()
        written(session, rnd, status="closed", closed_at=utcnow())
        effects.drop_sums.add(rnd.id)
        if progress.too_few(job, rnd, accepted):
            effects.retire.update(updates.drop(session, rnd))  # the job ends: none are read
            return
        active = [t.site_id for t in rnd.tasks if t.status not in LEFT]
        if isinstance(spec, AnalysisSpec):
            from oncofed.orchestrator import analysis

            try:  # answers were checked on arrival; what is left ends this job alone
                parts = {
                    t.site.name: AnalysisResult.model_validate_json(t.result_json or "").part
                    for t in accepted
                }
                state = analysis.NewtonState.from_json(rnd.params_json) if rnd.params_json else None
                outcome = analysis.close(spec, state, parts)
            except (ArithmeticError, ValueError) as exc:
                outcome = analysis.Failed(f"the sites' answers cannot be pooled: {describe(exc)}")
            progress.after_analysis(
                session, effects, job, rnd, outcome, [t.site_id for t in accepted]
            )
        elif rnd.kind == "stats":
            try:
                totals = pooled_stats(
                    [StatsResult.model_validate_json(t.result_json or "") for t in accepted]
                )
            except (ArithmeticError, ValueError) as exc:
                end(job, "failed", f"pooling the feature statistics failed: {describe(exc)}")
                return
            progress.after_stats(session, effects, job, totals, active)
        elif rnd.kind == "train":
            with updates.round_mean(self.blobs, rnd, accepted, lambda: self._sum(rnd)) as total:
                progress.after_train(
                    session, effects, job, rnd, total.shapes, total.mean_chunks, active
                )  # the next round, or the job failed: either way its updates are read no more
            effects.retire.update(updates.drop(session, rnd))
        else:
            end(job, "completed", None)
        log.info(
            "job %s round %d (%s) closed with %d sites", job.id, rnd.number, rnd.kind, len(accepted)
        )
