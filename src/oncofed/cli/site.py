"""``oncofed site``: the operator enrols, disables, enables, revokes and removes hospitals;
anyone with a token lists them and reads their data quality reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from oncofed._text import as_text
from oncofed.cli._common import (
    FINGERPRINT_WIDTH,
    TIME_WIDTH,
    StateDir,
    TokenOption,
    UrlOption,
    client,
    console,
    friendly,
    names_table,
)
from oncofed.cli._output import JsonOption, print_json, print_table

if TYPE_CHECKING:
    from oncofed.wire.messages import SitePublic

app = typer.Typer(help="Manage sites (hospitals).", no_args_is_help=True)
SiteArgument = Annotated[str, typer.Argument(help="Site name.")]


@app.command()
@friendly
def add(
    name: Annotated[
        str,
        typer.Argument(help="Site name: lower-case letters, digits, '-', '_' (e.g. hospital-a)."),
    ],
    home: StateDir,
) -> None:
    """Register a site and print its one-time enrolment token."""
    from oncofed.orchestrator import setup as state

    created = state.add_site(home, name)
    console.print(
        Text.assemble(
            "Site ", as_text(created.name, style="bold"), " created. One-time enrolment token:"
        )
    )
    console.print(created.enrolment_token, soft_wrap=True, highlight=False)


@app.command("list")
@friendly
def list_sites(
    as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Sites: enrolled, connected now, and their identity keys' fingerprints.

    The sites' admins compare the fingerprints with what ``oncofed edge identity`` prints.
    """
    widths = {"enrolled": 8, "connected": 9, "last seen (UTC)": TIME_WIDTH}
    table = names_table("site", widths | {"identity key": FINGERPRINT_WIDTH})
    with client(url, token) as api:
        sites = api.sites()
    if as_json:
        print_json([site.model_dump(mode="json") for site in sites])
        return
    for site in sites:
        seen = site.last_seen.strftime("%Y-%m-%d %H:%M") if site.last_seen else "never"
        table.add_row(
            as_text(site.name),
            _enrolment(site),
            "[green]yes[/]" if site.connected else "[red]no[/]",
            seen,
            as_text(site.key_fingerprint or "none"),
        )
    print_table(console, table)


def _enrolment(site: SitePublic) -> str:
    """The enrolled column: revoked, disabled, yes or no."""
    if site.revoked:
        return "revoked"
    if site.disabled:
        return "[red]disabled[/]"
    return "yes" if site.enrolled else "no"


@app.command()
@friendly
def profile(
    name: SiteArgument,
    dataset: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only this dataset's report.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json/--no-json", help="The reports as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The data quality report a site sent on each of its datasets (small counts suppressed)."""
    from oncofed.cli.profile_view import render_profile
    from oncofed.client import ClientError

    with client(url, token) as api:
        reports = api.profiles(name)
    if dataset is not None:
        sent = ", ".join(p.dataset for p in reports) or "none"
        reports = [p for p in reports if p.dataset == dataset]
        if not reports:
            raise ClientError(f"site {name!r} sent no report on dataset {dataset!r} (sent: {sent})")
    if as_json:
        console.print_json(data=[p.model_dump(mode="json") for p in reports])
        return
    if not reports:
        console.print(
            Text.assemble(
                "Site ", as_text(name, style="bold"), " has sent no data quality report yet."
            )
        )
    for report in reports:
        console.print(render_profile(report))


@app.command()
@friendly
def revoke(
    name: SiteArgument,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a site (operator): its edge's next request is refused. A revoked site is never
    re-enabled; the hospital is added again under a new name."""
    with client(url, token) as api:
        revoked = api.revoke_site(name)
    console.print(Text.assemble("Site ", as_text(revoked.name, style="bold"), " revoked."))


@app.command()
@friendly
def disable(name: SiteArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Disable a site (operator): it gets no task and its edge's requests are refused until
    it is enabled; the rounds waiting for it go on without it."""
    with client(url, token) as api:
        site = api.disable_site(name)
    console.print(
        Text.assemble("Site ", as_text(site.name, style="bold"), " disabled: it gets no task.")
    )


@app.command()
@friendly
def enable(name: SiteArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Enable a disabled site (operator): its edge is served again."""
    with client(url, token) as api:
        site = api.enable_site(name)
    console.print(Text.assemble("Site ", as_text(site.name, style="bold"), " enabled."))


@app.command()
@friendly
def remove(name: SiteArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Remove a site that has no running task (operator): its credential and certificates
    are revoked and it leaves the listings; its past contributions stay in the record."""
    with client(url, token) as api:
        api.remove_site(name)
    console.print(Text.assemble("Site ", as_text(name, style="bold"), " removed."))
