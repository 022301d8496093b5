"""Every ``report.json`` says where it comes from, and the Python client writes any job's
whole result, a training job's or an analysis's, in one call."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

import oncofed
from oncofed.audit import sha256_of
from oncofed.client import Client, ClientError, load_model, load_spec, write_job
from oncofed.wire.messages import API_PREFIX, JobPublic
from tests.client.test_analysis_output import KM
from tests.client.test_load_model import DEMO_JOBS, finished_training, patients

PROVENANCE = {
    "job_id", "job_name", "kind", "status", "error", "spec", "spec_sha256", "project", "dataset",
    "sites", "started_at", "ended_at", "oncofed_version",
}  # fmt: skip


def analysis_job() -> JobPublic:
    """The demo's Kaplan-Meier analysis, completed, with its report."""
    job, _ = finished_training()
    spec = load_spec(DEMO_JOBS / "gbsg2_km_grade.yaml").model_dump(mode="json")
    return JobPublic.model_validate(
        {**job.model_dump(mode="json", exclude={"standardization", "model_sha256"}),
         "id": "b" * 32, "name": spec["name"], "spec": spec, "model_sha256": None,
         "report": KM.model_dump(mode="json")}
    )  # fmt: skip


def _check(provenance: dict[str, object], job: JobPublic) -> None:
    assert provenance.keys() == PROVENANCE
    spec = job.spec.model_dump(mode="json")
    assert provenance["spec"] == spec and provenance["spec_sha256"] == sha256_of(spec)
    assert (provenance["job_id"], provenance["job_name"]) == (job.id, job.name)
    assert provenance["dataset"] == "gbsg2" and provenance["project"] == "gbsg2-study"
    assert provenance["sites"] == {"north": "took_part", "south": "declined"}
    assert provenance["started_at"] == datetime(2026, 12, 1, 9, tzinfo=UTC).isoformat()
    assert provenance["ended_at"] == datetime(2026, 12, 1, 9, 5, tzinfo=UTC).isoformat()
    assert provenance["oncofed_version"] == oncofed.__version__


def test_a_training_report_carries_its_provenance(tmp_path: Path) -> None:
    job, model = finished_training()
    paths = write_job(job, tmp_path, model)
    report = json.loads((tmp_path / "report.json").read_text())
    _check(report["provenance"], job)
    assert report["provenance"]["kind"] == "train"
    assert [p.name for p in paths] == ["model.safetensors", "report.json", "metrics.png"]


def test_an_analysis_report_carries_its_provenance(tmp_path: Path) -> None:
    job = analysis_job()
    write_job(job, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    _check(report["provenance"], job)
    assert report["provenance"]["kind"] == "analysis"


def _served(jobs: dict[str, tuple[JobPublic, bytes | None]]) -> httpx.MockTransport:
    """An orchestrator answering for ``jobs``: each one's record and model."""

    def answer(request: httpx.Request) -> httpx.Response:
        job_id, _, rest = request.url.path.removeprefix(f"{API_PREFIX}/jobs/").partition("/")
        job, model = jobs[job_id]
        if rest == "model" and model is not None:
            return httpx.Response(200, content=model)
        if rest == "":
            return httpx.Response(200, content=job.model_dump_json())
        return httpx.Response(404, json={"detail": "no model"})

    return httpx.MockTransport(answer)


def test_the_client_downloads_any_jobs_result(tmp_path: Path) -> None:
    training, model = finished_training()
    analysis = analysis_job()
    jobs = {training.id: (training, model), analysis.id: (analysis, None)}
    with Client("http://orchestrator", "ofres_token", transport=_served(jobs)) as api:
        trained = api.download_result(training.id, tmp_path / "training")
        studied = api.download_result(analysis.id, str(tmp_path / "analysis"))
    assert trained == [tmp_path / "training" / n for n in
                       ("model.safetensors", "report.json", "metrics.png")]  # fmt: skip
    risk = load_model(trained[0]).predict(patients())
    assert risk.shape == (4,) and np.isfinite(risk).all()
    assert [p.name for p in studied] == [
        "report.json", "survival.csv", "logrank.csv", "kaplan_meier.png",
    ]  # fmt: skip
    assert (tmp_path / "analysis" / "survival.csv").read_text().startswith("group,")


def test_a_job_without_a_result_is_refused(tmp_path: Path) -> None:
    job, model = finished_training()
    early = job.model_copy(update={"standardization": None, "status": "failed"})
    api = Client("http://orchestrator", "t", transport=_served({job.id: (early, model)}))
    with api, pytest.raises(ClientError, match=r"is failed: a training job's model is written"):
        api.download_result(job.id, tmp_path)
    assert not tmp_path.joinpath("model.safetensors").exists()
