"""``oncofed orchestrator``: initialise and serve the central coordinator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from oncofed._files import exclusive
from oncofed.cli._common import (
    LogLevelOption,
    NewStateDir,
    RoleOption,
    StateDir,
    console,
    err_console,
    friendly,
    setup_logging,
)

if TYPE_CHECKING:  # the server's modules (FastAPI, SQLAlchemy, uvicorn): imported by commands
    import uvicorn

app = typer.Typer(help="Run the orchestrator (the operator's side).", no_args_is_help=True)


HostsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        metavar="HOST",
        help="A host name or IP address edges dial, named in the server certificate "
        "(repeat it; default: localhost and 127.0.0.1).",
        show_default=False,
    ),
]


@app.command()
@friendly
def init(
    home: NewStateDir,
    database_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="SQLAlchemy URL, e.g. postgresql+pg8000://user@host/db (default SQLite).",
        ),
    ] = None,
    hosts: HostsOption = None,
) -> None:
    """Create the state directory, database, consortium CA and server certificate; print
    the operator token once."""
    from oncofed.orchestrator import pki
    from oncofed.orchestrator import setup as state
    from oncofed.orchestrator.settings import Settings

    token = state.initialise(home, database_url, hosts or pki.DEFAULT_HOSTS)
    console.print(
        f"Orchestrator state in [bold]{home}[/] ({Settings.load(home).url.split('://')[0]})."
    )
    _show_ca(home)
    console.print("Operator token (shown once, keep it secret):")
    console.print(token, soft_wrap=True, highlight=False)


def _show_ca(home: Path) -> None:
    """Where the CA's certificate is, and its fingerprint, for the operator to hand out."""
    from oncofed.edge.certificates import fingerprint_lines
    from oncofed.orchestrator import pki

    paths = pki.Paths.of(home)
    cert = pki.Authority.load(paths).cert
    console.print(Text(f"Consortium CA: {paths.ca_cert} (give it to every site with its token)"))
    console.print(Text("\n".join(fingerprint_lines(cert))))


@app.command()
@friendly
def ca(home: StateDir) -> None:
    """Print the consortium CA's certificate (PEM, on standard output: redirect it to a file
    for the sites) and its SHA-256 fingerprint (on standard error), which site admins compare
    with what ``oncofed edge init`` shows."""
    from oncofed.edge.certificates import fingerprint_lines
    from oncofed.orchestrator import pki

    paths = pki.Paths.of(home)
    cert = pki.Authority.load(paths).cert
    typer.echo(paths.ca_cert.read_text(), nl=False)
    err_console.print(Text("\n".join(fingerprint_lines(cert))))


@app.command()
@friendly
def certificate(home: StateDir, hosts: HostsOption = None) -> None:
    """Issue a new server certificate for the hosts edges dial (the consortium CA is kept;
    it is created for a state directory made before it existed). Restart serve to use it."""
    from oncofed.orchestrator import pki

    pki.initialise(home, hosts or pki.DEFAULT_HOSTS)
    console.print(Text(f"Server certificate: {pki.Paths.of(home).server_cert}"))
    _show_ca(home)


@app.command()
@friendly
def serve(
    home: StateDir,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8740,
    log_level: LogLevelOption = "info",
    plain_http: Annotated[
        bool,
        typer.Option(
            "--plain-http/--no-plain-http", help="Serve plain HTTP (a loopback address only)."
        ),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure/--no-insecure",
            help="Serve plain HTTP on any address (e.g. behind a proxy that does TLS).",
        ),
    ] = False,
) -> None:
    """Serve the API over HTTPS with the consortium CA's server certificate, edges
    authenticated by their client certificates (mutual TLS); the database is migrated to
    the newest schema first, and a small job rehearsed in a transaction rolled back, so that
    the first real job finds its statements compiled."""
    import uvicorn

    from oncofed._memory import bound_allocator, settle_collector
    from oncofed.orchestrator import tls
    from oncofed.orchestrator.app import create_app
    from oncofed.orchestrator.db import migrate
    from oncofed.orchestrator.errors import BadRequest
    from oncofed.orchestrator.rehearsal import rehearse
    from oncofed.orchestrator.settings import Settings

    plain = plain_http or insecure
    if plain and not insecure and not tls.is_loopback(host):
        raise BadRequest(
            f"plain HTTP is served on a loopback address only, not {host}: serve HTTPS "
            "(the default), or pass --insecure if a proxy in front does TLS"
        )
    with exclusive(home, "oncofed orchestrator serve"):  # released when the process ends
        setup_logging(log_level.upper())
        bound_allocator()
        settings = Settings.load(home)
        migrate(settings.url)
        application = create_app(settings)
        options = {} if plain else tls.mutual_tls(application, home)
        if insecure and not tls.is_loopback(host):
            err_console.print(
                Text(
                    f"WARNING: --insecure: plain HTTP on {host}:{port}. Tokens, credentials and "
                    "results cross the network unencrypted unless a proxy in front does TLS, "
                    "and edges are not authenticated by certificates.",
                    style="bold red",
                )
            )
        elif plain:
            err_console.print(Text(f"Serving plain HTTP on {host}:{port} (loopback only; no TLS)."))
        else:
            err_console.print(
                Text(f"Serving HTTPS on {host}:{port}; edges present client certificates.")
            )
        # before it listens: the first job as fast as later ones
        application.state.coordinator.blobs.make_folders()
        rehearse(application.state.engine)
        settle_collector()
        config = uvicorn.Config(
            application, host=host, port=port, log_level=log_level, access_log=False, **options
        )
        _server(config, application.state.notifier.close).run()


def _server(config: uvicorn.Config, closing: Callable[[], None]) -> uvicorn.Server:
    """uvicorn's server, which on SIGTERM or SIGINT first wakes the long polls (``closing``):
    they answer at once, so the shutdown waits for no poll's full wait."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            closing()
            super().handle_exit(sig, frame)

    return Server(config)


@app.command()
@friendly
def token(
    home: StateDir,
    name: Annotated[str, typer.Argument(help="Who the token is for.")],
    role: RoleOption = "researcher",
    site: Annotated[
        str | None, typer.Option(metavar="SITE", help="The site a site admin acts for.")
    ] = None,
    days: Annotated[
        float | None, typer.Option(min=0, help="Lifetime in days (default: the settings').")
    ] = None,
) -> None:
    """Add a person and print their first token (once). It works on the state directory: an
    operator whose tokens all expired adds another operator here."""
    from oncofed.orchestrator import setup as state

    created = state.add_principal(home, name, role, site, days)
    console.print(created.token, soft_wrap=True, highlight=False, markup=False)
