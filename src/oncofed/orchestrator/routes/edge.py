"""The API edges call. Edges dial out: they poll for tasks, post results and their datasets'
reports here."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from oncofed.audit import actor
from oncofed.orchestrator import identity, pki, profiles, tls
from oncofed.orchestrator.db import AUDIT, Site
from oncofed.orchestrator.deps import CoordinatorDep, CurrentSite, SessionDep, SettingsDep
from oncofed.orchestrator.errors import BadRequest, NotFound, PayloadTooLarge
from oncofed.orchestrator.notifier import Notifier
from oncofed.orchestrator.rounds import Coordinator, Submission
from oncofed.orchestrator.settings import Settings
from oncofed.wire.analysis import AnalysisResult
from oncofed.wire.messages import (
    SHA256_HEADER,
    Certificate,
    CertificateRequest,
    Decline,
    EnrolRequest,
    EnrolResponse,
    EvaluateResult,
    IdentityKey,
    ResultAck,
    StatsResult,
    TaskAssignment,
)
from oncofed.wire.profile import DataProfile
from oncofed.wire.secagg import KeyAdvert, ShareBundle, UnmaskShares

router = APIRouter(tags=["edge"])
Accept = Callable[[Path, str], ResultAck | Submission]
T = TypeVar("T")
_SPOOL_BLOCK = 512 << 10  # bytes hashed and written per hop off the event loop
INLINE_UPDATE_BYTES = 128 << 10
"""Largest update (by its declared ``Content-Length``) read into memory and kept in the
transaction that accepts it (``db.UpdateBody``), not spooled to a file of its own. A file
created, synced, renamed and its folder synced for every answer cost the orchestrator a third
of its CPU an answer with a small model on ext4; a 400 KB update costs the database more than
its file (DEVELOPERS.md, "Eleventh pass")."""
INLINE_BUDGET = 32 << 20
"""Bytes of such updates held in memory at once at most; past it an update is spooled, so
the memory stays bounded however many sites post at once."""


class _Held:
    """The bytes of the updates held in memory (``INLINE_BUDGET``)."""

    def __init__(self) -> None:
        self._lock, self.bytes = threading.Lock(), 0

    def take(self, size: int) -> bool:
        with self._lock:
            if size > INLINE_UPDATE_BYTES or self.bytes + size > INLINE_BUDGET:
                return False
            self.bytes += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.bytes -= size


_HELD = _Held()


@router.post("/enrol")
def enrol(
    body: EnrolRequest,
    request: Request,
    session: SessionDep,
    coordinator: CoordinatorDep,
    settings: SettingsDep,
) -> EnrolResponse:
    """Swap the one-time token for the site's credential and, with a certificate request for
    its identity key, its client certificate (required when serving mutual TLS)."""
    if body.csr is None and tls.serves_mutual_tls(request.app):
        raise BadRequest(
            "this orchestrator uses mutual TLS: enrol with the consortium CA file "
            "(oncofed edge init --ca FILE), which sends a certificate request"
        )
    if body.csr is not None and body.identity_key is None:
        raise BadRequest("a certificate request comes with the identity key it is for")
    enrolled = identity.enrol(session, body.token, body.identity_key, coordinator.public_key)
    AUDIT.record(
        session,
        "site.enrolled",
        actor=actor("site", enrolled.site),
        site=enrolled.site,
        detail={"identity_key": body.identity_key},
    )
    if body.csr is None:
        return enrolled
    site = pki.site_named(session, enrolled.site)
    issued = pki.issue_site(session, settings.home, site, body.csr, settings.site_certificate_days)
    return enrolled.model_copy(update={"certificate": issued})


@router.post("/certificate")
def renew_certificate(
    body: CertificateRequest,
    request: Request,
    site: CurrentSite,
    session: SessionDep,
    settings: SettingsDep,
) -> Certificate:
    """A new client certificate for this site's identity key, asked for over mutual TLS with
    its current one (the edge renews when a third of its validity is left)."""
    tls.require_site_certificate(request, site.name)
    row = session.get(Site, site.id)
    assert row is not None  # the caller was authenticated as it
    issued = pki.issue_site(session, settings.home, row, body.csr, settings.site_certificate_days)
    return Certificate(certificate=issued)


@router.get("/identity")
def orchestrator_identity(_: CurrentSite, coordinator: CoordinatorDep) -> IdentityKey:
    """The key the orchestrator signs survivor lists with (sites pin it)."""
    if coordinator.public_key is None:
        raise NotFound("this orchestrator has no identity key")
    return IdentityKey(key=coordinator.public_key)


@router.put("/identity", status_code=204)
def register_identity(body: IdentityKey, site: CurrentSite, session: SessionDep) -> None:
    """This site's identity key, registered once."""
    first = (row := session.get(Site, site.id)) is not None and row.identity_key is None
    identity.register_identity(session, site.id, body.key)
    if first:
        AUDIT.record(
            session,
            "identity.registered",
            actor=actor("site", site.name),
            site=site.name,
            detail={"identity_key": body.key},
        )


@router.get("/tasks/next", response_model=TaskAssignment, responses={204: {"description": "none"}})
async def next_task(
    request: Request,
    site: CurrentSite,
    coordinator: CoordinatorDep,
    settings: SettingsDep,
    wait: Annotated[float, Query(ge=0, le=120, description="Long-poll seconds")] = 25.0,
) -> Response:
    """Long poll: answers at once with a task, or when one is published, or 204 after ``wait``."""
    task = await _awaited(request, site.id, coordinator, settings, wait)
    return Response(status_code=204) if task is None else _task_json(task)


WaitForNext = Annotated[
    float,
    Query(
        ge=0,
        le=120,
        description="Seconds the acknowledgement may wait, as a long poll does, for the site's "
        "next task, handed with it (0: answer at once)",
    ),
]


async def _awaited(
    request: Request, site_id: int, coordinator: Coordinator, settings: Settings, wait: float
) -> TaskAssignment | None:
    """The site's next task: at once when it has one, else when one is published within
    ``wait`` seconds (at most ``long_poll_seconds``), handed with its publication or asked for
    then; None after, or as the server stops."""
    notifier: Notifier = request.app.state.notifier
    deadline = time.monotonic() + min(wait, settings.long_poll_seconds)
    while True:
        published = notifier.event(site_id)  # taken first, so no publication is missed
        since = notifier.generations([site_id])[site_id]
        if notifier.idle(site_id):  # nothing published for it since a check found nothing
            task = None
        else:
            task = await coordinator.deliver(site_id)
        if task is not None:
            return task
        remaining = deadline - time.monotonic()
        if remaining <= 0 or notifier.closing or await request.is_disconnected():
            return None
        try:
            with notifier.waiting_for(site_id):
                await asyncio.wait_for(published.wait(), timeout=remaining)
        except TimeoutError:
            return None
        if (task := notifier.handed(site_id, since)) is not None:
            return task


async def _answered(
    request: Request,
    site_id: int,
    coordinator: Coordinator,
    settings: Settings,
    ack: ResultAck,
    wait: float,
) -> Response:
    """The acknowledgement of a recorded answer. With ``wait``, it is held as a long poll until
    the site's next task, which comes with it: a round then costs a site one request, not an
    answer and a poll. The answer is recorded before the wait: an acknowledgement lost meanwhile
    is asked for again and comes back a duplicate. A rejection is said at once (its site
    reads it as an error, and would not see a task handed with it)."""
    if wait > 0 and ack.next_task is None and ack.status != "rejected":
        task = await _awaited(request, site_id, coordinator, settings, wait)
        ack = ack if task is None else ack.model_copy(update={"next_task": task})
    return _ack(ack)


def _json(message: BaseModel, status_code: int = 200) -> Response:
    """A message serialised once by pydantic (the hot paths skip FastAPI's re-validation)."""
    return Response(message.model_dump_json(), status_code, media_type="application/json")


class _TaskTexts:
    """A task's JSON with what every site's task of a round repeats, its job's spec and its
    inline global model (as base64), written once rather than once a site: they were nine
    tenths of the time pydantic took to write a training task (about 0.17 ms an answer with
    the benchmark's MLP). The rest of the task is written by pydantic, and the parts spliced
    in as it would write them (``tests/orchestrator/test_task_texts.py``)."""

    KEPT = 256

    def __init__(self) -> None:
        self._specs: dict[str, tuple[object, str]] = {}  # job id -> (spec object, its JSON)
        self._models: dict[str, str] = {}  # model_sha256 -> the model's JSON string

    def __call__(self, task: TaskAssignment) -> str:
        rest = task.model_dump_json(exclude={"spec", "model"})[:-1]
        kept = self._specs.get(task.job_id)
        if kept is None or kept[0] is not task.spec:  # a job's spec is one object
            kept = self._keep(self._specs, task.job_id, (task.spec, task.spec.model_dump_json()))
        return f'{rest},"spec":{kept[1]},"model":{self._model(task)}}}'

    def _model(self, task: TaskAssignment) -> str:
        if task.model is None:
            return "null"
        assert task.model_sha256 is not None  # the task's validator matched them
        model = self._models.get(task.model_sha256)
        if model is None:
            text = f'"{base64.b64encode(task.model).decode("ascii")}"'
            model = self._keep(self._models, task.model_sha256, text)
        return model

    def _keep(self, kept: dict[str, T], key: str, value: T) -> T:
        if len(kept) >= self.KEPT:  # a cache, not a record: bound it
            kept.clear()
        kept[key] = value
        return value


_task_text = _TaskTexts()


def _task_json(task: TaskAssignment) -> Response:
    """A task for a site (``_TaskTexts``)."""
    return Response(_task_text(task), media_type="application/json")


def _ack(ack: ResultAck) -> Response:
    """An answer to a site's post: 422 when it was rejected (its site leaves the round); a
    task handed with it is written as ``_task_json`` writes it."""
    status = 422 if ack.status == "rejected" else 200
    if ack.next_task is None:
        return _json(ack, status_code=status)
    text = ack.model_dump_json(exclude={"next_task"})[:-1] + ',"next_task":'
    content = text + _task_text(ack.next_task) + "}"
    return Response(content, status, media_type="application/json")


async def _stream(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks; a client gone before the end (an edge's connection cut: it retries)
    is a bad request, not a server error."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect as exc:
        raise BadRequest("the connection closed before the whole body came") from exc


class _BlobFile(FileResponse):
    chunk_size = 256 << 10  # fewer thread hops than Starlette's 64 KB, little memory per client


@router.get("/blobs/{sha}", response_class=Response)
async def get_blob(sha: str, site: CurrentSite, coordinator: CoordinatorDep) -> Response:
    """A global model sent to this site: small ones straight from memory, large ones
    streamed from disk."""
    path = coordinator.sent_blob(site.id, sha)
    if path is None:
        path = await run_in_threadpool(coordinator.blob_for_site, site.id, sha)
    if (data := coordinator.blobs.small(sha)) is not None:
        return Response(data, media_type="application/octet-stream")
    return _BlobFile(path, media_type="application/octet-stream")


async def _soon(coordinator: Coordinator, task_id: str, call: Callable[[], T]) -> T:
    """``call`` about a task: at once when the coordinator knows the task from memory, else
    in a thread (it reads the database)."""
    return call() if coordinator.knows(task_id) else await run_in_threadpool(call)


async def _sized(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks, refused past ``limit`` bytes (nothing beyond is read)."""
    size = 0
    async for chunk in _stream(request):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds the {limit} bytes this task takes")
        yield chunk


def _checked(request: Request, sha: str) -> str:
    """``sha``, the body's SHA-256, when it is the one the site claimed (if it did)."""
    claimed = request.headers.get(SHA256_HEADER)
    if claimed is not None and claimed != sha:
        raise BadRequest(f"body SHA-256 is {sha}, not the {SHA256_HEADER} {claimed}")
    return sha


async def _recorded(
    coordinator: Coordinator, outcome: ResultAck | Submission, patient: bool
) -> ResultAck:
    """``outcome`` recorded (``patient``: its site waits for its next task anyway)."""
    if isinstance(outcome, ResultAck):
        return outcome
    with anyio.CancelScope(shield=True):  # recorded before its body goes
        ack = await coordinator.record_soon(outcome, patient)
    return ack


async def _spooled(
    request: Request,
    coordinator: Coordinator,
    settings: Settings,
    limit: int,
    accept: Accept,
    patient: bool = False,
) -> ResultAck:
    """A binary body for a task, of at most ``limit`` bytes (known before it is read),
    spooled to disk while hashing (O(1) memory), then handed to ``accept``: accepted there,
    or an answer to record (validation and aggregation; the updates of a job that arrive
    together are checked and folded one after the other by one thread, and recorded in one
    transaction, while their requests wait on the event loop; ``patient``, ``_recorded``).

    Hashing and writing happen off the event loop, half a megabyte at a time (the chunks
    as they came, never copied); the last piece is written, the digest checked and the body
    handed over in one hop. Returns the acknowledgement.
    """
    limit = min(settings.max_upload_bytes, limit)
    digest, buffered = hashlib.sha256(), 0
    pending: list[bytes] = []
    with coordinator.blobs.spool() as (handle, path):

        def flush(chunks: list[bytes]) -> None:
            for chunk in chunks:
                digest.update(chunk)
            handle.writelines(chunks)

        def finish() -> ResultAck | Submission:
            flush(pending)
            handle.flush()  # accept reads the file by its path
            # On disk here, beside other uploads: the fsync of its adoption, in the batch
            # recording it one answer after another, then finds nothing left to write.
            os.fsync(handle.fileno())
            return accept(path, _checked(request, digest.hexdigest()))

        try:
            async for chunk in _sized(request, limit):
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= _SPOOL_BLOCK:
                    await run_in_threadpool(flush, pending)
                    pending, buffered = [], 0
            ack = await _recorded(coordinator, await run_in_threadpool(finish), patient)
        finally:
            path.unlink(missing_ok=True)
    return ack


async def _held(
    request: Request,
    coordinator: Coordinator,
    task_id: str,
    limit: int,
    accept: Callable[[bytes, str], ResultAck | Submission],
    patient: bool,
) -> ResultAck:
    """An update of ``limit`` bytes, as declared (at most ``INLINE_UPDATE_BYTES``, its share of
    ``INLINE_BUDGET`` taken), read into memory and handed to ``accept`` as bytes: the
    transaction that accepts it keeps them, so no file is written for it."""
    try:
        body = b"".join([chunk async for chunk in _sized(request, limit)])
        sha = _checked(request, hashlib.sha256(body).hexdigest())
        outcome = await _soon(coordinator, task_id, functools.partial(accept, body, sha))
        return await _recorded(coordinator, outcome, patient)
    finally:
        _HELD.give(limit)


@router.post("/tasks/{task_id}/update", response_model=ResultAck)
async def post_update(
    task_id: str,
    request: Request,
    site: CurrentSite,
    coordinator: CoordinatorDep,
    settings: SettingsDep,
    wait: WaitForNext = 0.0,
) -> Response:
    """A training update as a safetensors body: a small one kept in memory until the
    database holds it, a larger one spooled to disk."""
    limit_of = functools.partial(coordinator.update_limit, site.id, task_id)
    limit = min(settings.max_upload_bytes, await _soon(coordinator, task_id, limit_of))
    accept = functools.partial(coordinator.update_answer, site.id, task_id)
    declared = request.headers.get("content-length", "")  # checked by the server as it reads
    size = int(declared) if declared.isascii() and declared.isdigit() else None
    patient = wait > 0  # its acknowledgement waits for the site's next task
    if size is not None and size <= limit and _HELD.take(size):
        ack = await _held(request, coordinator, task_id, size, accept, patient)
    else:
        ack = await _spooled(request, coordinator, settings, limit, accept, patient)
    return await _answered(request, site.id, coordinator, settings, ack, wait)


@router.post("/tasks/{task_id}/secure/masked", response_model=ResultAck)
async def post_masked(
    task_id: str,
    request: Request,
    site: CurrentSite,
    coordinator: CoordinatorDep,
    settings: SettingsDep,
) -> Response:
    """A site's masked input in a secure round: safetensors of uint64 limbs."""
    limit = await run_in_threadpool(coordinator.masked_limit, site.id, task_id)
    accept = functools.partial(coordinator.accept_masked, site.id, task_id)
    return _ack(await _spooled(request, coordinator, settings, limit, accept))


@router.post("/tasks/{task_id}/secure/keys", response_model=ResultAck)
def post_keys(
    task_id: str, body: KeyAdvert, site: CurrentSite, coordinator: CoordinatorDep
) -> Response:
    """A site's key advert for a secure round, signed with its identity key."""
    return _ack(coordinator.secure_post(site.id, task_id, body))


@router.post("/tasks/{task_id}/secure/shares", response_model=ResultAck)
def post_shares(
    task_id: str, body: ShareBundle, site: CurrentSite, coordinator: CoordinatorDep
) -> Response:
    """A site's Shamir shares, each sealed for the peer it is meant for."""
    return _ack(coordinator.secure_post(site.id, task_id, body))


@router.post("/tasks/{task_id}/secure/unmask", response_model=ResultAck)
def post_unmask(
    task_id: str, body: UnmaskShares, site: CurrentSite, coordinator: CoordinatorDep
) -> Response:
    """A site's shares for unmasking the sum, once it has checked the signed survivor list."""
    return _ack(coordinator.secure_post(site.id, task_id, body))


async def _body(request: Request, limit: int, what: str) -> bytes:
    """The request's body (``what``: "a result"), read up to ``limit`` bytes."""
    body = bytearray()
    async for chunk in _stream(request):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"{what} is at most {limit} bytes")
    return bytes(body)


@router.post(
    "/tasks/{task_id}/result",
    response_model=ResultAck,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": f"#/components/schemas/{model.__name__}"}
                            for model in (StatsResult, EvaluateResult, AnalysisResult)
                        ]
                    }
                }
            },
        }
    },
)
async def post_result(
    task_id: str,
    request: Request,
    site: CurrentSite,
    coordinator: CoordinatorDep,
    settings: SettingsDep,
    wait: WaitForNext = 0.0,
) -> Response:
    """A JSON result, read as the one its task takes (``StatsResult``, ``EvaluateResult`` or
    ``AnalysisResult``). 422 with a rejected acknowledgement when it does not validate or does
    not fit the task: the refusal is recorded as the site's failure of the task."""
    body = await _body(request, settings.max_upload_bytes, "a result")
    answer = functools.partial(coordinator.result_answer, site.id, task_id, body)
    ack = await coordinator.record_soon(await _soon(coordinator, task_id, answer), wait > 0)
    return await _answered(request, site.id, coordinator, settings, ack, wait)


@router.post("/tasks/{task_id}/decline")
def decline(
    task_id: str, body: Decline, site: CurrentSite, coordinator: CoordinatorDep
) -> ResultAck:
    return coordinator.decline(site.id, task_id, body.reason, failed=body.failed)


async def _profile_body(dataset: str, request: Request) -> DataProfile:
    """The report in the body, read up to ``MAX_PROFILE_BYTES``; it must be about ``dataset``."""
    body = await _body(request, profiles.MAX_PROFILE_BYTES, "a data profile")
    try:
        profile = DataProfile.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc
    if profile.dataset != dataset:
        message = f"the path names dataset {dataset!r} but the body is about {profile.dataset!r}"
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("path", "dataset"), "msg": message, "input": dataset}]
        )
    return profile


@router.put(
    "/profiles/{dataset}",
    status_code=204,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/DataProfile"}}
            },
        }
    },
)
def put_profile(
    site: CurrentSite,
    profile: Annotated[DataProfile, Depends(_profile_body)],
    session: SessionDep,
) -> None:
    """This site's data quality report on one of its datasets, replacing the one before."""
    profiles.save(session, site.id, profile)
