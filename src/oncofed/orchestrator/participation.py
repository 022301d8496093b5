"""Who is in a job's result: each site's state with its reason and counts, worked out once from
the records of its tasks (and an analysis' report), for every view of the job (``job watch``,
``job result``, ``report.json``, the Python client).

A site's state is that of its last task: still open (``waiting``; a round that closed without
its answer: ``failed``), ``declined``, ``expired``, refused (``failed``), or accepted. An
accepted site ``took_part`` with the counts it reported, or is ``suppressed`` when every group
or cell it sent is hidden, so that an empty answer is never shown as a plain acceptance.
"""

from __future__ import annotations

import json
import unicodedata
from collections import defaultdict
from itertools import chain

from oncofed.orchestrator.db import Job, Round, Task
from oncofed.orchestrator.progress import WITHDRAWN, parse_spec
from oncofed.orchestrator.secure import stored_header
from oncofed.wire.analysis import (
    AnalysisReport,
    AnalysisResult,
    AnalysisSpec,
    CountsPart,
    CountsReport,
    KaplanMeierAnalysis,
    RegressionPart,
    RegressionReport,
    RiskSetPart,
    SummaryPart,
    SummaryReport,
    SurvivalPart,
    SurvivalReport,
)
from oncofed.wire.messages import (
    IN_RESULT,
    EvaluateResult,
    Participation,
    SiteState,
    SiteStatus,
    StatsResult,
    TrainResult,
)
from oncofed.wire.profile import Cell
from oncofed.wire.spec import JobSpec

MAX_REASON = 300
"""Characters of a reason shown (a site writes its decline reasons, up to 2000)."""
SECURE_NOTE = "in the secure sums; no one saw its own numbers"
_FINAL = {
    "declined": SiteState.DECLINED,
    "failed": SiteState.FAILED,
    "expired": SiteState.EXPIRED,
    "rejected": SiteState.FAILED,
    WITHDRAWN: SiteState.CANCELLED,
}


_LEFT = (SiteState.DECLINED, SiteState.EXPIRED, SiteState.FAILED, SiteState.CANCELLED)
"""The states of a site not in the result."""


def participation(job: Job, report: AnalysisReport | None) -> Participation:
    """Every site of ``job`` with its state, and for an analysis (its ``report`` once done)
    the pooled n beside the sum of the cohort sizes the sites in it reported."""
    spec = parse_spec(job.spec_json)
    tasks = _by_site(job.rounds)
    sites = {name: site_status(spec, report, tasks[name]) for name in json.loads(job.sites_json)}
    if not isinstance(spec, AnalysisSpec):
        return Participation(sites=sites)
    counted = [s.n for s in sites.values() if s.state in IN_RESULT]
    known = [n for n in counted if n is not None]
    return Participation(
        sites=sites,
        pooled_n=None if report is None else pooled_n(report),
        reported_n=sum(known) if counted and len(known) == len(counted) else None,
        noisy=spec.privacy.differential_privacy is not None,
    )


def left_out(job: Job) -> dict[str, str]:
    """The sites of ``job`` not in its result, as ``state: reason`` (a report's ``excluded``)."""
    spec, tasks = parse_spec(job.spec_json), _by_site(job.rounds)
    states = {site: site_status(spec, None, own) for site, own in tasks.items()}
    return {site: f"{s.state.label}: {s.reason}" for site, s in states.items() if s.state in _LEFT}


def _by_site(rounds: list[Round]) -> defaultdict[str, list[Task]]:
    tasks: defaultdict[str, list[Task]] = defaultdict(list)
    for task in chain.from_iterable(r.tasks for r in sorted(rounds, key=lambda r: r.number)):
        tasks[task.site.name].append(task)
    return tasks


_ENDED = {"failed": "failed", "cancelled": "was cancelled"}
"""How a job that ended before a site answered its round ended, by its status."""


def site_status(
    spec: JobSpec | AnalysisSpec, report: AnalysisReport | None, tasks: list[Task]
) -> SiteStatus:
    """One site's state from its ``tasks`` in round order (see the module docstring)."""
    if not tasks:
        return SiteStatus(state=SiteState.WAITING, reason="no task yet")
    last = tasks[-1]
    rnd = last.round
    if last.status in _FINAL:
        detail = clean(last.detail or "")
        reason = f"its answer was refused: {detail}" if last.status == "rejected" else detail
        return SiteStatus(state=_FINAL[last.status], reason=reason, round=rnd.number)
    if last.status != "accepted":
        if rnd.status == "open":
            phase = f", secure: {rnd.phase}" if rnd.phase else ""
            reason = f"round {rnd.number} ({rnd.kind}{phase}) not answered yet"
            return SiteStatus(state=SiteState.WAITING, reason=reason, round=rnd.number)
        ended = _ENDED.get(rnd.job.status, "moved on")
        reason = f"its round ended before it answered (the job {ended})"
        return SiteStatus(state=SiteState.FAILED, reason=reason, round=rnd.number)
    status = _trained(tasks) if isinstance(spec, JobSpec) else _analysed(spec, report, last)
    missed = [f"round {t.round.number} ({_missed(t)})" for t in tasks[:-1]
              if t.status in ("expired", "rejected")]  # fmt: skip
    if not missed:
        return status
    return status.model_copy(update={"reason": _join(status.reason, f"not in {', '.join(missed)}")})


def _missed(task: Task) -> str:
    """Why a training site that answered again later is not in an earlier round."""
    if task.status == "expired":
        return "no answer before its deadline"
    return f"its answer was refused: {clean(task.detail or '')}"


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _trained(tasks: list[Task]) -> SiteStatus:
    """A site of a training job whose last task was accepted: its training and held-out rows
    (under secure aggregation only their sums are known)."""
    number = tasks[-1].round.number
    answered = [t for t in tasks if t.status == "accepted" and t.result_json]
    if tasks[-1].round.phase is not None:
        spent = [stored_header(t).clear.epsilon for t in answered if t.round.kind == "train"]
        return SiteStatus(
            state=SiteState.TOOK_PART, reason=SECURE_NOTE, round=number, epsilon=_most(spent)
        )
    n = n_eval = None
    spent = []
    for task in answered:
        text = task.result_json or ""
        kind = task.round.kind
        if kind == "stats":
            n = StatsResult.model_validate_json(text).n
        elif kind == "train":
            trained = TrainResult.model_validate_json(text)
            spent = [*spent, trained.epsilon]
            if trained.evaluation is not None:  # a round the job scores
                n_eval = trained.evaluation.n_eval
        else:
            n_eval = EvaluateResult.model_validate_json(text).evaluation.n_eval
    return SiteStatus(
        state=SiteState.TOOK_PART, round=number, n=n, n_eval=n_eval, epsilon=_most(spent)
    )


def _most(spent: list[float | None]) -> float | None:
    """The largest epsilon a site reported (what the job spent there by its last round)."""
    known = [e for e in spent if e is not None]
    return max(known) if known else None


def _analysed(spec: AnalysisSpec, report: AnalysisReport | None, last: Task) -> SiteStatus:
    """A site of an analysis whose last answer was accepted: what it counts in the result."""
    number = last.round.number
    own = report.pooled_only.get(last.site.name) if report is not None else None
    own_note = f"in the pooled fit, not in the per-site estimates: {clean(own)}" if own else ""
    if last.round.phase is not None:
        reason = _join(SECURE_NOTE, own_note)
        spent = stored_header(last).clear.epsilon
        return SiteStatus(state=SiteState.TOOK_PART, reason=reason, round=number, epsilon=spent)
    result = AnalysisResult.model_validate_json(last.result_json or "")
    part, n = result.part, result.cohort
    if isinstance(part, RegressionPart | RiskSetPart):
        events = part.events if isinstance(part, RegressionPart) else sum(part.events)
        return SiteStatus(
            state=SiteState.TOOK_PART,
            reason=own_note,
            round=number,
            n=n,
            counted=part.n,
            events=events,
        )
    if isinstance(part, CountsPart):
        one_way = len(part.cells[0]) == 1
        inner = [c for row in part.cells[:-1] for c in (row if one_way else row[:-1])]
        return _grouped(inner, part.cells[-1][-1], "cells").model_copy(
            update={"round": number, "n": n}
        )
    if isinstance(part, SummaryPart):
        status = _grouped(part.histogram, part.n, "counts of the histogram")
        status = status.model_copy(update={"round": number, "n": n})
        if isinstance(part.n, int):
            return status
        reason = (
            "its count of values is a small cell, hidden: it adds nothing to the pooled count, "
            "mean or standard deviation"
        )
        return status.model_copy(update={"state": SiteState.SUPPRESSED, "reason": reason})
    analysis = spec.analysis
    assert isinstance(part, SurvivalPart) and isinstance(analysis, KaplanMeierAnalysis)
    return _survival(analysis, report, part).model_copy(update={"round": number, "n": n})


def _grouped(cells: list[Cell], total: Cell, what: str) -> SiteStatus:
    """A site's count table or histogram: its hidden cells (``<11``, ``suppressed``) noted,
    and ``suppressed`` when all are hidden."""
    hidden = sum(not isinstance(c, int) for c in cells)
    if hidden == len(cells):
        state, reason = SiteState.SUPPRESSED, f"all its {what} are small cells, hidden"
    else:
        state = SiteState.TOOK_PART
        reason = f"{hidden} of its {len(cells)} {what} hidden (small cells)" if hidden else ""
    return SiteStatus(state=state, reason=reason, counted=total, groups=len(cells), hidden=hidden)


def _survival(
    analysis: KaplanMeierAnalysis, report: AnalysisReport | None, part: SurvivalPart
) -> SiteStatus:
    """A Kaplan-Meier site: the groups it sent a series for, and its patients at their start
    that are in the pooled curves (a group with no event at any site has no curve)."""
    from oncofed.analytics.survival import group_names  # scipy: analyses only

    names = group_names(analysis)
    curves = report.groups if isinstance(report, SurvivalReport) else {}
    counted = sum(s.at_risk[0] for g, s in part.groups.items() if g in curves and s.at_risk)
    missing = [g for g in names if g not in part.groups]
    groups = {"groups": len(names), "hidden": len(missing)}
    small = "no patients, or too few patients or events here"
    if not part.groups:
        reason = f"it sent no group ({small}): it adds nothing to the curves"
        return SiteStatus(state=SiteState.SUPPRESSED, reason=reason, counted=0, **groups)
    reason = f"no series for {', '.join(missing)} ({small})" if missing else ""
    return SiteStatus(state=SiteState.TOOK_PART, reason=reason, counted=counted, **groups)


def pooled_n(report: AnalysisReport) -> Cell:
    """The patients an analysis' pooled result counts: a table's total, a summary's count of
    values, the patients at the start of the curves, a regression's complete cases."""
    if isinstance(report, CountsReport):
        return report.pooled.cells[-1][-1]
    if isinstance(report, SummaryReport):
        return report.pooled.n
    if isinstance(report, SurvivalReport):
        return sum(c.at_risk[0] for c in report.groups.values() if c.at_risk)
    assert isinstance(report, RegressionReport)
    return report.n


def clean(text: str) -> str:
    """A reason as it may be shown: control characters as spaces, on one line, at most
    ``MAX_REASON`` characters."""
    printable = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    flat = " ".join(printable.split())
    return flat if len(flat) <= MAX_REASON else flat[: MAX_REASON - 1] + "…"
