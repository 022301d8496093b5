"""The CLI starts fast: its help and the researcher's commands import neither the server
(FastAPI, SQLAlchemy, uvicorn) nor the learning and analysis stack (torch, scipy, pandas,
matplotlib): each command imports what it needs when it runs. Checked by what a fresh
interpreter imports, not by time (``bench/cli_startup.py`` times it)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from oncofed.cli import _common, job
from oncofed.wire.access import Role
from oncofed.wire.messages import JobStatus

HEAVY = (
    "torch",
    "opacus",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "scipy",
    "pandas",
    "duckdb",
    "pyarrow",
    "matplotlib",
    "lifelines",
    "sklearn",
    "statsmodels",
    "safetensors",
    "oncofed.orchestrator.app",
    "oncofed.learning",
    "oncofed.analytics",
    "oncofed.audit",
)
"""Imported neither to show help nor by a researcher's command calling the API, at least until
the orchestrator answers (a result is then written with matplotlib, a model read with scipy)."""
CLIENT = ("numpy", "httpx", "cryptography", "oncofed.wire", "oncofed.client._client")
"""What calling the API needs (the wire's models, the HTTP client): not imported for help."""
UNREACHABLE = "http://127.0.0.1:1"  # refused at once: nothing listens on port 1

SHOW_EVERY_HELP = """
import typer
from typer.testing import CliRunner

from oncofed.cli.main import app

def walk(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, [*path, name])

for path in walk(typer.main.get_command(app), []):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output, (path, result.output)
"""
"""Every command's ``--help``, the root's and each group's included."""


def imported(args: list[str]) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run ``python -X importtime ARGS`` in a fresh interpreter: the process, and each module
    it imported with the oncofed modules through which it was (the culprits), outermost
    first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONCOFED_")}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    rows = [line.split("|")[-1] for line in done.stderr.splitlines() if line.startswith("import")]
    tree = [(len(row) - len(row.lstrip()), row.strip()) for row in rows]
    through: dict[str, str] = {}
    for at, (depth, name) in enumerate(tree):  # a module's importers follow it, less indented
        chain = []
        for above, parent in tree[at + 1 :]:
            if above < depth:
                depth = above
                if parent.startswith("oncofed"):
                    chain.insert(0, parent)
        through[name] = " > ".join(chain)
    return done, through


def loaded(modules: dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """Those of ``names`` that were imported (a package is, with any module of it), each with
    its culprits."""
    return {name: modules[name] for name in names if name in modules}


def test_every_help_imports_no_server_learning_or_client_module() -> None:
    done, modules = imported(["-c", SHOW_EVERY_HELP])
    assert done.returncode == 0, done.stderr[-2000:]
    assert loaded(modules, HEAVY + CLIENT) == {}


@pytest.mark.parametrize(
    "args",
    [
        ["job", "list"],
        ["job", "show", "0123abcd"],
        ["job", "watch", "0123abcd"],
        ["job", "result", "0123abcd", "--out", "{out}"],
        ["site", "list"],
        ["project", "list"],
        ["token", "list"],
    ],
    ids=" ".join,
)
def test_a_researcher_command_imports_no_server_or_learning_module(
    args: list[str], tmp_path: Path
) -> None:
    """Run against an orchestrator that refuses the connection: the client is imported, and
    nothing of the server's, nor torch, scipy or matplotlib."""
    options = ["--url", UNREACHABLE, "--token", "t" * 32]
    filled = [arg.format(out=tmp_path / "result") for arg in args]
    done, modules = imported(["-m", "oncofed", *filled, *options])
    assert done.returncode == 1 and "cannot reach the orchestrator" in done.stderr, done.stderr
    assert loaded(modules, HEAVY) == {}
    assert "httpx" in modules  # it did call the API


def test_the_choices_spelled_out_for_the_help_are_the_wires() -> None:
    """``Role`` and the job statuses, written in the CLI so that its help imports no model."""
    assert get_args(_common.Role) == get_args(Role)
    assert get_args(JobStatus) == job.STATUSES


@pytest.mark.parametrize("name", sorted(_common.USER_ERRORS))
def test_every_user_error_named_is_an_exception_class(name: str) -> None:
    """``USER_ERRORS`` names classes rather than importing them: each name is one."""
    module, _, qualname = name.rpartition(".")
    cls = getattr(importlib.import_module(module), qualname)
    assert issubclass(cls, Exception) and f"{cls.__module__}.{cls.__qualname__}" == name
