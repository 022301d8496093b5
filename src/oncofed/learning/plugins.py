"""Model types from plugins: Python distributions a site or operator installed, never code
received over the network.

A distribution declares model types as entry points, one group per task::

    [project.entry-points."oncofed.models.binary"]
    wide_mlp = "acme_models.layers:wide_mlp"

    [project.entry-points."oncofed.models.survival"]
    deep_cox = "acme_models.layers:deep_cox"

The entry point's name is the model type a job spec names, its group the outcome it fits, and
its object a function ``(model: ModelSpec, n_inputs: int) -> list[Dense]`` declaring the dense
layers, like the built-ins (``oncofed.learning.registry``). Names, tasks and distributions are
read from the installed metadata alone: discovering or listing plugins runs none of their code.
A plugin module is imported only by :func:`load`, and at the edge only after the policy check
(``oncofed.edge.policy``) pinned its distribution's name, version and :func:`digest`.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib
import importlib.metadata as metadata
import importlib.util
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from oncofed.wire.spec import BUILTIN_MODELS

Task = Literal["binary", "survival"]
GROUPS: dict[str, Task] = {"oncofed.models.binary": "binary", "oncofed.models.survival": "survival"}
"""Entry-point groups that declare model types, and the outcome each group's models fit."""
MODEL_NAME = r"^[a-z][a-z0-9_]{0,63}$"
"""What a model type's name may be (built-in or plugin)."""
INSTALLER_NOTES = frozenset({"RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER", "REQUESTED",
                             "direct_url.json"})  # fmt: skip
"""Files of a ``.dist-info`` directory that :func:`digest` leaves out: RECORD (and its
signatures) cannot list its own hash, and the others are the installer's notes on this
installation (which tool, when asked for, from where), not the distribution's content."""
Architecture = Callable[[Any, int], Any]
"""A plugin's layer declaration: ``(ModelSpec, n_inputs) -> list[Dense]`` (checked by the
registry, which owns ``Dense``)."""


class PluginError(Exception):
    """A plugin that cannot be used: its files are missing or changed, or its code is not where
    its distribution says."""


class PluginPin(BaseModel):
    """One plugin distribution a site allowlists, as ``oncofed edge plugins`` prints it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]
    version: Annotated[str, Field(min_length=1, max_length=64)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

    def __str__(self) -> str:
        return f"{self.name} {self.version} (sha256 {self.sha256[:12]}...)"


@dataclass(frozen=True)
class PluginModel:
    """A model type an installed distribution declares (read from its metadata)."""

    name: str
    task: Task
    distribution: str
    version: str
    module: str  # the entry point's object: ``module:attribute``
    attribute: str


@dataclass(frozen=True)
class PluginDistribution:
    """An installed distribution declaring model types; ``problems`` say which of its
    declarations are not usable (a bad name, or a name another declaration also takes)."""

    name: str
    version: str
    models: tuple[PluginModel, ...]
    problems: tuple[str, ...]


def canonical(name: str) -> str:
    """A distribution name as the packaging standards compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


_scanning = threading.Lock()


def distributions() -> tuple[PluginDistribution, ...]:
    """Every installed distribution declaring model types, by name (metadata only). A name
    that is not a valid model name, that a built-in already has, or that two declarations
    take, is listed as a problem and usable from none of them. Read once per process: the
    threads of a host serving many sites wait for the first scan rather than each run it."""
    with _scanning:
        return _distributions()


@functools.cache
def _distributions() -> tuple[PluginDistribution, ...]:
    seen: set[str] = set()
    found: list[tuple[str, str, list[PluginModel]]] = []
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        if not name or canonical(name) in seen:  # shadowed by one earlier on sys.path
            continue
        seen.add(canonical(name))
        models = [
            PluginModel(ep.name, GROUPS[ep.group], name, dist.version, ep.module, ep.attr or "")
            for ep in dist.entry_points
            if ep.group in GROUPS
        ]
        if models:
            found.append((name, dist.version, models))
    claims = collections.Counter(model.name for _, _, models in found for model in models)
    listed = []
    for name, version, models in sorted(found, key=lambda item: canonical(item[0])):
        verdicts = [(model, _conflict(model.name, claims[model.name])) for model in models]
        usable = tuple(model for model, problem in verdicts if not problem)
        problems = tuple(f"{model.name!r}: {problem}" for model, problem in verdicts if problem)
        listed.append(PluginDistribution(name, version, usable, problems))
    return tuple(listed)


def _conflict(name: str, claims: int) -> str:
    """Why a declared model type name is not usable ("" when it is)."""
    if not re.fullmatch(MODEL_NAME, name):
        return "not a model type name (lower-case letters, digits and '_', up to 64)"
    if name in BUILTIN_MODELS:
        return "a built-in model type has this name"
    if claims > 1:
        return "declared more than once by the installed plugins"
    return ""


@functools.cache
def declared() -> dict[str, PluginModel]:
    """The usable plugin model types by name (metadata only: nothing is imported)."""
    return {model.name: model for dist in distributions() for model in dist.models}


def installed_distribution(name: str) -> metadata.Distribution:
    """The installed distribution ``name`` (the first on ``sys.path``, as imports find it)."""
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError as exc:
        raise PluginError(f"plugin distribution {name!r} is not installed") from exc


def _files(dist: metadata.Distribution) -> dict[str, Path]:
    """The files RECORD lists, by their path as written there, but :data:`INSTALLER_NOTES`
    and compiled bytecode (``__pycache__``, ``.pyc``: Python rewrites them)."""
    listed = dist.files
    if listed is None:
        raise PluginError(
            f"{dist.metadata['Name']} {dist.version} has no RECORD of its files: install it "
            "with pip from a wheel"
        )
    files = {}
    for item in listed:
        parts = item.parts
        notes = len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in INSTALLER_NOTES
        if notes or "__pycache__" in parts or item.suffix == ".pyc":
            continue
        files[item.as_posix()] = Path(str(dist.locate_file(item)))
    return files


def digest(dist: metadata.Distribution) -> str:
    """The SHA-256 of an installed distribution's files as they are on disk now.

    For every file its RECORD lists, but those :func:`_files` leaves out, sorted by its path
    as RECORD writes it: the path (UTF-8), a NUL byte, the hex SHA-256 of the file's bytes on
    disk, a newline; the digest is the SHA-256 of these lines one after the other. RECORD's
    own hashes are never used: a file edited after installation changes the digest."""
    lines = hashlib.sha256()
    for path, location in sorted(_files(dist).items()):
        try:
            with location.open("rb") as handle:
                sha = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            raise PluginError(
                f"{dist.metadata['Name']} {dist.version}: {path} cannot be read "
                f"({exc.strerror or exc}); reinstall it"
            ) from exc
        lines.update(f"{path}\0{sha}\n".encode())
    return lines.hexdigest()


@dataclass(frozen=True)
class _Loaded:
    architecture: Architecture
    sha256: str


_loaded: dict[str, _Loaded] = {}


def load(name: str, pin: PluginPin | None = None) -> Architecture:
    """The layer declaration of plugin model type ``name``, importing its module the first
    time (later calls return the same function).

    With ``pin`` (at the edge, from the policy) the distribution's name, version and digest
    must match it before anything is imported (its files are hashed at every such call), and
    a module imported earlier must have been imported from the same files. Either way the
    entry point's package must be one of the distribution's files (not another one of the
    same name found first on ``sys.path``, nor source outside it, as an editable install's
    is). ``PluginError`` says what is wrong."""
    model = declared().get(name)
    if model is None:
        raise PluginError(f"no installed plugin declares model type {name!r}")
    loaded = _loaded.get(name)
    if loaded is not None and pin is None:
        return loaded.architecture
    dist = installed_distribution(model.distribution)
    sha = digest(dist)
    if pin is not None:
        _check_pin(model.distribution, dist.version, sha, pin)
    if loaded is not None:
        if loaded.sha256 != sha:
            raise PluginError(
                f"{model.distribution} {model.version} changed on disk since this process "
                "imported it: restart it to use the files installed now"
            )
        return loaded.architecture
    function = _import(model, dist)
    _loaded[name] = _Loaded(function, sha)
    return function


def _check_pin(name: str, version: str, sha: str, pin: PluginPin) -> None:
    """``pin`` allowlists the distribution ``name`` installed now (``version``, ``sha``)."""
    said = f"{name} {version}"
    if canonical(pin.name) != canonical(name):
        raise PluginError(f"the pin names {pin.name}, not {name}")
    if pin.version != version:
        raise PluginError(f"{said} is installed, but version {pin.version} is allowlisted")
    if pin.sha256 != sha:
        raise PluginError(
            f"the files of {said} are not those allowlisted: their SHA-256 is {sha[:12]}..., "
            f"the policy's {pin.sha256[:12]}... (changed since it was allowlisted?)"
        )


def _import(model: PluginModel, dist: metadata.Distribution) -> Architecture:
    """Import the entry point's object, from the distribution's own files only."""
    module_name = model.module
    files = {location.resolve() for location in _files(dist).values()}
    top = module_name.split(".")[0]
    spec = importlib.util.find_spec(top)  # a top-level name: finding it imports nothing
    origin = None if spec is None or spec.origin is None else Path(spec.origin).resolve()
    if origin not in files:
        raise PluginError(
            f"{model.distribution}'s module {top!r} is not among its installed files "
            f"(found: {origin or 'nothing'}); a plugin must be installed from a wheel"
        )
    module = importlib.import_module(module_name)
    location = getattr(module, "__file__", None)
    if location is None or Path(location).resolve() not in files:
        raise PluginError(f"{module_name!r} was not imported from {model.distribution}'s files")
    found: object = module
    for part in model.attribute.split(".") if model.attribute else []:
        found = getattr(found, part, None)
    if not callable(found):
        target = f"{module_name}:{model.attribute}"
        raise PluginError(f"{target!r} ({model.distribution}) is not a function")
    return found


def refresh() -> None:
    """Forget what was discovered, so that distributions installed or removed since are seen
    (modules already imported stay imported)."""
    importlib.invalidate_caches()
    _distributions.cache_clear()
    declared.cache_clear()
