"""``edge init`` keeps an enrolment unless told to replace it (``--force``, which names the
enrolment it replaces), and ``edge run`` and ``orchestrator serve`` run one at a time on a
directory (an ``flock`` held for the process's life)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from oncofed._files import exclusive
from oncofed.cli.main import app
from oncofed.edge import EdgeConfig, EdgeHome
from oncofed.orchestrator import identity
from oncofed.orchestrator.setup import transaction
from tests.cli.test_cli import served  # noqa: F401 (a fixture)
from tests.support import State

runner = CliRunner()


def _init(edge: Path, url: str, token: str, *more: str) -> tuple[int, str]:
    args = ["edge", "init", "--dir", str(edge), "--orchestrator", url, "--token", token]
    result = runner.invoke(app, [*args, *more], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_init_refuses_an_enrolled_directory_unless_forced(
    served: str,  # noqa: F811
    state: State,
    tmp_path: Path,
) -> None:
    edge = tmp_path / "edge"
    EdgeHome(edge).create(EdgeConfig.model_validate({"orchestrator": served, "site": "old"}), "c")
    with transaction(state.home) as session:
        token = identity.create_site(session, "gamma").enrolment_token
    code, said = _init(edge, served, token)
    assert code == 1 and said.startswith(f"error: {edge} is enrolled already, as site old"), said
    assert "--force" in said and said.count("error:") == 1
    assert (edge / "credential").read_text() == "c"
    code, said = _init(edge, served, token, "--force")
    assert code == 0, said
    assert said.startswith(f"Replaced the credential of site old of {served}/."), said
    assert EdgeHome(edge).config().site == "gamma" and EdgeHome(edge).credential() != "c"
    (edge / "edge.json").write_text("{broken")  # --force repairs what cannot be read
    with transaction(state.home) as session:
        token = identity.create_site(session, "delta").enrolment_token
    code, said = _init(edge, served, token)
    assert code == 1 and "as a site whose edge.json cannot be read: give --force" in said, said
    with exclusive(edge, "test"):  # a running edge holds the directory
        code, said = _init(edge, served, token, "--force")
    assert code == 1 and "is in use by another oncofed edge process" in said, said
    code, said = _init(edge, served, token, "--force")
    assert code == 0 and said.startswith("Replaced the credential of a site whose edge.json")
    assert EdgeHome(edge).config().site == "delta"


def test_a_second_agent_or_orchestrator_on_a_directory_is_refused(
    state: State, tmp_path: Path
) -> None:
    edge = tmp_path / "edge"
    EdgeHome(edge).create(EdgeConfig.model_validate({"orchestrator": "http://x", "site": "a"}), "c")
    for args, home in (
        (["edge", "run"], edge),
        (["orchestrator", "serve", "--plain-http", "--port", "1"], state.home),
    ):
        with exclusive(home, "test"):  # the first copy, here as this process
            result = runner.invoke(app, [*args, "--dir", str(home)], env={"COLUMNS": "200"})
        assert result.exit_code == 1, result.output
        assert result.stderr.count("error:") == 1 and "Traceback" not in result.output
        said = " ".join(result.stderr.split())
        assert said.startswith(f"error: {home} is in use by another oncofed {args[0]}"), said


def test_a_lock_is_released_with_its_holder(tmp_path: Path) -> None:
    with exclusive(tmp_path, "test"):
        pass
    with exclusive(tmp_path, "test"):  # taken again: nothing was left behind
        assert (tmp_path / ".lock").read_text().strip().isdigit()
