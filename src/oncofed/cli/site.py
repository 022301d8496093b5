"""``oncofed site``: the operator enrols hospitals; anyone with a token lists them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from oncofed.cli._common import StateDir, TokenOption, UrlOption, client, console, friendly
from oncofed.orchestrator import setup as state

app = typer.Typer(help="Manage sites (hospitals).", no_args_is_help=True)


@app.command()
@friendly
def add(
    name: Annotated[str, typer.Argument(help="Site name, e.g. 'hospital-a'.")], home: StateDir
) -> None:
    """Register a site and print its one-time enrolment token."""
    created = state.add_site(home, name)
    console.print(f"Site [bold]{created.name}[/] created. One-time enrolment token:")
    console.print(created.enrolment_token, soft_wrap=True, highlight=False)


@app.command("list")
@friendly
def list_sites(url: UrlOption = None, token: TokenOption = None) -> None:
    """Sites, whether they are enrolled, and whether they are connected now."""
    table = Table("site", "enrolled", "connected", "last seen")
    with client(url, token) as api:
        sites = api.sites()
    for site in sites:
        seen = site.last_seen.strftime("%Y-%m-%d %H:%M:%S UTC") if site.last_seen else "never"
        table.add_row(
            site.name,
            "yes" if site.enrolled else "no",
            "[green]yes[/]" if site.connected else "[red]no[/]",
            seen,
        )
    console.print(table)
