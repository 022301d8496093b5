"""What a closed analysis round turns into: the next Newton round, the report, or a failure in
plain words. The orchestrator stores the first and sends the sites its parameters."""

from __future__ import annotations

from dataclasses import dataclass

from oncofed.analytics.newton import NewtonState
from oncofed.wire.analysis import AnalysisReport


@dataclass(frozen=True)
class NextRound:
    """Another Newton round: the state to keep and what each site is sent."""

    state: NewtonState


@dataclass(frozen=True)
class Finished:
    report: AnalysisReport


@dataclass(frozen=True)
class Failed:
    error: str


Outcome = NextRound | Finished | Failed
