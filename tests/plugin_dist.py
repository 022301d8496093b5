"""Real plugin distributions for tests: a package and its ``.dist-info`` (METADATA,
entry_points.txt, RECORD as pip writes them), in a directory put on ``sys.path``."""

from __future__ import annotations

import base64
import hashlib
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from oncofed.learning import plugins
from oncofed.learning.plugins import PluginPin

LAYERS = '''"""Acme's model types (a test plugin)."""

from oncofed.learning.registry import Dense


def acme_wide(model, n_inputs):
    """Two hidden layers of fixed widths, then one logit."""
    return [Dense(n_inputs, 5, True), Dense(5, 3, True), Dense(3, 1, True)]


def acme_cox(model, n_inputs):
    """One hidden layer as wide as the spec's first, then a risk score (no bias)."""
    width = model.hidden[0]
    return [Dense(n_inputs, width, True), Dense(width, 1, False)]
'''
MODELS = {"acme_wide": "binary", "acme_cox": "survival"}


@dataclass
class Plugin:
    """One installed plugin distribution."""

    root: Path  # the directory on sys.path (a site-packages)
    name: str
    version: str
    package: str
    dist_info: Path

    @property
    def layers(self) -> Path:
        return self.root / self.package / "layers.py"

    def pin(self, sha256: str | None = None) -> PluginPin:
        """The policy entry for it (the digest computed by oncofed unless given)."""
        if sha256 is None:
            sha256 = plugins.digest(plugins.installed_distribution(self.name))
        return PluginPin(name=self.name, version=self.version, sha256=sha256)

    def tamper(self) -> None:
        """Edit one of its files after installation (its RECORD still says the old hash)."""
        with self.layers.open("a") as handle:
            handle.write("\nimport os  # added after installation\n")


def record_hash(data: bytes) -> str:
    """A RECORD hash: ``sha256=`` and the urlsafe base64 digest without padding."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def build(
    root: Path,
    package: str,
    name: str = "acme-models",
    version: str = "1.0",
    models: dict[str, str] | None = None,
    source: str = LAYERS,
) -> Plugin:
    """Write the distribution into ``root`` as ``pip install`` of its wheel would."""
    models = MODELS if models is None else models
    dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
    groups: dict[str, list[str]] = {}
    for model, task in models.items():
        groups.setdefault(f"oncofed.models.{task}", []).append(
            f"{model} = {package}.layers:{model}"
        )
    entry_points = "".join(
        f"[{group}]\n" + "\n".join(lines) + "\n\n" for group, lines in groups.items()
    )
    files = {
        f"{package}/__init__.py": '"""Acme models."""\n',
        f"{package}/layers.py": source,
        # pip compiles modules and lists the bytecode; a tag no interpreter here reads
        f"{package}/__pycache__/layers.cpython-39.pyc": "not bytecode",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": entry_points,
        f"{dist_info}/top_level.txt": f"{package}\n",
        f"{dist_info}/INSTALLER": "pip\n",
    }
    lines = []
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode()
        target.write_bytes(data)
        lines.append(f"{path},{record_hash(data)},{len(data)}\n")
    lines.append(f"{dist_info}/RECORD,,\n")
    (root / dist_info / "RECORD").write_text("".join(lines))
    return Plugin(root, name, version, package, root / dist_info)


class Site:
    """Plugin distributions installed for one test: discovery caches cleared before and after,
    their modules forgotten afterwards."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp_path, self.monkeypatch = tmp_path, monkeypatch
        self.packages: list[str] = []
        monkeypatch.setattr(plugins, "_loaded", {})
        plugins.refresh()

    def install(
        self,
        directory: str = "site-packages",
        package: str | None = None,
        name: str = "acme-models",
        version: str = "1.0",
        models: dict[str, str] | None = None,
        source: str = LAYERS,
    ) -> Plugin:
        """Build a distribution in ``tmp_path / directory`` and put that first on sys.path;
        its package has a name of its own unless given."""
        package = package or f"acme_{uuid.uuid4().hex[:12]}"
        plugin = build(self.tmp_path / directory, package, name, version, models, source)
        self.packages.append(package)
        self.monkeypatch.syspath_prepend(str(plugin.root))
        plugins.refresh()
        return plugin

    def close(self) -> None:
        self.monkeypatch.undo()
        for module in list(sys.modules):
            if module.split(".")[0] in self.packages:
                del sys.modules[module]
        plugins.refresh()
