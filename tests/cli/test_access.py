"""``oncofed token`` and ``oncofed person`` against a served orchestrator: tokens listed,
created and revoked, people added; plain output that fits 80 columns when piped."""

from __future__ import annotations

from typer.testing import CliRunner

from oncofed.cli.main import app
from tests.cli.test_cli import served  # noqa: F401 (a fixture)
from tests.support import State

runner = CliRunner()


def oncofed(url: str, token: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(
        app, list(args), env={"ONCOFED_URL": url, "ONCOFED_TOKEN": token, "COLUMNS": "80"}
    )
    return result.exit_code, result.stdout, result.stderr


def test_people_and_tokens_from_the_command_line(served: str, state: State) -> None:  # noqa: F811
    code, out, err = oncofed(served, state.admin_token, "person", "add", "rita", "--days", "30")
    assert code == 0 and out.startswith("ofres_") and "shown once" in err
    rita = out.strip()
    code, out, _ = oncofed(
        served, state.admin_token, "person", "add", "ada", "--role", "site_admin", "--site", "alpha"
    )
    assert code == 0
    code, out, _ = oncofed(served, rita, "token", "create", "--label", "laptop")
    laptop = out.strip()
    assert code == 0 and laptop.startswith("ofres_") and laptop != rita

    code, out, _ = oncofed(served, rita, "token", "list")
    assert code == 0 and "laptop" in out and "operator" not in out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "\x1b" not in out
    code, out, _ = oncofed(served, state.admin_token, "token", "list")
    assert {"operator", "rita", "ada"} <= set(out.split())

    row = next(line for line in out.splitlines() if "laptop" in line)
    token_id = row.split()[3]  # │ rita │ 3 │ active │ ...
    code, out, _ = oncofed(served, rita, "token", "revoke", token_id)
    assert code == 0 and "revoked" in out
    code, out, err = oncofed(served, laptop, "token", "list")
    assert code == 1 and "revoked" in out + err
    code, out, _ = oncofed(served, state.admin_token, "person", "list")
    assert code == 0 and "site_admin" in out and "alpha" in out


def test_a_researcher_cannot_add_people(served: str, state: State) -> None:  # noqa: F811
    _, rita, _ = oncofed(served, state.admin_token, "person", "add", "rita")
    code, out, err = oncofed(served, rita.strip(), "person", "add", "mallory")
    assert code == 1 and "operator" in out + err and "Traceback" not in out + err
