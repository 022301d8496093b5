"""A job's spec read with a task is validated once per process for each distinct text
(``SpecsSeen``): the tasks of a job share one frozen spec; a spec that differs anywhere, even
after one like it was kept, is validated anew, and one that fails is refused every time."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from oncofed.wire.messages import SpecsSeen, TaskAssignment
from oncofed.wire.spec import JobSpec
from tests.support import make_spec


def task_json(number: int, spec: Any = None) -> str:
    """A statistics task of job j1 as the orchestrator sends it (its spec as JSON)."""
    content = {"task_id": f"t{number}", "job_id": "j1", "round": number, "kind": "stats"}
    spec_json = make_spec().model_dump(mode="json") if spec is None else spec
    return json.dumps({**content, "spec": spec_json})


def test_the_tasks_of_a_job_share_one_spec_validated_once() -> None:
    first = TaskAssignment.model_validate_json(task_json(1))
    second = TaskAssignment.model_validate_json(task_json(2))
    assert second.spec is first.spec and second.task_id == "t2"
    assert first.spec == make_spec()


def test_a_spec_that_differs_anywhere_is_validated_anew() -> None:
    kept = TaskAssignment.model_validate_json(task_json(1)).spec
    changed = {**make_spec().model_dump(mode="json"), "seed": 8}
    other = TaskAssignment.model_validate_json(task_json(2, changed)).spec
    assert other is not kept and isinstance(other, JobSpec) and other.seed == 8


def test_a_spec_like_a_kept_one_but_invalid_is_refused_every_time() -> None:
    """A hostile orchestrator's spec one field away from a valid one the process kept: a
    feature the data model has no such field for."""
    TaskAssignment.model_validate_json(task_json(1))
    spec = make_spec().model_dump(mode="json")
    spec["features"] = [*spec["features"], {"name": "patient_name"}]
    for number in (2, 3):
        with pytest.raises(ValidationError, match="patient_name"):
            TaskAssignment.model_validate_json(task_json(number, spec))


def test_a_process_keeps_the_most_recent_specs_read_from_json_only() -> None:
    seen = SpecsSeen(kept=2)
    json_mode, python_mode = SimpleNamespace(mode="json"), SimpleNamespace(mode="python")
    specs = [{**make_spec().model_dump(mode="json"), "seed": n} for n in range(3)]

    def read(spec: dict[str, Any], info: SimpleNamespace = json_mode) -> object:
        return seen(spec, JobSpec.model_validate, info)  # type: ignore[arg-type]

    first = [read(spec) for spec in specs]
    assert read(specs[2]) is first[2] and read(specs[1]) is first[1]
    assert read(specs[0]) is not first[0]  # pushed out by the two read after it
    assert read(specs[1], python_mode) is not read(specs[1], python_mode)
