"""A job's ``evaluation.every``: the training rounds it scores on the sites' held-out rows, and
its final model always, in plain and secure rounds; an update whose held-out figures do not fit
its round is refused with a clear error, and the round goes on without it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from oncofed.learning.metrics import UNSCORED_NOTE
from oncofed.learning.registry import parameter_shapes
from oncofed.wire.messages import SiteState
from oncofed.wire.spec import Evaluation
from tests.orchestrator.test_rounds import post_update, take, through_stats
from tests.orchestrator.test_secure_rounds import SECURE, four, stores, training
from tests.sites import Site, play
from tests.support import State, make_spec

__all__ = ["four", "stores"]  # the fixtures, shared with the secure rounds' tests


@pytest.mark.parametrize(
    ("every", "scored"),
    [(1, [1, 2, 3, 4]), (2, [2, 4]), (3, [3]), (5, []), (None, [])],
)
def test_the_rounds_a_job_scores(every: int | None, scored: list[int]) -> None:
    evaluation = Evaluation(every=every)
    assert [n for n in range(1, 5) if evaluation.scores(n)] == scored


@pytest.mark.parametrize("privacy", [{}, SECURE], ids=["plain", "secure"])
@pytest.mark.parametrize("four", [1], indirect=True, ids=["threshold-1"])
def test_a_job_scores_every_second_round_and_its_final_model(
    state: State, four: dict[str, Site], privacy: dict[str, Any]
) -> None:
    """The real sites skip the held-out rows in rounds 1 and 3 (the orchestrator would refuse
    figures there): those rounds show no metrics; rounds 2 and 4 and the evaluation do, and
    each site's held-out rows are counted in its participation (in the clear: plain jobs)."""
    job = play(state, four, training(rounds=4, evaluation={"every": 2}, **privacy))
    assert job.status == "completed", job.error
    assert [r.kind for r in job.rounds] == ["stats", *["train"] * 4, "evaluate"]
    shown = {r.number: r for r in job.rounds}
    for number in (1, 3):
        assert shown[number].metrics == {} and shown[number].train_loss is not None
        assert shown[number].notes == [
            UNSCORED_NOTE.format(number=number, every=2)
        ]  # says why: nothing left out silently
        assert all(
            site.n_eval is None and not site.metrics for site in shown[number].sites.values()
        )
    for number in (2, 4, 5):
        assert {"accuracy", "log_loss"} <= shown[number].metrics.keys(), number
        assert not any(note.startswith("no metrics") for note in shown[number].notes)
    for name in four:
        status = job.participation.sites[name]
        assert status.state == SiteState.TOOK_PART, name
        assert bool(status.n_eval) != bool(privacy), name  # secure: in the sums only
    every = play(state, four, training(rounds=4, **privacy))
    assert all(r.metrics for r in every.rounds if r.kind != "stats")
    np.testing.assert_allclose(  # scoring changes no model: the final figures agree
        shown[5].metrics["log_loss"], every.rounds[-1].metrics["log_loss"], rtol=1e-9
    )


@pytest.mark.parametrize(
    ("every", "scored", "words"),
    [
        (None, True, "gives held-out figures; the job does not score round 1"),
        (1, False, "lacks held-out figures; the job scores round 1"),
    ],
)
def test_held_out_figures_that_do_not_fit_the_round_are_refused(
    state: State, every: int | None, scored: bool, words: str
) -> None:
    """A hostile site sends figures where none were asked (more than the job releases), or
    none where they were (its rows missing from the curve): refused, and the round closes
    with the other site."""
    spec = make_spec(rounds=1, evaluation={"every": every})
    job = state.coordinator.submit(spec, state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    ones = {k: np.ones(s, np.float32) for k, s in parameter_shapes(spec.model, 2).items()}
    status, detail = post_update(state, "alpha", take(state, "alpha"), ones, 30, scored=scored)
    assert status == "rejected" and words in detail, detail
    status, detail = post_update(state, "beta", take(state, "beta"), ones, 10, scored=not scored)
    assert status == "accepted", detail
    assert take(state, "beta").kind == "evaluate"
