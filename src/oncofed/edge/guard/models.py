"""The global models a training job sends: the first must be the initial model the spec and
seed give, each later one no further from the last model this site saw than the job's strategy
can move a model, in the rounds between, with updates clipped to the job's clip norm
(``Strategy.max_step``), and none further from the initial model than the site's policy lets a
job travel (``max_model_travel``): the step bounds how fast an orchestrator can walk a model to
weights that single out patients, the travel how far."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from oncofed.edge.errors import PolicyViolation
from oncofed.learning.registry import initial_weights
from oncofed.learning.steps import InMemory, Tensors, within_step
from oncofed.learning.strategies import StepBound, build_strategy
from oncofed.wire.spec import JobSpec, ModelSpec
from oncofed.wire.stream import TensorFile
from oncofed.wire.tensors import decode


def check_model(
    spec: JobSpec,
    round_number: int,
    weights: Mapping[str, np.ndarray],
    last: tuple[int, Path | bytes] | None,
    max_travel: float,
) -> None:
    """Refuse ``weights``, the global model of ``round_number``, unless it is within the step
    of ``last`` (the round, and the bytes or file, of the last model this site saw); without
    one, of the derived initial model (exactly so in round 1); and within ``max_travel`` of
    that."""
    initial = _initial(spec.model.model_dump_json(), spec.n_inputs, spec.seed)
    _check_step(spec, round_number, weights, last, initial)
    if not within_step(initial, weights, StepBound("l2", max_travel), 1):
        raise PolicyViolation(
            f"the global model of round {round_number} is further from the job's initial model "
            f"than this site lets a job travel (policy max_model_travel {max_travel:g})"
        )


@functools.lru_cache(maxsize=16)
def _initial(model: str, n_inputs: int, seed: int) -> InMemory:
    """The initial model of a job (``model``: its ``ModelSpec`` as JSON), read-only, derived
    once for the job's rounds rather than in each."""
    weights = initial_weights(ModelSpec.model_validate_json(model), n_inputs, seed)
    for values in weights.values():
        values.setflags(write=False)
    return InMemory(weights)


def _check_step(
    spec: JobSpec,
    round_number: int,
    weights: Mapping[str, np.ndarray],
    last: tuple[int, Path | bytes] | None,
    initial: Tensors,
) -> None:
    """Refuse ``weights`` unless within the strategy's clipped steps of the last model seen."""
    bound = build_strategy(spec.strategy).max_step(spec.local.clip_norm)
    with ExitStack() as stack:
        previous: Tensors
        if last is None:
            rounds, seen = round_number - 1, "the initial model"
            previous = initial
        else:
            seen_round, source = last
            rounds, seen = round_number - seen_round, f"the model of round {seen_round}"
            # a model kept in memory is small: decoded at once, not read tensor by tensor
            previous = (
                InMemory(decode(source))
                if isinstance(source, bytes)
                else stack.enter_context(TensorFile(source))
            )
        if within_step(previous, weights, bound, rounds):
            return
    if last is None and round_number == 1:
        raise PolicyViolation(
            "the round-1 model is not the initial model the job's spec and seed give"
        )
    raise PolicyViolation(
        f"the global model of round {round_number} moved further from {seen} than {rounds} "
        f"round(s) of {spec.strategy.name} with updates clipped to {spec.local.clip_norm:g} "
        "allow"
    )
