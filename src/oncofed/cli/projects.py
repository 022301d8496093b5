"""``oncofed project`` (researchers declare studies and read each site's decision) and the
site admin's ``oncofed edge projects``, ``approve`` and ``decline``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from oncofed._text import as_text
from oncofed.cli._common import (
    TIME_WIDTH,
    EdgeDir,
    TokenOption,
    UrlOption,
    client,
    console,
    friendly,
    names_table,
)
from oncofed.cli._output import print_table

if TYPE_CHECKING:
    from oncofed.wire.projects import ProjectPublic

project_app = typer.Typer(
    help="Declare projects and follow sites' decisions.", no_args_is_help=True
)
ProjectName = Annotated[str, typer.Argument(help="The project's name.")]


@project_app.command("create")
@friendly
def create(
    source: Annotated[Path, typer.Argument(help="The project, as YAML (see docs).")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Declare a project; each site's admin then approves or declines it."""
    with client(url, token) as api:
        console.print(render_project(api.create_project(source)))


@project_app.command("list")
@friendly
def list_projects(url: UrlOption = None, token: TokenOption = None) -> None:
    """Your projects (the operator's and site admins': every one) and how many sites
    approved each."""
    table = names_table("project", {"approved": 8, "declined": 8, "pending": 7})
    with client(url, token) as api:
        found = api.projects()
    for project in found:
        states = [d.status for d in project.sites]
        counts = (str(states.count(s)) for s in ("approved", "declined", "pending"))
        table.add_row(as_text(project.name), *counts)
    print_table(console, table)


@project_app.command("show")
@friendly
def show(name: ProjectName, url: UrlOption = None, token: TokenOption = None) -> None:
    """A project: what it declares, and each site's decision with its policy version."""
    with client(url, token) as api:
        console.print(render_project(api.project(name)))


@project_app.command("add-member")
@friendly
def add_member(
    name: ProjectName,
    researcher: Annotated[str, typer.Argument(help="The researcher to add.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Add a researcher to a project (its owner or the operator may)."""
    with client(url, token) as api:
        api.add_member(name, researcher)
    console.print(Text.assemble(as_text(researcher), " is a member of ", as_text(name), "."))


@friendly
def edge_projects(home: EdgeDir) -> None:
    """Every project of the consortium, with this site's decision on it."""
    from oncofed.edge import EdgeHome
    from oncofed.edge.governance import read_projects

    found, policy = read_projects(EdgeHome(home))
    table = names_table("project", {"here": 8, "dataset": 12})
    table.add_column("title", overflow="fold")
    for project in found:
        decision = policy.projects.get(project.name)
        here = "pending" if decision is None else "approved" if decision.approved else "declined"
        if decision is not None and decision.scope_sha256 != project.scope_sha256:
            here = "changed"  # the orchestrator shows another scope than the one decided
        dataset = decision.dataset if decision and decision.dataset else ""
        table.add_row(as_text(project.name), here, as_text(dataset), as_text(project.title))
    print_table(console, table)
    console.print(f"Policy version {policy.version}.", highlight=False)


@friendly
def approve(
    name: ProjectName,
    home: EdgeDir,
    dataset: Annotated[
        str, typer.Option(metavar="NAME", help="The local dataset that serves the project.")
    ],
) -> None:
    """Approve a project for this site, on one of its datasets. The scope shown is the one
    this site will enforce on every task of the project."""
    from oncofed.edge import EdgeHome
    from oncofed.edge.governance import decide_project

    project, version = decide_project(EdgeHome(home), name, dataset=dataset)
    console.print(render_project(project, sites=False))
    console.print(
        Text.assemble(
            "Approved ",
            as_text(name, style="bold"),
            " on dataset ",
            as_text(dataset),
            f" (policy version {version}).",
        )
    )


@friendly
def decline(
    name: ProjectName,
    home: EdgeDir,
    reason: Annotated[
        str, typer.Option(metavar="TEXT", help="Why, for the researchers (shown as written).")
    ],
) -> None:
    """Decline a project for this site; its tasks are refused here even if sent."""
    from oncofed.edge import EdgeHome
    from oncofed.edge.governance import decide_project

    _, version = decide_project(EdgeHome(home), name, reason=reason)
    console.print(
        Text.assemble("Declined ", as_text(name, style="bold"), f" (policy version {version}).")
    )


def render_project(project: ProjectPublic, sites: bool = True) -> RenderableType:
    """A project's declaration and, with ``sites``, each site's decision."""
    scope = project.scope
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column(overflow="fold")
    rows = {
        "project": project.name,
        "title": project.title,
        "investigator": project.principal_investigator,
        "owner": project.owner,
        "members": ", ".join(project.members),
        "kinds": ", ".join(scope.kinds),
        "models": ", ".join(scope.models) or "none",
        "analyses": ", ".join(scope.analyses) or "none",
        "fields": ", ".join(scope.fields),
        "secure": "every job securely aggregated" if scope.privacy.secure_aggregation else "no",
        "scope": project.scope_sha256[:12],
        "purpose": project.purpose,
    }
    for key, value in rows.items():
        facts.add_row(key, as_text(value))
    if not sites:
        return facts
    table = names_table("site", {"decision": 8, "policy": 12, "when (UTC)": TIME_WIDTH})
    table.add_column("dataset or reason", overflow="fold")
    for d in project.sites:
        when = d.decided.strftime("%Y-%m-%d %H:%M") if d.decided else ""
        why = d.dataset if d.status == "approved" else d.reason or ""
        policy = as_text(d.policy_version or "")
        table.add_row(as_text(d.site), d.status, policy, when, as_text(why or ""))
    return Group(facts, table)
