"""The live view of jobs: piped, what follows it starts on a line of its own; what sites
and researchers wrote is shown as text."""

from __future__ import annotations

import io

from rich.console import Console
from rich.panel import Panel

from oncofed.cli.watch import live_view, render_job
from oncofed.wire.messages import JobPublic


def test_output_after_a_piped_live_view_starts_a_new_line() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80)
    assert not console.is_terminal
    with live_view(console) as live:
        live.update(Panel("round 3 of 5"))
    console.print("next")
    lines = out.getvalue().splitlines()
    assert "round 3 of 5" in lines[1]
    assert lines[-1] == "next" and lines[-2].startswith("╰")
    assert max(len(line) for line in lines) == 80


def test_what_sites_and_researchers_wrote_is_shown_as_written() -> None:
    """A failed job's error quotes the sites' decline reasons, which a hostile site writes:
    markup in it (or in a site's name) is shown as text, never interpreted."""
    hostile = "[/bold] [link=https://evil.example]click[/link]"
    outcome = {"time": "os_days", "event": "os_event"}
    analysis = {"type": "kaplan_meier", "outcome": outcome}
    spec = {"kind": "analysis", "name": "km", "dataset": "gbsg2", "analysis": analysis}
    job = JobPublic.model_validate(
        {"id": "0" * 32, "name": spec["name"], "status": "failed", "spec": spec,
         "error": f"round 0 (analysis): 0 sites reported. gamma: declined ({hostile})",
         "created_at": "2026-12-01T00:00:00Z", "finished_at": None,
         "sites": ["gamma", "[red]delta"], "rounds": [], "model_sha256": None,
         "participation": {"sites": {
             "gamma": {"state": "declined", "round": 0, "reason": hostile},
             "[red]delta": {"state": "expired", "round": 0, "reason": "no answer"}}}}
    )  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=200).print(render_job(job))
    shown = out.getvalue()
    assert f"gamma: declined ({hostile})" in shown
    assert "[red]delta" in shown and shown.count(hostile) == 2  # in the error and the table


def test_the_live_view_shows_every_site_state_with_why_at_80_columns() -> None:
    """A running analysis: a site that declined says why (as written, folded at 80 columns),
    one still working says which round, one that took part its patients."""
    hostile = "[red]policy[/red] min_cohort_size=20: the job's cohort here is too small"
    analysis = {"type": "counts", "rows": "grade"}
    spec = {"kind": "analysis", "name": "c", "dataset": "gbsg2", "analysis": analysis}
    sites = {
        "north": {"state": "took_part", "round": 0, "n": 247, "counted": 247},
        "south": {"state": "declined", "round": 0, "reason": hostile},
        "university-hospital-east": {
            "state": "waiting",
            "round": 0,
            "reason": "round 0 (analysis) not answered yet",
        },
    }
    job = JobPublic.model_validate(
        {"id": "0" * 32, "name": "c", "status": "running", "spec": spec, "error": None,
         "created_at": "2026-12-01T00:00:00Z", "finished_at": None, "sites": list(sites),
         "rounds": [], "model_sha256": None, "participation": {"sites": sites}}
    )  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=80).print(render_job(job))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    cells = [[c.strip() for c in line.split("│")[2:-2]] for line in lines if "┃" not in line]
    assert ["north", "took part", "247", ""] in cells
    folded = " ".join(c[-1] for c in cells if len(c) == 4 and c[0] in ("south", ""))
    assert hostile in " ".join(folded.split())  # the whole reason, as written
    east = next(c for c in cells if c[:1] and c[0].startswith("university-"))  # folds
    assert east[1:3] == ["waiting", "-"] and east[3].startswith("round 0 (analysis)")
