"""Errors of the edge node."""


class EdgeError(Exception):
    """Base for edge failures shown to the site admin."""


class StoreError(EdgeError):
    """A local dataset is missing or cannot be read."""


class PolicyViolation(EdgeError):
    """A task the site's local policy does not allow; the edge declines it."""


class EnrolmentError(EdgeError):
    """Enrolment with the orchestrator failed."""
