"""A training round's plain updates, read from the database (a small one, ``UpdateBody``) or
the blob store, each clipped to the job's norm (``learning.aggregate``): measured when it
arrives (and refused when the job says so), folded into the round's running sum, or, for a
robust strategy, all read at once when the round closes. Under secure aggregation the
orchestrator never sees an update: the edge's own clip is the only bound there
(``docs/security.md``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.orm import Session, object_session

from oncofed.learning.aggregate import (
    Clipped,
    HeldStart,
    RobustMean,
    RoundMean,
    UpdateRefused,
    WeightedMean,
    clip_scale,
)
from oncofed.learning.registry import parameter_shapes
from oncofed.learning.steps import Tensors
from oncofed.learning.strategies import RobustStrategy, build_strategy
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import Round, Task, UpdateBody
from oncofed.orchestrator.progress import parse_spec, training
from oncofed.wire.errors import BadAnswer
from oncofed.wire.messages import TrainResult
from oncofed.wire.spec import JobSpec
from oncofed.wire.stream import Shapes, TensorFile


def layout(rnd: Round) -> tuple[JobSpec, Shapes]:
    """The round's training spec and its tensors' agreed shapes (``_layout``)."""
    spec, shapes, _ = _layout(rnd.job.spec_json)
    return spec, shapes


@lru_cache(maxsize=256)
def _layout(spec_json: str) -> tuple[JobSpec, Shapes, bool]:
    """A training spec, its shapes and whether its strategy is robust, worked out once per
    spec's text rather than for each answer (each update is checked, clipped and folded)."""
    spec = training(parse_spec(spec_json))
    shapes = MappingProxyType(parameter_shapes(spec.model, spec.n_inputs))
    return spec, shapes, isinstance(build_strategy(spec.strategy), RobustStrategy)


def start_model(blobs: BlobStore, rnd: Round) -> TensorFile:
    """The global model the round's updates move from: from memory when it is small (each
    update of the round is measured against it), else read from its file."""
    assert rnd.input_sha is not None  # a training round is sent a global model
    data = blobs.small(rnd.input_sha)
    return TensorFile(data if data is not None else blobs.path(rnd.input_sha))


HELD_START = 1 << 20
"""Elements of a round's global model up to which it is held in float64 while the round is
open (8 MB; ``held_start``); a larger one is read from its file for each update."""


def held_start(blobs: BlobStore, rnd: Round) -> HeldStart | None:
    """The round's global model held in memory to measure its updates from (``HeldStart``),
    when it has at most ``HELD_START`` elements (None: read it for each, ``start_model``)."""
    _, shapes = layout(rnd)
    if sum(math.prod(shape) for shape in shapes.values()) > HELD_START:
        return None
    with start_model(blobs, rnd) as model:
        return HeldStart(model, shapes)


def stored(blobs: BlobStore, task: Task) -> bytes | Path:
    """An accepted update: its bytes where the database holds them, else its blob's file."""
    assert task.result_sha is not None  # accepted
    session = object_session(task)
    assert session is not None  # read with its round
    data = session.scalar(select(UpdateBody.data).where(UpdateBody.task_id == task.id))
    return data if data is not None else blobs.path(task.result_sha)


_BODIES, _TASKS = cast(Table, UpdateBody.__table__), cast(Table, Task.__table__)
_DROP = delete(_BODIES).where(
    _BODIES.c.task_id.in_(select(_TASKS.c.id).where(_TASKS.c.round_id == bindparam("round_id")))
)
"""A round's held updates, deleted on the connection: the session holds none of them (they
are written and read by statements), so it need not flush or look for them first."""


def drop(session: Session, rnd: Round) -> set[str]:
    """Forget the round's updates (it is done with them): the bodies the database holds go in
    this transaction; the blobs to retire once it commits are returned (``BlobStore.retire``):
    none for a plain round of JSON answers, whose ``result_sha`` names no file."""
    session.connection().execute(_DROP, {"round_id": rnd.id})
    if rnd.phase is None and rnd.kind != "train":
        return set()
    return {t.result_sha for t in rnd.tasks if t.result_sha}


def _scale(spec: JobSpec, shapes: Shapes, update: TensorFile, start: Tensors) -> float:
    local = spec.local
    try:
        return clip_scale(update, start, shapes, local.clip_norm, local.over_clip == "refuse")
    except UpdateRefused as exc:
        raise BadAnswer(str(exc)) from exc


def clip_factor(rnd: Round, update: TensorFile, start: Tensors) -> float:
    """The factor that scales ``update``, a move from the round's global model ``start``
    (``start_model``), to the job's clip norm (1 when within); ``BadAnswer`` when it is to be
    refused. One pass over the update and the global model."""
    spec, shapes = layout(rnd)
    return _scale(spec, shapes, update, start)


def robust(rnd: Round) -> bool:
    """Whether the round's strategy reads every update at close (keeping no running sum)."""
    return _layout(rnd.job.spec_json)[2]


def fold(
    total: WeightedMean, update: TensorFile, start: Tensors, scale: float, weight: float
) -> None:
    """Add ``update``, scaled by ``scale`` (``clip_factor``), to the running sum: at once when
    the round's global model is held and the update is in memory (``HeldStart.moved``), else
    a chunk at a time."""
    if isinstance(start, HeldStart) and total.places == start.places:
        if scale == 1.0 and (values := update.flat(start.sizes)) is not None:
            total.add_flat(values, weight)  # as sent, so folded exactly
            return
        if scale != 1.0 and (moved := start.moved(update)) is not None:
            moved *= scale
            total.add_flat(start.flat + moved, weight)
            return
    total.add_chunks(Clipped(update, start, scale).chunks(total.shapes), weight)


@contextmanager
def round_mean(
    blobs: BlobStore, rnd: Round, accepted: Sequence[Task], running: Callable[[], WeightedMean]
) -> Iterator[RoundMean]:
    """What the round's next model is read from while the context is open: its running sum
    (``running``), or for a robust strategy every accepted update, clipped, at once (one open
    file per site; memory ``learning.aggregate.ROBUST_BUDGET``)."""
    spec, shapes = layout(rnd)
    strategy = build_strategy(spec.strategy)
    if not isinstance(strategy, RobustStrategy):
        yield running()
        return
    with ExitStack() as stack:
        start = stack.enter_context(start_model(blobs, rnd))
        updates, weights = [], []
        for task in sorted(accepted, key=lambda t: t.site_id):  # an order that never changes
            assert task.result_sha is not None and task.result_json is not None  # accepted
            update = stack.enter_context(TensorFile(stored(blobs, task)))
            updates.append(Clipped(update, start, _scale(spec, shapes, update, start)))
            weights.append(float(TrainResult.model_validate_json(task.result_json).n_train))
        yield RobustMean(strategy, start, updates, weights, shapes)
