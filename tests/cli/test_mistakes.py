"""Every command, given the mistakes people make (nothing, a folder that is missing or empty or
a file, an orchestrator that does not answer, a token that is not one, a malformed YAML file,
an option that does not exist), answers with one line saying what is wrong and exit code 1
(2 for usage errors), never a traceback. The commands are found by walking the CLI's tree, so
a new command is covered as soon as it is added."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperArgument
from typer.testing import CliRunner

from oncofed.cli.main import app

UNREACHABLE = "http://127.0.0.1:1"  # refused at once: nothing listens on port 1
BAD_TOKEN = "not-a-token"
WIDTH = "80"


def commands() -> Iterator[tuple[list[str], Any]]:
    """Every command that runs something (``oncofed demo`` is a group that does too), with
    its path of names."""

    def walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        subcommands = getattr(command, "commands", None)
        if subcommands is None or getattr(command, "invoke_without_command", False):
            yield path, command
        for name, sub in (subcommands or {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


COMMANDS = {" ".join(path): command for path, command in commands() if path}

DIRS = ("missing", "empty", "file")
"""What ``--dir`` names: no folder, an empty folder, a file."""
SUCCEEDS = {
    ("orchestrator init", "missing"),  # it creates the state directory
    ("orchestrator init", "empty"),
    ("edge plugins", "nothing"),  # every option is optional: it lists what is installed
    ("edge plugins", "missing"),  # is hardly a mistake: the policy it shows is the default
    ("edge plugins", "empty"),
}
"""(command, mistake) pairs that are no mistake: the command works."""
WORKS_BARE = {"demo"}
"""Commands that, given nothing, do their work (the demo runs a federation for a minute)."""


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """The folders and files the mistakes name (new for each test: a command that works,
    such as ``orchestrator init``, makes its folder)."""
    root = tmp_path
    (root / "empty").mkdir()
    (root / "file").write_text("not a folder\n")
    (root / "bad.yaml").write_text("name: [unclosed\n  - : :\n")
    return {
        "missing": root / "missing" / "deeper",
        "empty": root / "empty",
        "file": root / "file",
        "spec": root / "bad.yaml",
        "out": root / "out",
        "logs": root / "logs",
    }


def _arguments(command: Any, places: dict[str, Path], folder: Path) -> list[str]:
    """Values for ``command``'s arguments and required options, each a mistake where it can
    be one: the folder given, an orchestrator that does not answer, a token that is not one,
    a malformed YAML file (a spec, a project, a mapping, a source to import)."""
    args: list[str] = []
    for param in command.params:
        if isinstance(param, TyperArgument):
            is_file = _annotation(param) is Path or param.name == "source"  # edge import's
            args.append(str(places["spec"]) if is_file else _value(param))
    given = {"--dir": str(folder), "--url": UNREACHABLE, "--token": BAD_TOKEN}
    given |= {"--orchestrator": UNREACHABLE, "--out": str(places["out"])}
    for param in command.params:
        if isinstance(param, TyperArgument) or not param.opts:
            continue
        name = param.opts[0]
        if name in given and (param.required or name in ("--url", "--token", "--dir")):
            args += [name, given[name]]
        elif param.required:
            args += [name, _value(param)]
    return args


def _annotation(param: Any) -> Any:
    return param.type_descriptor.annotation


def _value(param: Any) -> str:
    """A well-formed value for a parameter the mistake is not about."""
    kind = _annotation(param)
    if isinstance(kind, type) and issubclass(kind, Enum):
        return str(next(iter(kind)).value)
    return "1" if kind in (int, float) else "x"


def _run(args: list[str], places: dict[str, Path]) -> Any:
    env = {"COLUMNS": WIDTH, "ONCOFED_LOG_DIR": str(places["logs"])}
    env |= {"ONCOFED_URL": None, "ONCOFED_TOKEN": None, "ONCOFED_CA": None}  # type: ignore[dict-item]
    return CliRunner().invoke(app, args, env=env)


def _check(result: Any, args: list[str], may_succeed: bool = False) -> None:
    """A mistake's answer: exit code 1 or 2, no traceback, no bug reported; with exit code 1,
    one line that starts with ``error:``."""
    said = f"oncofed {' '.join(args)} -> {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output, said
    assert result.exception is None or isinstance(result.exception, SystemExit), said
    assert result.exit_code in ((0, 1, 2) if may_succeed else (1, 2)), said
    assert "unexpected" not in result.output, said  # a mistake is not a bug
    if result.exit_code == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) <= 1, said


@pytest.mark.parametrize("name", sorted(COMMANDS.keys() - WORKS_BARE))
def test_nothing_given(name: str, places: dict[str, Path]) -> None:
    args = name.split()
    _check(_run(args, places), args, may_succeed=(name, "nothing") in SUCCEEDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_option_that_does_not_exist(name: str, places: dict[str, Path]) -> None:
    result = _run([*name.split(), "--no-such-option"], places)
    assert result.exit_code == 2 and "No such option" in result.output, result.output


@pytest.mark.parametrize("folder", DIRS)
@pytest.mark.parametrize(
    "name", sorted(n for n, c in COMMANDS.items() if any("--dir" in p.opts for p in c.params))
)
def test_a_directory_that_is_not_one(name: str, folder: str, places: dict[str, Path]) -> None:
    """Every command with ``--dir``, given a missing folder, an empty one and a file."""
    args = [*name.split(), *_arguments(COMMANDS[name], places, places[folder])]
    _check(_run(args, places), args, may_succeed=(name, folder) in SUCCEEDS)


@pytest.mark.parametrize(
    "name",
    sorted(n for n, c in COMMANDS.items() if any(p.opts[:1] == ["--url"] for p in c.params)),
)
def test_an_orchestrator_that_does_not_answer(name: str, places: dict[str, Path]) -> None:
    """Every command calling the API, on an orchestrator that refuses the connection, with a
    token that is not one and a malformed YAML file where one is read."""
    args = [*name.split(), *_arguments(COMMANDS[name], places, places["missing"])]
    result = _run(args, places)
    _check(result, args)
    assert result.exit_code == 1, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["orchestrator", "token", "rita", "--role", "king", "--dir", "{empty}"],
        ["edge", "init", "--dir", "{empty}", "--orchestrator", "ftp://x", "--token", "t"],
        ["edge", "init", "--dir", "{empty}", "--orchestrator", "not a url", "--token", "t"],
        ["edge", "import", "{spec}", "--dir", "{empty}", "--name", "d", "--from", "csv"],
        ["edge", "import", "{missing}", "--dir", "{empty}", "--name", "d", "--from", "csv"],
        ["orchestrator", "serve", "--dir", "{empty}", "--port", "http"],
        ["audit", "show", "--dir", "{empty}", "--since", "yesterday"],
        ["site", "add", "hospital-a", "--dir", "{empty}"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_value_that_is_wrong(args: list[str], places: dict[str, Path]) -> None:
    """Values wrong in themselves: a role, a URL, a port, a time, a source."""
    filled = [arg.format(**places) for arg in args]
    _check(_run(filled, places), filled)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["site", "list", "--url", UNREACHABLE, "--token", BAD_TOKEN],
        ["orchestrator", "token", "rita", "--dir", "{missing}"],
        ["job", "submit", "{spec}", "--url", UNREACHABLE],
        ["edge", "run", "--dir", "{empty}"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_mistakes_in_a_real_process(args: list[str], places: dict[str, Path]) -> None:
    """The installed command, its output piped: one line on standard error, exit code 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONCOFED_")}
    env |= {"COLUMNS": WIDTH, "ONCOFED_LOG_DIR": str(places["logs"])}
    filled = [arg.format(**places) for arg in args]
    done = subprocess.run(
        [sys.executable, "-m", "oncofed", *filled],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("error:") and done.stderr.count("error:") == 1, done.stderr


def test_an_unexpected_error_is_one_line_and_its_traceback_is_kept(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug: one line naming the log, the traceback in it; ``--debug`` shows it."""
    from oncofed.cli import access

    def broken(*_: Any) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(access, "client", broken)
    args = ["token", "list", "--url", UNREACHABLE]
    result = _run(args, places)
    log = places["logs"] / "last-error.log"
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.stderr.startswith("error: unexpected KeyError: 'boom'"), result.stderr
    assert str(log) in result.stderr.replace("\n", "") and "--debug" in result.stderr
    assert "Traceback" in log.read_text() and "broken" in log.read_text()
    assert log.stat().st_mode & 0o077 == 0  # it may quote paths and settings
    elsewhere = places["logs"] / "elsewhere"
    log.unlink()
    log.symlink_to(elsewhere)  # planted: the log replaces the link, never writes through it
    assert _run(args, places).exit_code == 1
    assert not elsewhere.exists() and not log.is_symlink() and "broken" in log.read_text()
    debug = _run(["--debug", *args], places)
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "broken" in debug.stderr


def test_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"oncofed {version('oncofed')}\n"
