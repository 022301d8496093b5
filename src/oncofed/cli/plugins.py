"""``oncofed edge plugins``: the plugin distributions installed here, with what a site admin
copies into the policy to allowlist one. Listing reads metadata and hashes files: it imports
none of the plugins' code."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from oncofed._text import plain
from oncofed.cli._common import console, friendly

if TYPE_CHECKING:
    from oncofed.edge import EdgePolicy
    from oncofed.learning.plugins import PluginDistribution, PluginModel

INDENT = "  "


@friendly
def list_plugins(
    home: Annotated[
        Path | None,
        typer.Option(
            "--dir", metavar="DIR", help="Edge directory: also say what its policy allows."
        ),
    ] = None,
) -> None:
    """Plugin distributions installed here: name, version, SHA-256 of their files and the
    model types they declare, with the entry to add under ``plugins:`` in policy.yaml (and
    their model types to ``allowed_models``) to let them run at this site."""
    from oncofed.edge import EdgeHome
    from oncofed.learning import plugins

    policy = EdgeHome(home).policy() if home is not None else None
    found = plugins.distributions()
    if not found:
        console.print(Text("No plugin distribution is installed: built-in model types only."))
        return
    for dist in found:
        console.print(_describe(dist, policy))


def _describe(dist: PluginDistribution, policy: EdgePolicy | None) -> Text:
    """One distribution: a heading with its status, its model types, then its policy entry."""
    import yaml

    from oncofed.learning import plugins
    from oncofed.learning.plugins import PluginError, PluginPin

    try:
        sha: str | None = plugins.digest(plugins.installed_distribution(dist.name))
        status = _status(dist, sha, policy) if sha and policy is not None else ""
    except PluginError as exc:
        sha, status = None, f"cannot be used: {exc}"
    lines = [f"{dist.name} {dist.version}" + (f": {status}" if status else "")]
    allowed = None if policy is None else set(policy.allowed_models)
    models = ", ".join(_model(m, allowed) for m in dist.models)
    lines.append(f"{INDENT}model types: {models or 'none usable'}")
    lines += [f"{INDENT}not usable: {problem}" for problem in dist.problems]
    if sha is not None:
        try:
            pin = PluginPin(name=dist.name, version=dist.version, sha256=sha)
        except ValueError:
            lines.append(f"{INDENT}its name or version cannot be allowlisted")
        else:
            entry = yaml.safe_dump([pin.model_dump()], sort_keys=False, width=1000)
            lines.append(f"{INDENT}policy entry (under plugins:):")
            lines += [INDENT + line for line in entry.splitlines()]
    return Text(plain("\n".join(lines)) + "\n")


def _model(model: PluginModel, allowed: set[str] | None) -> str:
    outside = allowed is not None and model.name not in allowed
    return f"{model.name} ({model.task}{', not in allowed_models' if outside else ''})"


def _status(dist: PluginDistribution, sha: str, policy: EdgePolicy) -> str:
    from oncofed.learning.plugins import canonical

    pins = [p for p in policy.plugins if canonical(p.name) == canonical(dist.name)]
    if not pins:
        return "not allowlisted"
    if not any(p.version == dist.version for p in pins):
        return f"policy allowlists version {', '.join(p.version for p in pins)}"
    if not any(p.version == dist.version and p.sha256 == sha for p in pins):
        return "files changed since allowlisted (SHA-256 differs)"
    return "allowlisted"
