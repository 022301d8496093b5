"""What sites, researchers and the orchestrator wrote (decline reasons, site and job names,
error details, a data quality report's values) is shown as written: never read as rich
markup, with no terminal escape sequence of theirs reaching the screen or a pipe, without
crashing the command, at 80 columns."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from rich.errors import MarkupError
from rich.text import Text
from typer.testing import CliRunner

import oncofed.demo
from oncofed.cli import _common, job, site
from oncofed.cli.main import app
from oncofed.cli.profile_view import render_profile
from oncofed.cli.watch import render_job
from oncofed.client import Client, load_spec
from oncofed.wire.messages import API_PREFIX, JobPublic
from oncofed.wire.profile import FieldProfile
from tests.support import sample_profile

LINK = "[link=https://evil.example]click[/link]"
CRASH = "[/] [/bold] [bold"
OSC8 = "\x1b]8;;https://evil.example\x1b\\open me\x1b]8;;\x1b\\"
"""A terminal hyperlink: ``open me`` pointing at the attacker's address."""
ANSI = "\x1b[31mred\x1b[0m\x1b[2J\a"
"""A colour, a screen clear and the bell."""
HOSTILE = f"{LINK} {CRASH} {OSC8} {ANSI} \u202eevil"
SHOWN = f"{LINK} {CRASH} open me red evil"
"""How HOSTILE is shown: its markup as written, its escapes and controls gone."""
BAD_SITE = "[red]gamma\x1b[5m"
BAD_JOB = "km[/]\x1b]0;pwned\a"
ESCAPES = ("\x1b", "\x9b", "\x9d", "\a", "\u202e")

runner = CliRunner()


def _clean(out: str) -> None:
    """No escape or control sequence, and 80 columns at most."""
    assert not [e for e in ESCAPES if e in out], repr(out)
    assert max(len(line) for line in out.splitlines()) <= 80


def _squeezed(out: str) -> str:
    """A rendering without tables' borders or any white space: what reads the same however
    a narrow column folds it."""
    return "".join(out.replace("│", "").replace("┃", "").split())


def _has(out: str, text: str) -> bool:
    return _squeezed(text) in _squeezed(out)


def _column(out: str, k: int) -> str:
    """The k-th column of a table (the first is 1), its folded lines joined: squeezed."""
    cells = (re.split("[│┃]", line) for line in out.splitlines())
    return "".join(_squeezed(row[k]) for row in cells if len(row) > k + 1)


def test_the_attack_is_real_with_rich_markup() -> None:
    """Printed as rich markup, the text of a hostile site shows a clickable link to its
    address, or crashes the command; as a rich Text, its escapes still reach a pipe."""
    terminal = io.StringIO()
    Console(file=terminal, force_terminal=True).print(f"declined ({LINK})")
    assert "\x1b]8;" in terminal.getvalue() and "[link=" not in terminal.getvalue()
    for crash in CRASH.split()[:2]:
        with pytest.raises(MarkupError):
            Console(file=io.StringIO()).print(f"declined ({crash})")
    piped = io.StringIO()
    Console(file=piped).print(Text(f"{OSC8} {ANSI}"))
    assert "\x1b]8;;https://evil.example" in piped.getvalue() and "\x1b[2J" in piped.getvalue()


def _analysis_job() -> JobPublic:
    analysis = {"type": "kaplan_meier", "outcome": {"time": "os_days", "event": "os_event"}}
    spec = {"kind": "analysis", "name": "km", "dataset": "gbsg2", "analysis": analysis}
    return JobPublic.model_validate(
        {"id": "0" * 32, "name": BAD_JOB, "status": "failed", "spec": spec,
         "error": f"round 0 (analysis): 0 sites reported. gamma: declined ({HOSTILE})",
         "created_at": "2026-12-01T00:00:00Z", "finished_at": None,
         "sites": ["gamma", BAD_SITE], "rounds": [], "model_sha256": None,
         "participation": {"sites": {
             "gamma": {"state": "declined", "round": 0, "reason": HOSTILE},
             BAD_SITE: {"state": "expired", "round": 0, "reason": "no answer"}}}}
    )  # fmt: skip


def _training_job() -> JobPublic:
    """A training job whose table has a column per site, named as the site is."""
    spec = load_spec(Path(oncofed.demo.__file__).parent / "jobs" / "gbsg2_recurrence_5y.yaml")
    sites = {name: {"status": "accepted", "metrics": {"auc": 0.7}} for name in ("a", BAD_SITE)}
    first = {
        "number": 1,
        "kind": "train",
        "status": "closed",
        "sites": sites,
        "opened_at": "2026-12-01T00:00:00Z",
        "closed_at": "2026-12-01T00:01:00Z",
    }
    return JobPublic.model_validate(
        {"id": "1" * 32, "name": BAD_JOB, "status": "running", "error": HOSTILE,
         "spec": spec.model_dump(mode="json"), "created_at": "2026-12-01T00:00:00Z",
         "finished_at": None, "sites": list(sites), "rounds": [first], "model_sha256": None,
         "participation": {"sites": {"a": {"state": "waiting", "round": 1},
                                     BAD_SITE: {"state": "failed", "reason": HOSTILE}}}}
    )  # fmt: skip


@pytest.mark.parametrize("make", [_analysis_job, _training_job])
def test_the_live_view_shows_a_hostile_sites_text_as_written(make: Callable[[], JobPublic]) -> None:
    job = make()
    wide, narrow, terminal = io.StringIO(), io.StringIO(), io.StringIO()
    Console(file=wide, width=400).print(render_job(job))
    Console(file=narrow, width=80).print(render_job(job))
    Console(file=terminal, width=80, force_terminal=True).print(render_job(job))
    assert SHOWN in wide.getvalue() and "[red]gamma" in wide.getvalue()
    assert "km[/]" in wide.getvalue()  # the job's name, in the panel's title
    _clean(narrow.getvalue())
    assert "\x1b[" in terminal.getvalue()  # our own colours, on a terminal
    assert "\x1b]" not in terminal.getvalue()  # but no link, no title: no OSC of theirs


def test_a_data_quality_reports_values_are_shown_as_written() -> None:
    values = {HOSTILE: 20, "G1": 30}
    fields = [FieldProfile(table="tumour", field=f"grade{CRASH}", present=50, missing=0,
                           values=values)]  # fmt: skip
    narrow, wide = io.StringIO(), io.StringIO()
    Console(file=narrow, width=80).print(render_profile(sample_profile(fields=fields)))
    Console(file=wide, width=400).print(render_profile(sample_profile(fields=fields)))
    _clean(narrow.getvalue())
    assert f"grade{CRASH}" in wide.getvalue() and f"{SHOWN} 20 · G1 30" in wide.getvalue()


def _serve(monkeypatch: pytest.MonkeyPatch, routes: dict[str, tuple[int, Any]]) -> None:
    """Point the CLI's commands at an orchestrator that answers ``routes`` (path: status and
    JSON body), as a hostile or compromised one could."""

    def answer(request: httpx.Request) -> httpx.Response:
        status, body = routes[request.url.path.removeprefix(API_PREFIX)]
        return httpx.Response(status, content=json.dumps(body).encode())

    def fake(url: str | None, token: str | None) -> Client:
        return Client("http://orchestrator.test", "t" * 32, transport=httpx.MockTransport(answer))

    monkeypatch.setattr(site, "client", fake)
    monkeypatch.setattr(job, "client", fake)
    monkeypatch.setattr(_common.console, "_width", 80)
    monkeypatch.setattr(_common.err_console, "_width", 80)


def test_job_watch_shows_a_hostile_decline_reason_without_crashing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reported attack: ``oncofed job watch`` on a job a site declined with markup and
    escapes in its reason."""
    failed = _analysis_job()
    _serve(monkeypatch, {f"/jobs/{failed.id}": (200, failed.model_dump(mode="json"))})
    result = runner.invoke(app, ["job", "watch", failed.id])
    assert result.exit_code == 1 and not isinstance(result.exception, Exception)
    ended, view = result.output.split("\n", 1)  # piped: a whole line per event, then the view
    assert ended.startswith(f"job {failed.id} failed: ")
    assert not [e for e in ESCAPES if e in ended], repr(ended)
    _clean(view)
    assert _has(result.output, f"gamma: declined ({SHOWN})")


def test_listed_sites_and_jobs_show_their_names_as_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sites = [{"name": BAD_SITE + CRASH, "enrolled": True, "last_seen": None, "connected": False,
              "key_fingerprint": "[link=x]ab[/link]"}]  # fmt: skip
    jobs = [_analysis_job().model_dump(mode="json")]
    _serve(monkeypatch, {"/sites": (200, sites), "/jobs": (200, jobs)})
    listed = runner.invoke(app, ["site", "list"])
    assert listed.exit_code == 0, listed.output
    _clean(listed.output)
    assert _column(listed.output, 1).endswith(_squeezed(f"[red]gamma{CRASH}"))
    assert _column(listed.output, 5).endswith("[link=x]ab[/link]")
    jobs_listed = runner.invoke(app, ["job", "list"])
    assert jobs_listed.exit_code == 0, jobs_listed.output
    _clean(jobs_listed.output)
    assert "km[/]" in _column(jobs_listed.output, 1)


def test_an_orchestrators_error_detail_is_shown_as_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _serve(monkeypatch, {"/sites": (403, {"detail": HOSTILE})})
    result = runner.invoke(app, ["site", "list"])
    assert result.exit_code == 1 and not isinstance(result.exception, Exception)
    _clean(result.stderr)
    assert result.stderr.startswith("error: ") and _has(result.stderr, f"HTTP 403: {SHOWN}")


def test_log_lines_carry_no_escape_sequence() -> None:
    """The orchestrator logs a site's decline reason: its escapes never reach the journal or
    the operator's terminal."""
    formatter = _common._PlainFormatter("%(name)s: %(message)s")
    record = logging.LogRecord("oncofed", logging.INFO, __file__, 1, "site %s declined: %s",
                               (BAD_SITE, HOSTILE), None)  # fmt: skip
    line = formatter.format(record)
    assert line == f"oncofed: site [red]gamma declined: {SHOWN}"
    assert logging.Formatter("%(message)s").format(record).count("\x1b") > 0  # the naive one
