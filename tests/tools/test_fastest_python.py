"""tools/fastest_python.py: which interpreter ``make`` builds ``.venv`` from."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "fastest_python.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastest_python", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake(folder: Path, name: str, output: str, status: int = 0) -> None:
    """An executable ``name`` in ``folder`` that prints what a probed interpreter would."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{output}'\nexit {status}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_the_fastest_cpython_311_is_chosen_and_the_others_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake(tmp_path / "slow", "python3.11", "cpython 3 11 0.20 /opt/slow/python3.11")
    fake(tmp_path / "fast", "python3.11", "cpython 3 11 0.10 /opt/fast/python3.11")
    fake(tmp_path / "newer", "python3", "cpython 3 12 0.01 /opt/newer/python3.12")
    fake(tmp_path / "pypy", "python3", "pypy 3 11 0.01 /opt/pypy/python3")
    fake(tmp_path / "broken", "python3.11", "cpython 3 11 0.01 /opt/broken/python3.11", 1)
    folders = ("slow", "fast", "newer", "pypy", "broken")
    monkeypatch.setenv("PATH", ":".join(str(tmp_path / f) for f in folders))
    module = load()
    monkeypatch.setattr(module, "PREFIXES", ())
    assert module.main() == 0
    out, err = capsys.readouterr()
    assert out == "/opt/fast/python3.11\n"
    assert err.splitlines()[1:] == [
        "  0.100 s  /opt/fast/python3.11",
        "  0.200 s  /opt/slow/python3.11",
    ]


def test_no_usable_interpreter_is_an_error_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake(tmp_path / "newer", "python3", "cpython 3 12 0.01 /opt/newer/python3.12")
    monkeypatch.setenv("PATH", str(tmp_path / "newer"))
    module = load()
    monkeypatch.setattr(module, "PREFIXES", ())
    assert module.main() == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "PYTHON=" in err
