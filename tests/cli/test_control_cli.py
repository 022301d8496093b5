"""The operator's and researcher's control commands at 80 columns, against a served
orchestrator: ``job cancel``, ``site disable/enable/remove``, site names at ``site add``, and
what ``job submit`` says about waiting and unseen sites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import update
from typer.testing import CliRunner

from oncofed.cli.main import app
from oncofed.orchestrator.db import Site
from tests.cli.test_cli import served  # noqa: F401 (a fixture)
from tests.support import State, in_project, make_spec

runner = CliRunner()
pytestmark = pytest.mark.parametrize("state", ["sqlite"], indirect=True)


def oncofed(served: str, state: State, *args: str) -> Any:  # noqa: F811 (the fixture's value)
    env = {"ONCOFED_URL": served, "ONCOFED_TOKEN": state.admin_token, "COLUMNS": "80"}
    return runner.invoke(app, list(args), env=env)


def spec_file(state: State, tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "job.yaml"
    spec = in_project(state, make_spec(**changes).model_dump(mode="json"))
    path.write_text(yaml.safe_dump(spec))
    return path


def submitted(result: Any) -> str:
    """The job id ``job submit`` printed (piped: alone on standard output)."""
    assert result.exit_code == 0, result.output
    return str(result.stdout.strip())


def lines(output: str) -> list[str]:
    for line in output.splitlines():
        assert len(line) <= 80, line
    return output.splitlines()


def test_job_cancel_and_a_second_cancel_is_one_line(
    served: str,  # noqa: F811
    state: State,
    tmp_path: Path,
) -> None:
    job_id = submitted(oncofed(served, state, "job", "submit", str(spec_file(state, tmp_path))))
    cancelled = oncofed(served, state, "job", "cancel", job_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert lines(cancelled.output) == [f"Job {job_id} (test-job) cancelled."]
    again = oncofed(served, state, "job", "cancel", job_id)
    assert again.exit_code == 1
    said = " ".join(again.output.split())  # one message, wrapped at 80 columns
    assert said.startswith("error: ") and said.count("error:") == 1
    assert "has ended (cancelled): only a running job is cancelled" in said
    assert "Traceback" not in again.output
    listed = oncofed(served, state, "job", "list")
    assert "cancelled" in listed.output
    lines(listed.output)


def test_site_disable_enable_and_remove(
    served: str,  # noqa: F811
    state: State,
    tmp_path: Path,
) -> None:
    job_id = submitted(oncofed(served, state, "job", "submit", str(spec_file(state, tmp_path))))
    disabled = oncofed(served, state, "site", "disable", "beta")
    assert lines(disabled.output) == ["Site beta disabled: it gets no task."]
    shown = oncofed(served, state, "site", "list")
    beta = next(line for line in lines(shown.output) if " beta " in line)
    assert "disabled" in beta
    assert lines(oncofed(served, state, "site", "enable", "beta").output) == ["Site beta enabled."]

    refused = oncofed(served, state, "site", "remove", "alpha")
    assert refused.exit_code == 1
    assert f"running task in job test-job ({job_id})" in " ".join(refused.output.split())
    assert oncofed(served, state, "job", "cancel", job_id).exit_code == 0
    removed = oncofed(served, state, "site", "remove", "alpha")
    assert lines(removed.output) == ["Site alpha removed."]
    assert " alpha " not in oncofed(served, state, "site", "list").output


@pytest.mark.parametrize("name", ["Hospital-A", "st.mary", "_north"])
def test_site_add_refuses_an_invalid_name_in_one_line(state: State, name: str) -> None:
    result = runner.invoke(
        app, ["site", "add", name, "--dir", str(state.home)], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 1
    assert f"site name {name!r} is not valid: use 1 to 63 lower-case letters" in " ".join(
        result.output.split()
    )
    assert "Traceback" not in result.output


def test_job_submit_shows_the_waits_and_warns_of_a_listed_unseen_site(
    served: str,  # noqa: F811
    state: State,
    tmp_path: Path,
) -> None:
    with state.sessions.begin() as session:
        session.execute(update(Site).where(Site.name == "beta").values(last_seen_at=None))
    spec = spec_file(state, tmp_path, sites=["alpha", "beta"], round_timeout_s=900)
    result = oncofed(served, state, "job", "submit", str(spec))
    lines(result.output)
    said = " ".join(result.output.split())
    assert "Each round waits up to 900 s (round_timeout_s) and needs 1 site (min_sites)." in said
    assert (
        "warning: beta not seen in the last 600 s (or never): each round waits for it "
        "until its deadline." in said
    )
    quiet = oncofed(served, state, "job", "submit", str(spec_file(state, tmp_path)))
    assert "warning" not in quiet.output and len(quiet.stdout.strip()) == 32
