"""The edge agent: dials out to the orchestrator, long-polls for tasks, posts typed results,
and sends the data quality report of every dataset imported here (at start, and again after
each re-import).

It opens no listening socket. Every byte it sends is logged to ``egress.jsonl`` in the edge
directory, so the site admin can read exactly what left the site (with, for a Newton round, the
SHA-256 of the pooled coefficients it was sent, which every site of the round can compare), and
each line joins the site's audit log (its SHA-256, with the body's), as does every task refused.
Every task it runs is recorded in its ledger (``ledger.db``, ``oncofed.edge.ledger``).

Each task is checked against ``policy.yaml`` as it is when the task arrives (``PolicyFile``
re-reads it when it changed); while the file is missing or invalid, every task is declined
with the line and setting at fault, and the edge never falls back to the defaults.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from oncofed._files import append_private
from oncofed.audit import clip
from oncofed.edge import approvals, certificates, governance
from oncofed.edge.config import EdgeHome, EdgePolicy, PolicyFile
from oncofed.edge.errors import EdgeError, PolicyFileError, PolicyViolation, StoreError
from oncofed.edge.guard import params_sha256
from oncofed.edge.ledger import Ledger
from oncofed.edge.runner import Contribution, Outcome, TaskRunner
from oncofed.edge.secure import Post, SecureSessions
from oncofed.edge.store import LocalStore
from oncofed.privacy.secagg import public_bytes
from oncofed.wire.messages import (
    SHA256_HEADER,
    Certificate,
    CertificateRequest,
    Decline,
    IdentityKey,
    ResultAck,
    TaskAssignment,
    TrainResult,
    error_detail,
)
from oncofed.wire.profile import DataProfile
from oncofed.wire.secagg import MaskedHeader
from oncofed.wire.tensors import read_meta, sha256

log = logging.getLogger("oncofed.edge")
T = TypeVar("T")
RENEW_RETRY = timedelta(hours=1)
"""How long after a refused renewal the edge asks again."""
PROFILE_CHECK_SECONDS = 5.0
"""While tasks come with acknowledgements, how often the edge looks for a dataset imported
again (before each poll it always looks)."""
Stamp = tuple[int, int]
"""A profile file's inode and modification time: a re-import writes a new file."""


class _Turn:
    """The sites of one edge process compute their answers in turn (``Agent.handle``); each
    waits for its turn asleep, and a site lets go of it while it downloads a model or sends
    its answer. Computing at once, they hand the interpreter lock to each other around every
    short call that releases it (torch's operations, SQLite's, hashing), each hand-over a
    futex wait and two thread switches: at 200 sites in two processes, a round of the
    benchmark's MLP took 487 ms in turn against 566 at once (medians of ten pairs,
    DEVELOPERS.md). The cost: one process's sites do not compute on several cores at once,
    as its sites already trained one at a time (``learning.torch_model.one_at_a_time``); a
    site with large data or long analyses is better in a process of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            yield

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Let go of the turn this thread holds for the block."""
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()


_TURN = _Turn()


class FinalError(Exception):
    """The orchestrator refused a request (4xx): retrying the same request cannot help."""


class Agent:
    """One site's connection to the orchestrator."""

    def __init__(
        self,
        home: EdgeHome,
        *,
        poll_seconds: float = 25.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        config = home.config()
        self.home, self.site, self.orchestrator = home, config.site, str(config.orchestrator)
        self._poll_seconds = poll_seconds
        self._backoff = backoff
        self._store = LocalStore(home.datasets)
        self._ledger = Ledger(home.root)
        self._identity = home.identity()
        self._policy_file = PolicyFile(home.policy_file)
        self._policy: EdgePolicy | None = None  # in force; None until the file is valid
        self._policy_problem = ""  # the last one logged
        self._decisions_sent: str | None = None  # the policy version whose decisions were sent
        self._runner: TaskRunner | None = None
        self._secure: SecureSessions | None = None
        self._check_policy()
        self._profiles_sent: dict[str, Stamp] = {}  # dataset -> stamp of the profile handled
        self._profiles_checked = -math.inf  # time.monotonic() of the last look
        self._transport = transport
        self._renew_at = self._renewal_time()
        self._http = self._client()
        self._waiting = f"?wait={self._poll_seconds}"  # a long poll's query
        self._next = httpx.URL(self._url("/tasks/next" + self._waiting))  # parsed once
        self.started = threading.Event()
        """Set once ``run`` has warmed up and introduced the site: what the agent holds for
        as long as it runs exists by then (``oncofed edge run`` freezes it then:
        ``oncofed._memory.frozen_at_start``)."""

    def _client(self) -> httpx.Client:
        """A client for the orchestrator (``EdgeHome.orchestrator_client``: the pinned CA
        only, this site's certificate presented) whose reads outlast a long poll."""
        timeout = httpx.Timeout(60.0, read=self._poll_seconds + 30.0)
        return self.home.orchestrator_client(timeout=timeout, transport=self._transport)

    def _url(self, path: str) -> str:
        """``path`` under the client's base, whole: httpx takes 0.1 ms of CPU less to send a
        request to it than to join a relative path and its parameters."""
        return f"{str(self._http.base_url).rstrip('/')}{path}"

    def _renewal_time(self) -> datetime | None:
        """When the site's certificate is due for renewal (None: it has none)."""
        cert = certificates.current(self.home)
        return None if cert is None else certificates.renewal_time(cert)

    def _renew_certificate(self, stop: threading.Event) -> None:
        """Ask for a new certificate for the identity key once less than a third of the
        current one's validity is left (over mutual TLS with the current one), then use it
        on every new connection. A refusal is logged and tried again an hour later."""
        if self._renew_at is None or datetime.now(UTC) < self._renew_at:
            return
        request = CertificateRequest(csr=certificates.signing_request(self._identity))

        def renew() -> Certificate:
            response = self._http.post("/certificate", json=request.model_dump())
            _raise_for_status(response)
            return Certificate.model_validate_json(response.content)

        try:
            issued = self._retrying(renew, stop)
        except (FinalError, ValidationError) as exc:
            log.error("the site's certificate was not renewed (%s); trying again in an hour", exc)
            self._renew_at = datetime.now(UTC) + RENEW_RETRY
            return
        if issued is None:  # stopping
            return
        self.home.save_tls(certificate=issued.certificate)
        self._renew_at = self._renewal_time()
        self._http.close()
        self._http = self._client()
        log.info("renewed the site's certificate; the next renewal is due %s", self._renew_at)

    def close(self) -> None:
        self._http.close()
        self._ledger.close()

    def run(self, stop: threading.Event | None = None, max_tasks: int | None = None) -> int:
        """Poll and work until ``stop`` is set or ``max_tasks`` are done; returns the count."""
        stop = stop or threading.Event()
        ceiling = self._backoff[1]
        done = 0
        handed: TaskAssignment | None = None  # the next task, sent back with an ack
        with contextlib.suppress(PolicyFileError):  # said when the first task comes
            self._in_force()[0].warm_up()  # before the orchestrator first sees the site
        self._introduce(stop)
        self.started.set()
        log.info("ready: waiting for tasks from %s", self.orchestrator)
        while not stop.is_set() and (max_tasks is None or done < max_tasks):
            # before every poll; before a task handed with the previous one's ack (most are),
            # what costs no system call: a handed task reads the policy file itself
            # (``_outcome``), and the datasets are looked at every few seconds. In an edge
            # serving many sites, a system call under contention costs two thread switches
            # (``oncofed._files.append_private``).
            self._renew_certificate(stop)
            self._send_new_profiles(stop, every=0.0 if handed is None else PROFILE_CHECK_SECONDS)
            if handed is None:
                self._check_policy()
            self._send_decisions()
            try:
                task = handed or self._retrying(self._poll, stop)
            except FinalError as exc:  # e.g. a revoked credential or a proxy in the way
                log.error("orchestrator refused the poll (%s); retrying in %.0fs", exc, ceiling)
                stop.wait(ceiling)
                continue
            if task is None:
                continue
            ack = self.handle(task, stop)
            handed = ack.next_task if ack is not None else None
            done += 1
        return done

    def handle(self, task: TaskAssignment, stop: threading.Event | None = None) -> ResultAck | None:
        """Run one task and deliver its outcome (retrying until the orchestrator answers)."""
        log.info(
            "task %s: %s round %d of job %s", task.task_id, task.kind, task.round, task.spec.name
        )
        stop = stop or threading.Event()
        with _TURN.held():
            outcome = self._outcome(task, stop)
        if outcome is None:
            return None
        if isinstance(outcome, Decline):
            self._refused(task.task_id, outcome, job=clip(task.job_id), round=task.round)
        if (task.kind == "evaluate" or isinstance(outcome, Decline)) and self._runner is not None:
            self._runner.forget(task.job_id)
        try:
            ack = self._retrying(lambda: self._deliver(task, outcome), stop)
        except FinalError as exc:
            log.warning("task %s: orchestrator refused the result: %s", task.task_id, exc)
            return None
        if ack is not None and ack.status == "rejected":
            log.warning("task %s: update rejected: %s", task.task_id, ack.detail)
        return ack

    def _outcome(self, task: TaskAssignment, stop: threading.Event) -> Outcome | Post | None:
        """What this site answers, under its policy as it is now (None: asked to stop)."""
        try:
            runner, secure = self._in_force()
        except PolicyFileError as exc:
            return Decline(reason=str(exc))
        assert self._policy is not None  # in force
        version = self._policy.version
        try:
            task = approvals.check(self._policy, task)
        except PolicyViolation as exc:
            log.warning("task %s refused: %s", task.task_id, exc)
            return Decline(reason=str(exc))

        def fetch(sha: str) -> bytes:
            if task.model is not None and sha == task.model_sha256:  # handed with the task
                return task.model
            with _TURN.released():  # the other sites compute while it downloads
                data = self._retrying(lambda: self._fetch(sha), stop)
            if data is None:
                raise _Stopped
            return data

        outcome: Outcome | Post
        try:
            if task.secure is not None:
                outcome = secure.step(task, task.secure, lambda: runner.run(task, fetch))
            else:
                outcome = runner.run(task, fetch)
            if isinstance(outcome, Decline) and version not in outcome.reason:
                return Decline(reason=f"{outcome.reason} (policy {version})"[:2000])
            return outcome
        except _Stopped:
            return None
        except Exception as exc:  # never crash the agent on one bad task; say why, locally
            log.exception("task %s failed", task.task_id)
            reason = f"{type(exc).__name__} at the site; see the edge's log"
            return Decline(reason=reason, failed=True)

    # -- the policy in force ---------------------------------------------------------------

    def _in_force(self) -> tuple[TaskRunner, SecureSessions]:
        """The task runner and secure sessions under ``policy.yaml`` as it is now, applied
        anew when it changed; ``PolicyFileError`` while it is missing or invalid (logged once
        for each distinct problem, and once when it is fixed)."""
        try:
            policy = self._policy_file.current()
        except PolicyFileError as exc:
            if str(exc) != self._policy_problem:
                log.error("%s; this site declines every task until it is fixed", exc)
                self._policy_problem = str(exc)
            raise
        if self._policy_problem:
            log.info("%s is valid again; tasks are checked against it", self._policy_file.path)
            self._policy_problem = ""
        if policy is not self._policy:
            self._apply(policy)
        assert self._runner is not None and self._secure is not None  # set by _apply
        return self._runner, self._secure

    def _check_policy(self) -> None:
        """Re-read the policy file between tasks too, so that a change or a mistake is logged
        when it is made, not when the next task comes."""
        with contextlib.suppress(PolicyFileError):
            self._in_force()

    def _send_decisions(self) -> None:
        """Tell the orchestrator the site's decisions on projects, each time the policy that
        holds them changed (a decision it missed, being down, reaches it so)."""
        policy = self._policy
        if policy is None or policy.version == self._decisions_sent:
            return
        try:
            for name, decision in policy.projects.items():
                governance.send_decision(self._http, name, decision, policy.version)
        except EdgeError as exc:  # sent again at the next check
            log.warning("the site's decisions on projects were not sent yet: %s", exc)
            return
        self._decisions_sent = policy.version

    def _apply(self, policy: EdgePolicy) -> None:
        """Put ``policy`` in force: a new task runner (cohorts kept under the old policy are
        built and checked again), the ledger's trusted peers, and the limits of the secure
        rounds joined from now on (a round under way keeps its secrets)."""
        if self._policy is not None:
            log.info("%s re-read: %s", self._policy_file.path, _changes(self._policy, policy))
        self._policy = policy
        self._ledger.trust(policy.trusted_peers)
        self._runner = TaskRunner(self._store, policy, self.site, self._ledger, self._identity)
        if self._secure is None:
            self._secure = SecureSessions(
                self.site,
                self._identity,
                self._ledger,
                policy,
                lambda: self.home.config().orchestrator_key,
            )
        else:
            self._secure.use(policy)

    def _introduce(self, stop: threading.Event) -> None:
        """Register this site's identity key (once; a no-op when it is on record) and pin the
        orchestrator's when enrolment did not (an edge enrolled before keys existed)."""
        try:
            self._retrying(self._register_identity, stop)
            if self.home.config().orchestrator_key is None:
                key = self._retrying(self._orchestrator_identity, stop)
                if key is not None:
                    self.home.pin_orchestrator(key)
                    log.info("pinned the orchestrator's identity key %s...", key[:16])
        except (FinalError, EdgeError) as exc:  # secure rounds will fail; plain ones can run
            log.error("identity keys not exchanged with the orchestrator: %s", exc)

    def _register_identity(self) -> None:
        body = IdentityKey(key=public_bytes(self._identity).hex())
        headers = {"Content-Type": "application/json"}
        _raise_for_status(
            self._http.put("/identity", content=body.model_dump_json(), headers=headers)
        )

    def _orchestrator_identity(self) -> str:
        response = self._http.get("/identity")
        _raise_for_status(response)
        try:
            return IdentityKey.model_validate_json(response.content).key
        except ValidationError as exc:
            raise FinalError(f"the orchestrator's identity key is not readable: {exc}") from exc

    def _send_new_profiles(self, stop: threading.Event, every: float = 0.0) -> None:
        """Send the report of each dataset imported or re-imported since the last look (a
        stat per dataset when nothing changed), looking only when ``every`` seconds have
        passed since. A report that cannot be read or that the orchestrator refuses is
        logged and skipped until the dataset is imported again."""
        now = time.monotonic()
        if now - self._profiles_checked < every:
            return
        self._profiles_checked = now
        for name, stamp in self._profile_stamps().items():
            if self._profiles_sent.get(name) == stamp:
                continue
            try:
                profile = self._store.profile(name)
                self._retrying(functools.partial(self._put_profile, name, profile), stop)
            except (StoreError, FinalError) as exc:
                log.error("data profile of dataset %s not sent: %s", name, exc)
            if stop.is_set():
                return
            self._profiles_sent[name] = stamp

    def _profile_stamps(self) -> dict[str, Stamp]:
        stamps = {}
        for name in self._store.names():
            try:
                stat = self._store.profile_path(name).stat()
            except OSError:  # replaced or removed since it was listed; seen next time
                continue
            stamps[name] = (stat.st_ino, stat.st_mtime_ns)
        return stamps

    # -- HTTP --------------------------------------------------------------------------

    def _poll(self) -> TaskAssignment | None:
        response = self._http.get(self._next)
        if response.status_code == 204:
            return None
        _raise_for_status(response)
        try:
            return TaskAssignment.model_validate_json(response.content)
        except ValidationError as exc:
            self._decline_unreadable(response.content, exc)
            return None

    def _decline_unreadable(self, body: bytes, exc: ValidationError) -> None:
        """A task this edge cannot parse (a newer orchestrator?) is declined, not retried."""
        try:
            task_id = str(json.loads(body)["task_id"])
        except (ValueError, KeyError, TypeError):
            log.error("unreadable task from the orchestrator: %s", exc)
            return
        log.error("task %s cannot be read by this edge; declining it: %s", task_id, exc)
        reason = "this edge cannot read the task (are oncofed versions different?)"
        self._refused(task_id, Decline(reason=reason))
        response = self._http.post(f"/tasks/{task_id}/decline", json={"reason": reason})
        if response.status_code >= 400:
            log.error("declining task %s failed: %s", task_id, error_detail(response.content))

    def _fetch(self, sha: str) -> bytes:
        response = self._http.get(f"/blobs/{sha}")
        _raise_for_status(response)
        return response.content

    def _deliver(self, task: TaskAssignment, outcome: Outcome | Post) -> ResultAck:
        query = self._waiting  # the ack may bring the next task (a poll less)
        if isinstance(outcome, Post):
            path = f"/tasks/{task.task_id}/secure/{outcome.phase}"
            body, kind, query = outcome.body, outcome.content_type, ""
        elif isinstance(outcome, Contribution):
            raise TypeError("a secure contribution leaves the site only masked")
        elif isinstance(outcome, bytes):
            path, body, kind = f"/tasks/{task.task_id}/update", outcome, "application/octet-stream"
        elif isinstance(outcome, Decline):
            path, body, kind = (
                f"/tasks/{task.task_id}/decline",
                outcome.model_dump_json().encode(),
                "application/json",
            )
            query = ""
        else:
            path, body, kind = (
                f"/tasks/{task.task_id}/result",
                outcome.model_dump_json().encode(),
                "application/json",
            )
        digest = sha256(body)
        about: dict[str, Any] = {
            "job": task.job_id,
            "task": task.task_id,
            "kind": task.kind,
            "round": task.round,
            "project": task.spec.project,
            "policy_version": self._policy.version if self._policy else None,
        }
        if task.params is not None:  # every site of the round can compare this hash
            about["params_sha256"] = params_sha256(task.params.pooled)
        self._log_egress(about, path, body, digest)
        response = self._http.post(
            self._url(path + query),
            content=body,
            headers={"Content-Type": kind, SHA256_HEADER: digest},
        )
        if response.status_code == 422 and isinstance(outcome, bytes | Post):
            return ResultAck.model_validate_json(response.content)
        _raise_for_status(response)
        return ResultAck.model_validate_json(response.content)

    def _put_profile(self, name: str, profile: DataProfile) -> None:
        path, body = f"/profiles/{name}", profile.model_dump_json().encode()
        self._log_egress({"kind": "profile", "dataset": name}, path, body, sha256(body))
        response = self._http.put(path, content=body, headers={"Content-Type": "application/json"})
        _raise_for_status(response)

    def _log_egress(self, about: dict[str, Any], path: str, body: bytes, digest: str) -> None:
        entry = {
            "at": datetime.now(UTC).isoformat(),
            **about,
            "endpoint": path,
            "bytes": len(body),
            "sha256": digest,
            "json": _logged(path, body),
        }
        line = json.dumps(entry)
        append_private(self.home.egress_log, (line + "\n").encode())
        facts = {
            key: clip(value) if isinstance(value, str) else value for key, value in about.items()
        }
        facts |= {
            "endpoint": clip(path),
            "bytes": len(body),
            "sha256": digest,
            "line_sha256": hashlib.sha256(line.encode()).hexdigest(),
        }
        self._ledger.audit(self._identity, "egress", actor="edge", site=self.site, detail=facts)

    def _refused(self, task_id: str, decline: Decline, **facts: str | int) -> None:
        """Record in the audit log a task this site refused (or failed), and why."""
        action = "task.failed" if decline.failed else "task.refused"
        detail = {"task": clip(task_id), **facts, "reason": clip(decline.reason)}
        self._ledger.audit(self._identity, action, actor="edge", site=self.site, detail=detail)

    def _retrying(self, call: Callable[[], T], stop: threading.Event) -> T | None:
        """Call until it answers; transport errors and 5xx back off exponentially with jitter."""
        delay, ceiling = self._backoff
        while not stop.is_set():
            try:
                return call()
            except (httpx.TransportError, _ServerError) as exc:
                log.warning("orchestrator unreachable (%s); retrying in %.1fs", exc, delay)
                stop.wait(delay * (0.5 + random.random()))
                delay = min(delay * 2, ceiling)
        return None


def _changes(old: EdgePolicy, new: EdgePolicy) -> str:
    """The settings whose values differ, as ``min_cohort_size 20 -> 50``; the decisions on
    projects that differ, as ``project study approved``."""
    before, after = old.model_dump(exclude={"projects"}), new.model_dump(exclude={"projects"})
    changed = [f"{key} {before[key]} -> {after[key]}" for key in after if before[key] != after[key]]
    for name in sorted(old.projects.keys() | new.projects.keys()):
        was, now = old.projects.get(name), new.projects.get(name)
        if was != now:
            state = "withdrawn" if now is None else "approved" if now.approved else "declined"
            changed.append(f"project {name} {state}")
    return ", ".join(changed) or "no setting changed"


def _logged(path: str, body: bytes) -> object:
    """What the egress log holds of a body: JSON in full; of an update or a masked input, the
    numbers in its safetensors header (the weights and masked limbs are not worth a line)."""
    if path.endswith("/update"):
        return read_meta(body, TrainResult).model_dump(mode="json")
    if path.endswith("/secure/masked"):
        return read_meta(body, MaskedHeader).model_dump(mode="json")
    return json.loads(body)


class _ServerError(Exception):
    """A 5xx answer: the orchestrator may be restarting; retry."""


class _Stopped(Exception):
    """The agent was asked to stop while waiting for the orchestrator."""


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 500:
        raise _ServerError(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        raise FinalError(f"HTTP {response.status_code}: {error_detail(response.content)}")
