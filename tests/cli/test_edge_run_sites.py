"""``oncofed edge run`` given several ``--dir``: what stops it from starting, each said in one
line naming the directory at fault. ``tests/edge/test_host_process.py`` runs it for real."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oncofed._files import exclusive
from oncofed.cli.main import app
from oncofed.edge import EdgeConfig, EdgeHome

runner = CliRunner()
ENV = {"COLUMNS": "400"}  # one line each, whatever the paths' lengths


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """``edge run`` sets the root logger up to write to its standard error, which the runner
    closes when the command ends: put back what was there, for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def sites(tmp_path: Path) -> list[Path]:
    """Two enrolled edge directories (of an orchestrator that is never called)."""
    folders = []
    for site in ("north", "south"):
        home = EdgeHome(tmp_path / site)
        config = {"orchestrator": "http://127.0.0.1:1", "site": site}
        home.create(EdgeConfig.model_validate(config), f"credential-of-{site}")
        folders.append(home.root)
    return folders


def run(*dirs: Path) -> tuple[int, str]:
    args = ["edge", "run", "--poll-seconds", "0.1"]
    for folder in dirs:
        args += ["--dir", str(folder)]
    result = runner.invoke(app, args, env=ENV)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, " ".join(result.output.split())


def test_a_directory_given_twice(sites: list[Path]) -> None:
    north, _ = sites
    code, said = run(north, north)
    assert code == 1
    assert said == f"error: edge directory {north} is given twice: give each site once"
    code, said = run(north, north.parent / "." / "north")
    assert code == 1 and "is given twice" in said


def test_a_directory_without_its_credential_names_it(sites: list[Path]) -> None:
    north, south = sites
    (south / "credential").unlink()
    code, said = run(north, south)
    assert code == 1
    assert said.endswith(  # after the log of the ledgers' creation
        "error: 1 of the 2 edge directories cannot be served; nothing started: "
        f"{south}: {south / 'credential'} is missing: run 'oncofed edge init --dir {south}' first"
    )


def test_two_directories_of_one_site(sites: list[Path], tmp_path: Path) -> None:
    north, _ = sites
    copy = tmp_path / "copy"
    config = {"orchestrator": "http://127.0.0.1:1", "site": "north"}
    EdgeHome(copy).create(EdgeConfig.model_validate(config), "c")
    code, said = run(north, copy)
    assert code == 1 and f"{copy}: enrolled as site north, as {north} is" in said


def test_a_site_served_by_another_process(sites: list[Path]) -> None:
    north, south = sites
    with exclusive(south, "oncofed edge run"):  # as another process holds it
        code, said = run(north, south)
    assert code == 1
    assert said.startswith(f"error: {south} is in use by another oncofed edge run (process ")


@pytest.mark.parametrize("mistake", ["missing", "empty"])
def test_a_directory_that_edge_init_did_not_make(
    sites: list[Path], tmp_path: Path, mistake: str
) -> None:
    north, _ = sites
    other = tmp_path / mistake
    if mistake == "empty":
        other.mkdir()
    code, said = run(north, other)
    assert code == 1 and str(other) in said and "oncofed edge init" in said
