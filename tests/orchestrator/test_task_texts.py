"""The edge routes write a task with its spec and inline model made once a round
(``routes.edge._TaskTexts``): the text must read as the one pydantic writes for the task."""

from __future__ import annotations

import hashlib
import json

from oncofed.orchestrator.routes.edge import _ack, _TaskTexts
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.messages import ResultAck, TaskAssignment
from tests.orchestrator.test_analysis import RFS, spec
from tests.orchestrator.test_rounds import make_spec, take, through_stats, weights_like
from tests.support import State


def _reads_as_pydantic_writes(text: str, task: TaskAssignment) -> None:
    assert json.loads(text) == json.loads(task.model_dump_json())
    assert TaskAssignment.model_validate_json(text) == task


def test_a_rounds_tasks_read_as_the_tasks_pydantic_writes(state: State) -> None:
    texts = _TaskTexts()
    job = state.coordinator.submit(make_spec(rounds=2), state.admin_id)
    for site in ("alpha", "beta"):
        task = take(state, site)
        assert task.model is None and task.pooled is None  # a statistics task
        _reads_as_pydantic_writes(texts(task), task)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    for site in ("alpha", "beta"):  # the second written from what the first made
        task = take(state, site)
        assert task.model is not None and task.pooled is not None
        _reads_as_pydantic_writes(texts(task), task)
        ack = ResultAck(task_id="earlier", status="accepted", next_task=task)  # handed with it
        assert json.loads(bytes(_ack(ack).body)) == json.loads(ack.model_dump_json())


def test_an_analysis_task_with_its_coefficients_reads_as_pydantic_writes_it(state: State) -> None:
    job = spec({"type": "cox", "outcome": RFS, "covariates": ["age_at_diagnosis"]})
    state.coordinator.submit(job, state.admin_id)
    task = take(state, "beta")
    assert isinstance(task.spec, AnalysisSpec) and task.params is not None
    _reads_as_pydantic_writes(_TaskTexts()(task), task)


def test_a_task_with_another_spec_or_model_is_written_with_its_own(state: State) -> None:
    texts = _TaskTexts()
    job = state.coordinator.submit(make_spec(rounds=2), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    task = take(state, "alpha")
    texts(task)
    other_spec = task.model_copy(update={"spec": make_spec(rounds=3)})
    _reads_as_pydantic_writes(texts(other_spec), other_spec)
    model = tensors.encode(weights_like(2.0))
    other_model = task.model_copy(
        update={"model": model, "model_sha256": hashlib.sha256(model).hexdigest()}
    )
    _reads_as_pydantic_writes(texts(other_model), other_model)
    _reads_as_pydantic_writes(texts(task), task)  # and the first's again
