"""Non-negotiable 4, checked on the source: nothing that crossed a process boundary is ever
unpickled, evaluated or executed. The AST is read, so comments and strings cannot hide a call."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "oncofed"
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRIBUTES = {("torch", "load"), ("np", "load"), ("numpy", "load"), ("pd", "read_pickle")}


def _violations(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES
            ]
        elif (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").split(".")[0] in FORBIDDEN_MODULES
        ):
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{func.id}(...)")
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and (func.value.id, func.attr) in FORBIDDEN_ATTRIBUTES
            ):
                found.append(f"{func.value.id}.{func.attr}(...)")
            if any(k.arg == "allow_pickle" for k in node.keywords):
                found.append("allow_pickle=...")
    return found


SOURCES = sorted(SRC.rglob("*.py"))


def test_the_scan_sees_the_source_and_catches_violations() -> None:
    assert len(SOURCES) > 40
    planted = (
        "import pickle\nimport torch\nx = torch.load(f)\neval('1')\nnp.load(f, allow_pickle=True)\n"
    )
    assert len(_violations(ast.parse(planted))) == 5


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_unpickling_eval_or_exec(path: Path) -> None:
    assert _violations(ast.parse(path.read_text(), filename=str(path))) == []
