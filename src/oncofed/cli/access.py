"""``oncofed token`` and ``oncofed person``: tokens that expire and can be revoked, and the
people who hold them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from oncofed._text import as_text
from oncofed.cli._common import (
    TIME_WIDTH,
    RoleOption,
    TokenOption,
    UrlOption,
    client,
    console,
    friendly,
    names_table,
)
from oncofed.cli._output import print_table

if TYPE_CHECKING:
    from oncofed.wire.access import TokenCreated

token_app = typer.Typer(help="List, create and revoke API tokens.", no_args_is_help=True)
person_app = typer.Typer(
    help="The operator adds researchers, site admins and operators.", no_args_is_help=True
)
Days = Annotated[
    float | None, typer.Option(min=0, help="Lifetime in days (default: the orchestrator's).")
]


@token_app.command("list")
@friendly
def list_tokens(url: UrlOption = None, token: TokenOption = None) -> None:
    """Your tokens (the operator's: everyone's), with their state."""
    table = names_table("holder", {"id": 5, "status": 7, "expires (UTC)": TIME_WIDTH})
    table.add_column("label", overflow="fold")
    with client(url, token) as api:
        tokens = api.tokens()
    for row in tokens:
        table.add_row(
            as_text(row.principal),
            str(row.id),
            row.status,
            _when(row.expires),
            as_text(row.label),
        )
    print_table(console, table)


@token_app.command("create")
@friendly
def create_token(
    label: Annotated[str, typer.Option(help="A note to tell it apart.")] = "",
    days: Days = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create another token for yourself (to rotate: create, switch, revoke the old one)."""
    with client(url, token) as api:
        _show(api.new_token(label, days))


@token_app.command("revoke")
@friendly
def revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (see `oncofed token list`).")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a token: yours, or (operator) anyone's. It fails from its next request on."""
    with client(url, token) as api:
        revoked = api.revoke_token(token_id)
    console.print(Text.assemble(f"Token {revoked.id} of ", as_text(revoked.principal), " revoked."))


@person_app.command("add")
@friendly
def add_person(
    name: Annotated[str, typer.Argument(help="Who: letters, digits, '.', '_', '-'.")],
    role: RoleOption = "researcher",
    site: Annotated[
        str | None, typer.Option(metavar="SITE", help="The site a site admin acts for.")
    ] = None,
    days: Days = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Add a person (operator only) and print their first token, once."""
    with client(url, token) as api:
        _show(api.add_person(name, role, site, days))


@person_app.command("list")
@friendly
def list_people(url: UrlOption = None, token: TokenOption = None) -> None:
    """Everyone who may call the orchestrator (operator only)."""
    table = names_table("name", {"role": 10, "tokens": 6, "added (UTC)": TIME_WIDTH})
    table.add_column("site", overflow="fold")
    with client(url, token) as api:
        people = api.people()
    for person in people:
        table.add_row(
            as_text(person.name),
            person.role,
            str(person.active_tokens),
            _when(person.created),
            as_text(person.site or ""),
        )
    print_table(console, table)


def _show(created: TokenCreated) -> None:
    """A new token on stdout alone (for scripts), what it is on stderr."""
    expiry = f"expires {_when(created.expires)} UTC" if created.expires else "never expires"
    console.print(created.token, soft_wrap=True, highlight=False, markup=False)
    typer.echo(f"token {created.id} for {created.principal}: {expiry}; shown once", err=True)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"
