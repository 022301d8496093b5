"""``oncofed edge budget``: the differential privacy this site spent, by project and job."""

from __future__ import annotations

import json

from rich.table import Table
from rich.text import Text

from oncofed._text import as_text
from oncofed.cli._common import TIME_WIDTH, EdgeDir, console, friendly, names_table
from oncofed.cli._output import JsonOption, print_table


@friendly
def show_budget(home: EdgeDir, as_json: JsonOption = False) -> None:
    """What this site's privacy budget allows, what each project spent of it and every charge:
    when, which job and task round, and its epsilon (each at the policy's delta; a project's
    spending is the composition of its charges, less than their sum)."""
    from oncofed.edge import EdgeHome
    from oncofed.edge.budget import Budget
    from oncofed.edge.ledger import Ledger

    edge = EdgeHome(home)
    limits = edge.policy().privacy_budget
    with Ledger(edge.root) as ledger:
        budget = Budget(ledger, edge.identity(), edge.config().site)
        spent, history = budget.spent(limits), budget.history()
    if as_json:
        document = {
            "limits": limits.model_dump(),
            "spent": {"total": spent.total, "projects": spent.projects, "jobs": spent.jobs},
            "charges": [
                {
                    "at": entry.charged_at.isoformat(),
                    "job": entry.job_id,
                    "project": entry.project,
                    "kind": entry.kind,
                    "round": entry.round,
                    "epsilon": entry.epsilon,
                }
                for entry in history
            ],
        }
        console.print_json(json.dumps(document))
        return
    head = (
        f"Privacy budget at delta {limits.delta:g}: epsilon {spent.total:.3f} spent of "
        f"{limits.epsilon_total:g} in all, at most {limits.epsilon_per_project:g} per project."
    )
    console.print(Text(head))
    projects = names_table("project", {"spent": 8, "left": 8}, title="by project")
    for name, epsilon in spent.projects.items():
        projects.add_row(as_text(name), f"{epsilon:.3f}", f"{spent.remaining(name):.3f}")
    console.print(projects if spent.projects else Text("Nothing spent yet."))
    if not history:
        return
    charges = Table(title="every charge (UTC)")
    charges.add_column("at", no_wrap=True, min_width=TIME_WIDTH)
    charges.add_column("project / job", overflow="fold")
    charges.add_column("round", justify="right", no_wrap=True)
    charges.add_column("epsilon", justify="right", no_wrap=True)
    for entry in history:
        charges.add_row(
            f"{entry.charged_at:%Y-%m-%d %H:%M}",
            as_text(f"{entry.project} / {entry.job_id}"),
            f"{entry.kind} {entry.round}",
            f"{entry.epsilon:.3f}",
        )
    print_table(console, charges)
