"""Fuzzing what an enrolled site may send: for every edge-facing endpoint and message type,
boundary and out-of-range values of every numeric and list field (huge integers, negatives,
NaN and infinities as JSON spells them, wrong lengths), posted through the real app and
coordinator with two enrolled sites (SQLite and PostgreSQL). Never a 5xx: a refusal is a clear
4xx, an answer refused is recorded as that site's failure of its task, and the job goes on
with the other site. Seeded: the same values every run."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from oncofed.learning.registry import parameter_shapes
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.messages import Evaluation, TrainResult
from oncofed.wire.stream import META_KEY
from tests.support import State, auth, in_project, make_spec, sample_profile

SEED = 20261128
RAW = "\x00raw\x00"
HUGE = "1" + "0" * 400
NUMBERS: list[Any] = [
    HUGE,
    "-" + HUGE,
    "1e999",
    "-1e999",
    "NaN",
    2**63,
    2**53 + 1,
    10**12,
    -1,
    1e308,
    -1e308,
    1e-320,
    0,
    0.5,
]
"""Out-of-range and boundary values; strings are spliced into the JSON text as they are."""
RFS = {"time": "rfs_days", "event": "rfs_event"}


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every number and every list in a JSON value, with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        yield path, value
        for i, item in enumerate(value):
            yield from leaves(item, (*path, i))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, value


def replaced(body: Any, path: tuple[Any, ...], new: Any) -> str:
    """``body`` as JSON text with the value at ``path`` replaced by ``new`` (raw JSON text
    when it is a string: ``1e999``, ``NaN``, a 401-digit integer)."""
    body = copy.deepcopy(body)
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = RAW if isinstance(new, str) else new
    return json.dumps(body).replace(json.dumps(RAW), new if isinstance(new, str) else "")


def mutations(body: Any, rng: random.Random) -> Iterator[tuple[str, str]]:
    """``(what, JSON text)``: each numeric field set to a bad value (drawn in turn from a
    shuffled ``NUMBERS``), and each list emptied and made one longer."""
    values: list[Any] = []
    for path, value in leaves(body):
        name = ".".join(map(str, path))
        if isinstance(value, list):
            for new in ([], [*value, value[-1]] if value else [0]):
                yield f"{name} of {len(new)}", replaced(body, path, new)
            continue
        if not values:
            values = rng.sample(NUMBERS, len(NUMBERS))
        new = values.pop()
        yield f"{name} = {str(new)[:12]}", replaced(body, path, new)


class Edge:
    """The app as the two enrolled sites and a researcher reach it."""

    def __init__(self, api: TestClient, state: State) -> None:
        self.api, self.state = api, state

    def site(self, name: str) -> dict[str, str]:
        return {**auth(self.state.credentials[name]), "Content-Type": "application/json"}

    def submit(self, spec: dict[str, Any]) -> str:
        spec = in_project(self.state, spec)
        created = self.api.post("/jobs", json=spec, headers=auth(self.state.admin_token))
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    def task(self, site: str) -> dict[str, Any]:
        response = self.api.get("/tasks/next", params={"wait": 0}, headers=self.site(site))
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        return task

    def drain(self) -> None:
        """Both sites decline what is left of earlier jobs, which then end."""
        for site in ("alpha", "beta"):
            while True:
                polled = self.api.get("/tasks/next", params={"wait": 0}, headers=self.site(site))
                if polled.status_code == 204:
                    break
                declined = self.post(
                    f"/tasks/{polled.json()['task_id']}/decline", site, '{"reason": "done"}'
                )
                assert declined.status_code == 200, declined.text

    def post(self, path: str, site: str, body: str | bytes, **headers: str) -> Any:
        response = self.api.post(path, content=body, headers={**self.site(site), **headers})
        assert response.status_code < 500, f"{path}: {response.status_code} {response.text}"
        if response.status_code >= 400:
            assert response.json()["detail"], response.text  # a clear reason
        return response

    def job(self, job_id: str) -> dict[str, Any]:
        one = self.api.get(f"/jobs/{job_id}", headers=auth(self.state.admin_token))
        assert one.status_code == 200, one.text
        view: dict[str, Any] = one.json()
        return view


def analysis(kind: dict[str, Any]) -> dict[str, Any]:
    return AnalysisSpec.model_validate(
        {"name": "fuzz", "dataset": "gbsg2", "analysis": kind}
    ).model_dump(mode="json")


def regression(n: int) -> dict[str, Any]:
    one = {"loglik": -10.0, "gradient": [1.0], "hessian": [[-4.0]]}
    return {"type": "regression", "n": n, "events": 11, "pooled": one, "own": one}


RISK_SETS = {
    "type": "risk_sets",
    "n": 50,
    "events": [11, 0, 0],
    "s0": [50.0, 40.0, 30.0],
    "s1": [[5.0], [4.0], [3.0]],
    "s2": [[[1.0]], [[1.0]], [[1.0]]],
    "event_x": [1.0],
    "own": {"loglik": -10.0, "gradient": [1.0], "hessian": [[-4.0]]},
}
ANALYSES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "counts": (
        {"type": "counts", "rows": "sex"},
        {"type": "counts", "cells": [[20], [20], [0], [0], [0], [40]]},
    ),
    "summary": (
        {"type": "summary", "variable": "age_at_diagnosis", "bins": [0, 50, 100]},
        {
            "type": "summary",
            "n": 20,
            "total": 800.0,
            "total_squares": 34000.0,
            "histogram": [0, 10, 10, 0, 0],
        },
    ),
    "kaplan_meier": (
        {"type": "kaplan_meier", "outcome": RFS},
        {"type": "kaplan_meier", "groups": {"all": {"at_risk": [40, 20], "events": [11, 0]}}},
    ),
    "regression": (
        {"type": "cox", "outcome": RFS, "covariates": ["age_at_diagnosis"]},
        regression(30),
    ),
    "risk_sets": (
        {
            "type": "cox",
            "outcome": RFS,
            "covariates": ["age_at_diagnosis"],
            "stratified": False,
            "grid_days": 30,
            "horizon_days": 60,
        },
        RISK_SETS,
    ),
}


def answered_cleanly(edge: Edge, job_id: str) -> None:
    """The round the hostile site answered in has closed with the other site's answer, and
    the job runs on or has ended with a reason."""
    view = edge.job(job_id)
    assert view["rounds"][0]["status"] == "closed", view["rounds"][0]
    assert view["status"] != "failed" or view["error"], view
    edge.drain()


def fuzz_results(edge: Edge, rng: random.Random, spec: dict[str, Any], body: Any) -> int:
    """Each mutation of ``body`` from alpha on a fresh job of ``spec``, then beta's valid
    ``body``; returns the number of posts."""
    posts = 0
    for what, text in mutations(body, rng):
        job_id = edge.submit(spec)
        alpha, beta = edge.task("alpha"), edge.task("beta")
        response = edge.post(f"/tasks/{alpha['task_id']}/result", "alpha", text)
        assert response.status_code in (200, 422), f"{what}: {response.text}"
        edge.post(f"/tasks/{beta['task_id']}/result", "beta", json.dumps(body))
        answered_cleanly(edge, job_id)
        posts += 1
    return posts


def stats(n: int) -> dict[str, Any]:
    return {"n": n, "sums": [float(n), 2.0 * n], "sumsq": [2.0 * n, 5.0 * n]}


def through_stats(edge: Edge, spec: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A training job with its stats round done (30 and 30 rows): its id and both sites'
    training tasks."""
    job_id = edge.submit(spec)
    for site in ("alpha", "beta"):
        task = edge.task(site)
        edge.post(f"/tasks/{task['task_id']}/result", site, json.dumps(stats(30)))
    return job_id, edge.task("alpha"), edge.task("beta")


def update(meta: str) -> bytes:
    """The test model's update (ones) with the JSON text ``meta`` as its result metadata."""
    shapes = parameter_shapes(make_spec().model, 2)
    data = tensors.encode({k: np.ones(s, np.float32) for k, s in shapes.items()})
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["__metadata__"] = {META_KEY: meta}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded + data[8 + length :]


def header(task_id: str) -> dict[str, Any]:
    """A valid result header of a training update of 30 rows (10 held out)."""
    meta = TrainResult(
        task_id=task_id,
        n_train=30,
        train_loss=0.5,
        evaluation=Evaluation(n_eval=10, metrics={"auc": 0.6}),
        compute_seconds=1.0,
    )
    return json.loads(meta.model_dump_json())


def test_no_value_of_any_field_makes_a_5xx_or_a_stuck_job(api: TestClient, state: State) -> None:
    rng = random.Random(SEED)
    edge = Edge(api, state)
    posts = 0

    # stats and evaluation results of a training job
    train = make_spec(rounds=1).model_dump(mode="json")
    posts += fuzz_results(edge, rng, train, stats(30))
    evaluation = {"evaluation": {"n_eval": 10, "metrics": {"auc": 0.7}}, "compute_seconds": 1.0}
    for what, text in mutations(evaluation, rng):
        job_id, alpha, beta = through_stats(edge, train)
        for site, task in (("alpha", alpha), ("beta", beta)):
            valid = update(json.dumps(header(task["task_id"])))
            assert edge.post(f"/tasks/{task['task_id']}/update", site, valid).status_code == 200
        alpha, beta = edge.task("alpha"), edge.task("beta")
        assert alpha["kind"] == "evaluate", what
        edge.post(f"/tasks/{alpha['task_id']}/result", "alpha", text)
        edge.post(f"/tasks/{beta['task_id']}/result", "beta", json.dumps(evaluation))
        assert edge.job(job_id)["status"] == "completed", what
        edge.drain()
        posts += 1

    # a training update's result header
    for what, text in mutations(header("-"), rng):
        job_id, alpha, beta = through_stats(edge, train)
        meta = text.replace('"task_id": "-"', f'"task_id": "{alpha["task_id"]}"')
        response = edge.post(f"/tasks/{alpha['task_id']}/update", "alpha", update(meta))
        assert response.status_code in (200, 422), f"{what}: {response.text}"
        valid = update(json.dumps(header(beta["task_id"])))
        edge.post(f"/tasks/{beta['task_id']}/update", "beta", valid)
        answered_cleanly(edge, job_id)
        posts += 1

    # every part of every analysis
    for spec, part in ANALYSES.values():
        body = {"part": part, "cohort": 50, "compute_seconds": 1.0}
        posts += fuzz_results(edge, rng, analysis(spec), body)

    # profiles, enrolment, identity, declines and the secure endpoints of a plain task
    profile = json.loads(sample_profile("data").model_dump_json())
    for what, text in mutations(profile, rng):
        response = edge.api.put("/profiles/data", content=text, headers=edge.site("alpha"))
        assert response.status_code in (204, 422), f"{what}: {response.text}"
        posts += 1
    job_id = edge.submit(train)
    task = edge.task("alpha")
    for path in ("secure/keys", "secure/shares", "secure/unmask", "decline", "result"):
        for text in (
            HUGE,
            "1e999",
            "NaN",
            "[]",
            "{}",
            '{"sender": ' + HUGE + "}",
            '{"reason": "x", "failed": ' + HUGE + "}",
        ):
            edge.post(f"/tasks/{task['task_id']}/{path}", "alpha", text)
            posts += 1
    for text in ('{"token": ' + HUGE + "}", '{"token": "' + "x" * 10**5 + '"}', "1e999"):
        refused = edge.api.post("/enrol", content=text).status_code
        assert refused == (413 if len(text) > 64 << 10 else 422)  # over the body limit: 413
        put = edge.api.put("/identity", content=text, headers=edge.site("beta"))
        assert put.status_code == 422, put.text
    for wait in ("1e999", "-1", HUGE, "NaN"):
        polled = edge.api.get("/tasks/next", params={"wait": wait}, headers=edge.site("beta"))
        assert polled.status_code == 422, polled.text
    listing = edge.api.get("/jobs", params={"limit": 1000}, headers=auth(state.admin_token))
    assert listing.status_code == 200 and len(listing.json()) > 100  # every job lists
    assert posts > 150
