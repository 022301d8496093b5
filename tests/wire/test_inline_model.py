"""A global model handed with its task (``TaskAssignment.model``): base64 text of at most
``INLINE_MODEL_BYTES`` bytes, which must be the model ``model_sha256`` names; the task's content
hash (what the edge's ledger compares when a task comes again) is the same with it or
without."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from pydantic import ValidationError

from oncofed.edge.guard import content_sha256
from oncofed.wire.messages import INLINE_MODEL_BYTES, TaskAssignment
from tests.support import make_spec

MODEL = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256))


def task(model: bytes | None = MODEL, sha: str | None = None) -> TaskAssignment:
    return TaskAssignment(
        task_id="t1",
        job_id="j1",
        round=1,
        kind="train",
        spec=make_spec(),
        model_sha256=sha or hashlib.sha256(MODEL).hexdigest(),
        model=model,
    )


def test_an_inline_model_travels_as_base64_text_and_back() -> None:
    text = task().model_dump_json()
    assert json.loads(text)["model"] == base64.b64encode(MODEL).decode()
    assert "\\n" not in text
    assert TaskAssignment.model_validate_json(text).model == MODEL


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"model_sha256": "0" * 64}, "its SHA-256 is not model_sha256"),
        ({"model_sha256": None}, "its SHA-256 is not model_sha256"),
        ({"model": base64.encodebytes(MODEL).decode()}, "not standard base64"),
        ({"model": "not base64!"}, "not standard base64"),
        ({"model": 12}, "expected base64 text"),
    ],
    ids=["another-model", "no-hash", "newlines", "not-base64", "a-number"],
)
def test_an_inline_model_that_is_not_the_named_one_is_refused(
    change: dict[str, object], words: str
) -> None:
    content = {**json.loads(task().model_dump_json()), **change}
    with pytest.raises(ValidationError, match=words):
        TaskAssignment.model_validate_json(json.dumps(content))


def test_an_inline_model_holds_at_most_its_limit() -> None:
    big = bytes(INLINE_MODEL_BYTES + 1)
    content = json.loads(task(model=None).model_dump_json())
    content |= {
        "model": base64.b64encode(big).decode(),
        "model_sha256": hashlib.sha256(big).hexdigest(),
    }
    with pytest.raises(ValidationError, match=f"at most {INLINE_MODEL_BYTES} bytes"):
        TaskAssignment.model_validate_json(json.dumps(content))
    most = bytes(INLINE_MODEL_BYTES)
    content |= {
        "model": base64.b64encode(most).decode(),
        "model_sha256": hashlib.sha256(most).hexdigest(),
    }
    assert TaskAssignment.model_validate_json(json.dumps(content)).model == most


def test_the_content_hash_of_a_task_is_the_same_with_its_model_inline_or_not() -> None:
    assert content_sha256(task()) == content_sha256(task(model=None))
    assert content_sha256(task()) != content_sha256(task(model=None, sha="1" * 64))
