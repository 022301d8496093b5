"""Output for any terminal, a pipe and a script, against a served orchestrator: tables fit 80
columns and cut nothing, ids are short in tables and whole in ``--json``, ``job list`` filters,
``job show``, ``job watch`` events piped and as JSON lines, and a job id's unique start
taken wherever a job id is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from oncofed.cli.main import app
from oncofed.edge import LocalStore
from oncofed.wire.messages import JobPublic
from tests.cli.test_cli import FIVE_YEARS, served  # noqa: F401 (a fixture)
from tests.cli.test_control_cli import spec_file
from tests.orchestrator.test_analysis import (  # noqa: F401 (stores: a fixture)
    COVARIATES,
    run,
    spec,
    stores,
)
from tests.support import State

runner = CliRunner()
pytestmark = pytest.mark.parametrize("state", ["sqlite"], indirect=True)
LOGISTIC = {"type": "logistic", "outcome": FIVE_YEARS, "covariates": COVARIATES}
COUNTS = {"type": "counts", "rows": "grade"}


def oncofed(served: str, state: State, *args: str) -> Any:  # noqa: F811 (the fixture's value)
    env = {"ONCOFED_URL": served, "ONCOFED_TOKEN": state.admin_token, "COLUMNS": "80"}
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result


def shown(output: str) -> list[str]:
    """The lines of a readable output: none wider than 80 columns, nothing cut with ``…``."""
    lines = output.splitlines()
    assert all(len(line) <= 80 for line in lines), output
    assert "…" not in output
    return lines


def two_jobs(
    state: State,
    stores: dict[str, LocalStore],  # noqa: F811
) -> tuple[JobPublic, JobPublic]:
    """A logistic regression (Newton rounds) and a counts table, both completed."""
    newton = run(state, stores, spec(LOGISTIC, name="logistic-five-years"))
    counts = run(state, stores, spec(COUNTS, name="grade-counts"))
    assert newton.status == counts.status == "completed"
    return newton, counts


def test_job_list_and_show_fit_80_columns_with_short_ids_and_json_has_them_whole(
    served: str,  # noqa: F811
    state: State,
    stores: dict[str, LocalStore],  # noqa: F811
) -> None:
    newton, counts = two_jobs(state, stores)
    listed = shown(oncofed(served, state, "job", "list").output)
    newton_row = next(line for line in listed if "logistic-five-years" in line)
    rounds = sum(1 for r in newton.rounds if r.status == "closed")
    assert newton.id[:8] in newton_row and f"{rounds}/{rounds}" in newton_row and rounds > 1
    counts_row = next(line for line in listed if "grade-counts" in line)
    assert counts.id[:8] in counts_row and "1/1" in counts_row
    assert newton.id not in "\n".join(listed)

    document = json.loads(oncofed(served, state, "job", "list", "--json").stdout)
    assert [job["id"] for job in document] == [newton.id, counts.id]
    assert {"name", "runs", "status", "rounds_closed", "rounds_planned", "sites"} <= set(
        document[0]
    )
    assert document[0]["rounds_closed"] == rounds and document[0]["rounds_planned"] is None

    view = shown(oncofed(served, state, "job", "show", newton.id[:8]).output)
    said = "\n".join(view)
    assert newton.id in said and "analysis: logistic" in said and "completed" in said
    assert "took part" in said and f"{rounds}/{rounds}" in said
    record = json.loads(oncofed(served, state, "job", "show", "--json", counts.id[:6]).stdout)
    assert record["id"] == counts.id and record["status"] == "completed"
    assert {"rounds", "sites", "spec", "participation"} <= set(record)
    assert record["spec"]["analysis"]["type"] == "counts"


def test_job_list_filters_by_status_and_name(
    served: str,  # noqa: F811
    state: State,
    tmp_path: Path,
) -> None:
    first = oncofed(served, state, "job", "submit", str(spec_file(state, tmp_path))).stdout
    oncofed(served, state, "job", "cancel", first.strip())
    oncofed(served, state, "job", "submit", str(spec_file(state, tmp_path, name="other-job")))

    def names(*args: str) -> list[str]:
        found = json.loads(oncofed(served, state, "job", "list", "--json", *args).stdout)
        return [job["name"] for job in found]

    assert names() == ["test-job", "other-job"]
    assert names("--status", "running") == ["other-job"]
    assert names("--status", "cancelled,running") == ["test-job", "other-job"]
    assert names("--status", "cancelled", "--status", "failed") == ["test-job"]
    assert names("--name", "other") == ["other-job"]
    assert names("--name", "job", "--status", "completed") == []
    wrong = runner.invoke(app, ["job", "list", "--status", "done"], env={"COLUMNS": "80"})
    assert wrong.exit_code == 2 and "'done' is not one of running" in " ".join(wrong.output.split())


def test_job_submit_piped_prints_the_id_alone(
    served: str,  # noqa: F811
    state: State,
    tmp_path: Path,
) -> None:
    result = oncofed(served, state, "job", "submit", str(spec_file(state, tmp_path)))
    job_id = result.stdout.strip()
    assert result.stdout == f"{job_id}\n" and len(job_id) == 32
    assert "Each round waits up to" in result.stderr  # for the person, not the script


def test_job_watch_streams_events_piped_and_as_json_lines(
    served: str,  # noqa: F811
    state: State,
    stores: dict[str, LocalStore],  # noqa: F811
) -> None:
    newton, _ = two_jobs(state, stores)
    streamed = oncofed(served, state, "job", "watch", "--json", newton.id[:8]).stdout
    events = [json.loads(line) for line in streamed.splitlines()]
    assert events[-1] == {"event": "ended", "job": newton.id, "status": "completed"}
    kinds = [event["event"] for event in events]
    assert kinds[0] == "round_opened" and kinds.count("round_opened") == len(newton.rounds)
    assert kinds.count("round_closed") == len(newton.rounds)
    answered = [event for event in events if event["event"] == "site_answered"]
    assert {event["site"] for event in answered} == {"alpha", "beta"}
    assert all(event["status"] == "accepted" for event in answered)

    lines = shown(oncofed(served, state, "job", "watch", newton.id).stdout)
    assert lines[0] == "round 0 (analysis) opened"
    assert "round 0 (analysis) alpha: accepted" in lines
    assert any(line.startswith("round 0 (analysis) closed") for line in lines)
    assert f"job {newton.id} completed" in lines
    assert any("took part" in line for line in lines)  # then the final view


def test_a_job_ids_start_is_taken_when_unique(
    served: str,  # noqa: F811
    state: State,
    stores: dict[str, LocalStore],  # noqa: F811
    tmp_path: Path,
) -> None:
    """17 jobs: two of them share a first hex digit, which then names both."""
    done = run(state, stores, spec(COUNTS, name="grade-counts"))
    ids = [done.id] + [
        state.coordinator.submit(spec(COUNTS, name=f"job-{n}"), state.admin_id).id
        for n in range(16)
    ]
    result = oncofed(
        served, state, "job", "result", done.id[:8], "--out", str(tmp_path), "--json"
    ).stdout
    document = json.loads(result)
    assert document["id"] == done.id and document["report"]["name"] == "grade-counts"
    assert str(tmp_path / "report.json") in document["written"]

    env = {"ONCOFED_URL": served, "ONCOFED_TOKEN": state.admin_token, "COLUMNS": "80"}
    digit = next(d for d in "0123456789abcdef" if sum(i.startswith(d) for i in ids) > 1)
    ambiguous = runner.invoke(app, ["job", "show", digit], env=env)
    assert ambiguous.exit_code == 1
    said = " ".join(ambiguous.output.split())
    assert said.startswith(f"error: job id '{digit}' is ambiguous: ")
    assert said.count("error:") == 1 and "Traceback" not in said
    named = [i for i in ids if i.startswith(digit)][:2]
    assert all(i in said for i in named)
    missing = runner.invoke(app, ["job", "cancel", "xyz"], env=env)
    assert missing.exit_code == 1
    assert " ".join(missing.output.split()) == (
        "error: no job id starts with 'xyz' (see 'oncofed job list')"
    )
    routed = "../../sites/alpha/disable" + "0" * 7  # as long as an id: never a URL path
    refused = runner.invoke(app, ["job", "cancel", routed], env=env)
    assert refused.exit_code == 1 and "no job id starts with" in refused.output


def test_every_listing_fits_80_columns_and_sites_list_as_json(
    served: str,  # noqa: F811
    state: State,
) -> None:
    for command in (
        ["site", "list"],
        ["token", "list"],
        ["person", "list"],
        ["project", "list"],
        ["job", "list"],
    ):
        shown(oncofed(served, state, *command).output)
    sites = json.loads(oncofed(served, state, "site", "list", "--json").stdout)
    assert {site["name"] for site in sites} == {"alpha", "beta"}
    assert {"enrolled", "connected", "last_seen", "key_fingerprint"} <= set(sites[0])
