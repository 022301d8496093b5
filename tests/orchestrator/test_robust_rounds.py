"""The orchestrator clips every plain update to the job's norm, refuses absurd ones, and
aggregates with a robust strategy when the job names one: driven through the coordinator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oncofed.learning.registry import initial_weights, parameter_shapes
from oncofed.learning.steps import InMemory, clip_update, within_step
from oncofed.learning.strategies import build_strategy
from oncofed.orchestrator import identity, updates
from oncofed.orchestrator.db import Job
from oncofed.wire import tensors
from oncofed.wire.spec import JobSpec
from tests.orchestrator.test_rounds import (
    SHAPES,
    global_model,
    job_row,
    post_update,
    take,
    through_stats,
)
from tests.support import State, make_spec

HOSTILE = "alpha"
"""The site that sends a scaled or sign-flipped update in the five-site rounds."""


def _start(spec: JobSpec) -> tensors.Weights:
    return initial_weights(spec.model, spec.n_inputs, spec.seed)


def _moved(start: tensors.Weights, move: np.ndarray) -> tensors.Weights:
    """``start`` plus the flat ``move``, as the float32 model a site posts."""
    out, at = {}, 0
    for name, shape in SHAPES.items():  # the order of ``_flat``
        size = math.prod(shape)
        out[name] = (start[name] + move[at : at + size].reshape(shape)).astype(np.float32)
        at += size
    return out


def _flat(weights: tensors.Weights) -> np.ndarray:
    return np.concatenate([weights[k].reshape(-1).astype(np.float64) for k in SHAPES])


DIRECTION = np.array([0.6, 0.0, -0.8])
"""A move of norm 1 of the test model's three parameters (weight 1 x 2, bias)."""


def test_an_update_of_norm_1e6_is_scaled_to_the_clip_norm(state: State) -> None:
    spec = make_spec(rounds=1, local={"clip_norm": 0.5})
    job = state.coordinator.submit(spec, state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    start = _start(spec)
    assert post_update(state, "alpha", a, start, 30) == ("accepted", "")  # no move
    assert post_update(state, "beta", b, _moved(start, 1e6 * DIRECTION), 10)[0] == "accepted"
    move = _flat(global_model(state, job.id)) - _flat(start)
    # beta's move, clipped to 0.5, times its share of the samples (10 of 40)
    np.testing.assert_allclose(move, 0.5 * 10 / 40 * DIRECTION, rtol=1e-5, atol=1e-7)
    assert np.linalg.norm(move) <= 0.5 * 10 / 40 * (1 + 1e-5)


@pytest.mark.parametrize("value", [3e38, np.inf])
def test_an_update_of_3e38_or_inf_is_refused_and_the_round_goes_on(
    state: State, value: float
) -> None:
    spec = make_spec(rounds=1)
    job = state.coordinator.submit(spec, state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    start = _start(spec)
    honest = _moved(start, 0.4 * DIRECTION)
    assert post_update(state, "alpha", a, honest, 30)[0] == "accepted"
    bad = {k: np.full(s, value, np.float32) for k, s in SHAPES.items()}
    status, detail = post_update(state, "beta", b, bad, 10)
    assert status == "rejected"
    assert ("clip norm" if math.isfinite(value) else "NaN or infinite") in detail
    for name, array in global_model(state, job.id).items():
        np.testing.assert_array_equal(array, honest[name])  # alpha's model alone
    assert take(state, "beta").kind == "evaluate"  # beta stays in the job


def test_a_job_may_refuse_long_updates_instead_of_scaling_them(state: State) -> None:
    spec = make_spec(rounds=1, local={"over_clip": "refuse"})
    job = state.coordinator.submit(spec, state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    start = _start(spec)
    status, detail = post_update(state, "alpha", a, _moved(start, 2.0 * DIRECTION), 30)
    assert status == "rejected" and "refuses longer updates" in detail
    assert post_update(state, "beta", b, _moved(start, 0.9 * DIRECTION), 10)[0] == "accepted"
    np.testing.assert_allclose(
        _flat(global_model(state, job.id)) - _flat(start), 0.9 * DIRECTION, rtol=1e-6
    )


def test_updates_the_edges_clipped_are_averaged_as_sent(state: State) -> None:
    spec = make_spec(rounds=1)
    job = state.coordinator.submit(spec, state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    start = _start(spec)
    sent = {
        site: clip_update(start, _moved(start, np.array(move)), spec.local.clip_norm)
        for site, move in (("alpha", [3.0, 1.0, -2.0]), ("beta", [-1.0, 0.5, 0.25]))
    }
    post_update(state, "alpha", a, sent["alpha"], 30)
    post_update(state, "beta", b, sent["beta"], 10)
    for name, array in global_model(state, job.id).items():
        mean = (30 * sent["alpha"][name].astype(np.float64) + 10 * sent["beta"][name]) / 40
        np.testing.assert_array_equal(array, mean.astype(np.float32))


def test_a_restart_mid_round_clips_the_rebuilt_sum_the_same_way(state: State) -> None:
    spec = make_spec(rounds=1)
    job = state.coordinator.submit(spec, state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    start = _start(spec)
    post_update(state, "alpha", a, _moved(start, 1e3 * DIRECTION), 30)
    state.restart()  # the running sum is rebuilt from alpha's stored update
    post_update(state, "beta", b, start, 10)
    move = _flat(global_model(state, job.id)) - _flat(start)
    np.testing.assert_allclose(move, 30 / 40 * DIRECTION, rtol=1e-5)


# -- robust strategies, five sites ----------------------------------------------------------


@pytest.fixture
def five(state: State) -> State:
    """``state`` with three more enrolled sites (five in all, ``HOSTILE`` first)."""
    with state.sessions.begin() as session:
        for name in ("gamma", "delta", "epsilon"):
            enrolled = identity.enrol(session, identity.create_site(session, name).enrolment_token)
            state.credentials[name] = enrolled.credential
            state.sites[name] = identity.authenticate_site(session, enrolled.credential).id
    return state


HONEST = {
    "beta": [0.50, 0.10, -0.30],
    "gamma": [0.52, 0.08, -0.31],
    "delta": [0.49, 0.11, -0.29],
    "epsilon": [0.51, 0.09, -0.30],
}


@pytest.mark.parametrize("attack", [1000.0, -1.0], ids=["scaled x1000", "sign-flipped"])
@pytest.mark.parametrize(
    "strategy",
    [{"name": "median"}, {"name": "trimmed_mean", "trim": 0.2}, {"name": "krum", "multi": 2}],
    ids=lambda s: str(s["name"]),
)
@pytest.mark.parametrize("spooled", [True, False], ids=["spooled", "held"])
def test_a_robust_job_is_not_dragged_by_one_hostile_site_of_five(
    five: State, strategy: dict[str, object], attack: float, spooled: bool
) -> None:
    """Each round's updates read at its close: from their blobs, or from the database."""
    spec = make_spec(rounds=2, strategy=strategy, min_sites=5, local={"clip_norm": 1.0})
    job = five.coordinator.submit(spec, five.admin_id)
    through_stats(five, job.id, dict.fromkeys(five.sites, 40))
    start = _start(spec)
    honest_mean = np.mean(list(HONEST.values()), axis=0)
    previous = start
    for number in (1, 2):
        tasks = {site: take(five, site) for site in five.sites}
        assert {t.round for t in tasks.values()} == {number}
        moves = {**HONEST, HOSTILE: attack * np.array(HONEST["beta"])}
        for site, task in tasks.items():
            posted = _moved(previous, np.array(moves[site]))
            assert post_update(five, site, task, posted, 40, spooled=spooled)[0] == "accepted"
        model = global_model(five, job.id)
        move = _flat(model) - _flat(previous)
        assert np.linalg.norm(move - honest_mean) < 0.03  # fedavg would be off by 0.4 or more
        bound = build_strategy(spec.strategy).max_step(spec.local.clip_norm)
        assert within_step(InMemory(previous), model, bound, 1)  # what each edge checks
        previous = model
    assert take(five, "beta").kind == "evaluate"
    assert job_row(five, job.id).status == "running"


def test_a_fedavg_job_is_dragged_by_the_same_site(five: State) -> None:
    """The reference for the test above: the same updates under FedAvg (clipped)."""
    spec = make_spec(rounds=1, min_sites=5)
    job = five.coordinator.submit(spec, five.admin_id)
    through_stats(five, job.id, dict.fromkeys(five.sites, 40))
    start = _start(spec)
    moves = {**HONEST, HOSTILE: -1.0 * np.array(HONEST["beta"])}
    for site in five.sites:
        post_update(five, site, take(five, site), _moved(start, np.array(moves[site])), 40)
    move = _flat(global_model(five, job.id)) - _flat(start)
    honest_mean = np.mean(list(HONEST.values()), axis=0)
    assert np.linalg.norm(move - honest_mean) > 0.2


@pytest.mark.parametrize(
    ("strategy", "is_robust"), [({"name": "fedavg"}, False), ({"name": "median"}, True)]
)
def test_a_rounds_layout_is_worked_out_once_per_spec(
    state: State, strategy: dict[str, object], is_robust: bool
) -> None:
    """Every update of a round reads its spec's shapes and strategy (``updates.layout``):
    worked out once per spec text, read-only, and the same as worked out anew."""
    spec = make_spec(rounds=1, strategy=strategy)
    job = state.coordinator.submit(spec, state.admin_id)
    with state.sessions() as session:
        row = session.get(Job, job.id)
        assert row is not None
        rnd = row.rounds[0]
        found, shapes = updates.layout(rnd)
        assert updates.layout(rnd)[1] is shapes  # kept, not made again
        assert dict(shapes) == parameter_shapes(spec.model, spec.n_inputs) == SHAPES
        assert found == spec and updates.robust(rnd) is is_robust
        with pytest.raises(TypeError):
            shapes["layers.0.weight"] = (1, 1)  # type: ignore[index]
