"""Errors of the edge node."""

from __future__ import annotations

from pathlib import Path


class EdgeError(Exception):
    """Base for edge failures shown to the site admin."""


class StoreError(EdgeError):
    """A local dataset is missing or cannot be read."""


class PolicyViolation(EdgeError):
    """A task the site's local policy does not allow; the edge declines it."""


class EnrolmentError(EdgeError):
    """Enrolment with the orchestrator failed."""


class PolicyFileError(EdgeError):
    """The site's policy file is missing, unreadable or invalid: the edge declines every task
    until it is fixed. ``problems`` continue the file's path, one per mistake, first line first
    (``line 7: min_cohort_size: Input should be a valid integer``); the message is the first."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        more = len(problems) - 1
        listed = f" (and {more} more; 'oncofed edge check' lists them)" if more else ""
        super().__init__(f"{path} {problems[0]}{listed}")
