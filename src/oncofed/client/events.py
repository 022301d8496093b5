"""What happened to a job between two of its records: rounds opened, sites answered, rounds
closed with their metrics, the job ended. ``oncofed job watch`` prints them one per line when
piped, and as JSON lines with ``--json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from oncofed._text import plain
from oncofed.wire.messages import JobPublic, RoundPublic

EventKind = Literal["round_opened", "site_answered", "round_closed", "ended"]
WAITING = frozenset({"pending", "delivered", "shares"})
"""A site's task states before its answer is in (``shares``: a secure round's first phase)."""


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to job ``job``; the fields that do not apply are None."""

    event: EventKind
    job: str
    round: int | None = None
    kind: str | None = None
    site: str | None = None
    status: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The event for JSON, without the fields that do not apply."""
        return {key: value for key, value in asdict(self).items() if value not in (None, "", {})}

    def line(self) -> str:
        """One plain line: ``round 2 (train) closed: train_loss 0.5123, auc 0.714``."""
        where = f"round {self.round} ({self.kind})"
        said = f": {plain(self.detail)}" if self.detail else ""
        if self.event == "round_opened":
            return f"{where} opened"
        if self.event == "site_answered":
            return f"{where} {plain(self.site)}: {self.status}{said}"
        if self.event == "round_closed":
            numbers = ", ".join(
                f"{plain(name)} {value:.4g}" for name, value in self.metrics.items()
            )
            return f"{where} closed" + (f": {numbers}" if numbers else "")
        return f"job {self.job} {self.status}{said}"


def job_events(before: JobPublic | None, after: JobPublic) -> list[JobEvent]:
    """The events that lead from record ``before`` (None: none seen yet, so every event of
    the job's history so far) to record ``after`` of the same job, in order."""
    seen = {r.number: r for r in before.rounds} if before is not None else {}
    events: list[JobEvent] = []
    for rnd in after.rounds:
        events += _round_events(after.id, seen.get(rnd.number), rnd)
    if after.status != "running" and (before is None or before.status == "running"):
        events.append(JobEvent("ended", after.id, status=after.status, detail=after.error or ""))
    return events


def _round_events(job: str, old: RoundPublic | None, rnd: RoundPublic) -> list[JobEvent]:
    """A round's events since ``old``, its earlier record (None: not seen yet)."""
    at: dict[str, Any] = {"round": rnd.number, "kind": rnd.kind}
    events = [] if old is not None else [JobEvent("round_opened", job, **at)]
    for site, now in rnd.sites.items():
        was = old.sites.get(site) if old is not None else None
        if now.status not in WAITING and (was is None or was.status != now.status):
            events.append(
                JobEvent(
                    "site_answered", job, site=site, status=now.status, detail=now.detail, **at
                )
            )
    if rnd.status == "closed" and (old is None or old.status != "closed"):
        loss = {} if rnd.train_loss is None else {"train_loss": rnd.train_loss}
        events.append(JobEvent("round_closed", job, metrics=loss | rnd.metrics, **at))
    return events
