"""``oncofed edge``: the site admin's commands, run inside the hospital."""

from __future__ import annotations

import signal
import threading
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from oncofed._files import exclusive, private_dir
from oncofed._text import as_text, plain
from oncofed.cli import audit, budget, plugins, projects
from oncofed.cli._common import (
    FINGERPRINT_WIDTH,
    TIME_WIDTH,
    EdgeDir,
    LogLevelOption,
    NewEdgeDir,
    console,
    friendly,
    names_table,
    setup_logging,
)
from oncofed.cli._common import _made_by as made_by
from oncofed.cli._output import print_table

if TYPE_CHECKING:
    from oncofed.edge.agent import Agent

app = typer.Typer(help="Run an edge node inside a hospital.", no_args_is_help=True)


class SourceFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"
    omop = "omop"
    fhir = "fhir"


@app.command()
@friendly
def init(
    home: NewEdgeDir,
    orchestrator: Annotated[
        str, typer.Option(metavar="URL", help="Orchestrator URL, e.g. https://fl.example.org")
    ],
    token: Annotated[
        str, typer.Option(metavar="TOKEN", help="One-time enrolment token from the operator.")
    ],
    ca: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="The consortium CA's certificate from the operator (required for https).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force/--no-force",
            help="Enrol a directory enrolled already, replacing its credential (the identity "
            "key, policy, datasets and audit log are kept).",
        ),
    ] = False,
) -> None:
    """Enrol this site. Its credential is stored in the edge directory and never printed.
    With the CA file, the orchestrator is verified against that CA alone, and the site gets
    a client certificate for its identity key (kept there too, renewed by the agent)."""
    from oncofed.edge import EdgeHome
    from oncofed.edge.enrol import enrol, enrolment_of

    edge = EdgeHome(home)
    private_dir(home)
    with exclusive(home, "oncofed edge process"):  # not under a running edge
        replaced = enrolment_of(edge) if force and edge.enrolled else None
        config = enrol(edge, orchestrator, token, ca, replace=force)
    if replaced is not None:
        console.print(Text.assemble("Replaced the credential of ", as_text(replaced), "."))
    console.print(
        Text.assemble("Enrolled as site ", as_text(config.site, style="bold"),
                      f"; settings and policy in {home}.")
    )  # fmt: skip
    if ca is not None:
        from cryptography import x509

        from oncofed.edge.certificates import fingerprint_lines

        pinned = x509.load_pem_x509_certificate(edge.ca_file.read_bytes())
        lines = ["Consortium CA pinned; compare with the operator's:", *fingerprint_lines(pinned)]
        console.print(Text("\n".join(lines)))


@app.command("import")
@friendly
def import_data(
    source: Annotated[str, typer.Argument(help="File, folder or (OMOP) database URL.")],
    home: NewEdgeDir,
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="Dataset name jobs use.")],
    source_format: Annotated[
        SourceFormat, typer.Option("--from", help="Source format.", case_sensitive=False)
    ],
    mapping: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Mapping file (YAML), for csv and parquet sources."),
    ] = None,
) -> None:
    """Import local data into the common data model: validate, de-identify, pseudonymise, store,
    and print the data quality report (small cells suppressed) that the agent will publish."""
    from oncofed.cli.profile_view import render_profile
    from oncofed.edge import EdgeHome
    from oncofed.edge.importing import Source, import_source
    from oncofed.edge.store import LocalStore

    edge = EdgeHome(home)
    imported = import_source(
        LocalStore(edge.datasets),
        name,
        Source(source_format.value, source, mapping),
        threshold=edge.policy_or_default().small_cell_threshold,
    )
    console.print(render_profile(imported.profile))
    for note in imported.notes:  # for the site admin only; never sent
        console.print(f"note: {note}", highlight=False, markup=False)
    if imported.rejected_list is not None and any(imported.profile.rejected.values()):
        console.print(
            f"Patients left out, each with every reason (for you alone, never sent): "
            f"{imported.rejected_list}",
            highlight=False,
            markup=False,
        )
    console.print(
        f"Dataset [bold]{name}[/] stored in {edge.datasets / name}; "
        "the edge agent publishes the report above, never a row."
    )


@app.command("datasets")
@friendly
def datasets(home: EdgeDir) -> None:
    """Imported datasets and what their data quality reports say."""
    from oncofed.edge import EdgeHome
    from oncofed.edge.store import LocalStore

    table = Table("dataset", "from", "imported (UTC)", "patients", "rejected")
    for profile in LocalStore(EdgeHome(home).datasets).profiles():
        table.add_row(
            profile.dataset,
            profile.source_format,
            f"{profile.imported_at:%Y-%m-%d %H:%M}",
            str(profile.patients),
            ", ".join(f"{reason}: {n}" for reason, n in profile.rejected.items()) or "none",
        )
    print_table(console, table)


@app.command()
@friendly
def check(
    home: Annotated[
        Path,
        typer.Option("--dir", metavar="DIR", help="Edge directory.", exists=True, file_okay=False),
    ],
) -> None:
    """Check this edge's settings, credential, identity key, policy and every dataset, and
    print what the site accepts. Exit code 1 when anything is wrong; nothing is sent."""
    from oncofed.edge import EdgeHome
    from oncofed.edge.check import accepts, check_edge

    edge = EdgeHome(home)
    report = check_edge(edge)
    found = _grid(3)
    for finding in report.findings:
        style = STATUS_STYLES[finding.status]
        status = Text(finding.status, style=style)
        found.add_row(status, as_text(finding.subject), as_text(finding.detail))
    console.print(Text(f"Edge {edge.root}"), found, sep="\n")
    console.print()
    if report.policy is None:
        fix = edge.policy_file.name
        console.print(
            Text(f"This site accepts nothing: it declines every task until {fix} is fixed.")
        )
    else:
        accepted = _grid(2)
        for topic, said in accepts(report.policy, report.datasets):
            accepted.add_row(Text(topic), Text(said))
        console.print(Text(f"What this site accepts ({edge.policy_file.name}):"), accepted)
    if not report.valid:
        raise typer.Exit(1)


STATUS_STYLES = {"ok": "green", "warning": "yellow", "error": "bold red"}


def _grid(columns: int) -> Table:
    """Columns side by side without borders: every one but the last as wide as its longest
    cell (names fold after 24 characters), the last wrapping to the console's width."""
    grid = Table.grid(padding=(0, 2))
    for _ in range(columns - 1):
        grid.add_column(max_width=24, overflow="fold")
    grid.add_column(overflow="fold")
    return grid


@app.command()
@friendly
def identity(home: EdgeDir) -> None:
    """Fingerprints of this site's identity key, the orchestrator's and the pinned peers'.

    Compare them with the other sites' admins over a channel you trust, then list them in
    policy.yaml as trusted_peers to make them the only ones accepted.
    """
    from oncofed.edge import EdgeHome
    from oncofed.edge.ledger import Ledger
    from oncofed.privacy.secagg import fingerprint, public_bytes

    edge = EdgeHome(home)
    config, policy = edge.config(), edge.policy()
    own = fingerprint(public_bytes(edge.identity()))
    console.print(f"site {plain(config.site)}: {own}", highlight=False, markup=False)
    pinned = config.orchestrator_key
    orchestrator = fingerprint(bytes.fromhex(pinned)) if pinned else "not pinned yet"
    console.print(f"orchestrator: {orchestrator}", highlight=False, markup=False)
    with Ledger(edge.root, policy.trusted_peers) as ledger:
        peers = ledger.peers()
    mode = "trusted_peers (strict)" if policy.trusted_peers is not None else "first use"
    widths = {"fingerprint": FINGERPRINT_WIDTH, "pinned (UTC)": TIME_WIDTH}
    table = names_table("peer site", widths, title=f"peers, pinned on {mode}")
    for site, print_, seen in peers:
        table.add_row(as_text(site), print_, f"{seen:%Y-%m-%d %H:%M}")
    if peers:
        print_table(console, table)
    else:
        console.print("no peer keys pinned yet (none until a secure round)")


def _edge_dirs(homes: list[Path]) -> list[Path]:
    """Each ``--dir`` of ``edge run``: one ``oncofed edge init`` made."""
    check = made_by("oncofed edge init")
    return [check(home) for home in homes]


EdgeDirs = Annotated[
    list[Path],
    typer.Option(
        "--dir",
        metavar="DIR",
        help="Edge directory (made by edge init); repeat it to serve several sites from one "
        "process, each with its own credential, policy, data, ledger and egress log.",
        file_okay=False,
        callback=_edge_dirs,
        show_default=False,
    ),
]


@app.command()
@friendly
def run(
    homes: EdgeDirs,
    poll_seconds: Annotated[float, typer.Option(min=0, help="Long-poll duration.")] = 25.0,
    threads: Annotated[int, typer.Option(min=1, help="Torch CPU threads for local training.")] = 1,
    log_level: LogLevelOption = "info",
) -> None:
    """Run the agent: dial out, long-poll for tasks, work locally, post results. Ctrl-C stops.
    One agent runs on an edge directory at a time. Several --dir serve several sites from one
    process (an agent each, in its own thread, training one at a time): a site's failure or
    bad policy leaves the others running, and its log lines begin with its name."""
    from oncofed.edge.compute import torch_threads
    from oncofed.edge.host import distinct

    torch_threads(threads)  # applied when a task first trains, once for the whole process
    if len(distinct(homes)) > 1:
        _run_sites(homes, poll_seconds, log_level)
        return
    from oncofed.edge import EdgeHome
    from oncofed.edge.agent import Agent

    [home] = homes
    with exclusive(home, "oncofed edge run"):  # released when the process ends
        _rehearse()
        setup_logging(log_level.upper())
        signal.signal(signal.SIGTERM, _interrupt)
        agent = Agent(EdgeHome(home), poll_seconds=poll_seconds)
        threading.Thread(target=_freeze_once_started, args=(agent,), daemon=True).start()
        console.print(
            Text.assemble("Edge ", as_text(agent.site, style="bold"),
                          f" polling {agent.orchestrator} (no listening port).")
        )  # fmt: skip
        try:
            agent.run()
        except KeyboardInterrupt:
            console.print("Stopped. A task cut short is sent again by the orchestrator on restart.")
        finally:
            agent.close()


def _rehearse() -> None:
    """Once for the process, its sites' directories held and before they poll: a scratch
    site's statistics tasks (``oncofed.edge.rehearsal``), whose logs are not shown (logging
    is set up after)."""
    from oncofed.edge.rehearsal import rehearse

    rehearsed = rehearse()
    if rehearsed:
        console.print(f"Rehearsed {rehearsed} statistics tasks of a scratch site (nothing sent).")


def _freeze_once_started(agent: Agent) -> None:
    """Once ``agent`` has started (``Agent.started``), what the process holds (torch, the
    site's data, its statements) is never scanned again by the garbage collector."""
    from oncofed._memory import frozen_at_start

    agent.started.wait()
    frozen_at_start()


def _run_sites(homes: list[Path], poll_seconds: float, log_level: str) -> None:
    """``edge run`` with several directories: every site's agent in a thread of this process
    (``oncofed.edge.host``) until SIGTERM or Ctrl-C stops them all."""
    from oncofed._memory import frozen_at_start
    from oncofed.edge import EdgeHome
    from oncofed.edge.host import EdgeHost, locked

    with locked(homes):  # released when the process ends
        _rehearse()
        setup_logging(log_level.upper())
        host = EdgeHost(
            [EdgeHome(home) for home in homes], poll_seconds=poll_seconds, settle=frozen_at_start
        )
        for agent in host.open():
            console.print(
                Text.assemble("Edge ", as_text(agent.site, style="bold"),
                              f" polling {agent.orchestrator} (no listening port).")
            )  # fmt: skip
        stop = threading.Event()

        def _stop(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        host.run(stop)
        console.print("Stopped. A task cut short is sent again by the orchestrator on restart.")


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM stops the agent like Ctrl-C, even in the middle of a long poll."""
    raise KeyboardInterrupt


app.add_typer(audit.edge_app, name="audit")
app.command("plugins")(plugins.list_plugins)
app.command("projects")(projects.edge_projects)
app.command("approve")(projects.approve)
app.command("decline")(projects.decline)
app.command("budget")(budget.show_budget)
