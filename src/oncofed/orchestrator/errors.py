"""Errors of the orchestrator's services, each carrying the HTTP status the API maps it to."""


class OrchestratorError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(OrchestratorError):
    status_code = 400


class Unauthorized(OrchestratorError):
    status_code = 401


class Forbidden(OrchestratorError):
    status_code = 403


class NotFound(OrchestratorError):
    status_code = 404


class Conflict(OrchestratorError):
    status_code = 409


class PayloadTooLarge(OrchestratorError):
    status_code = 413


class QuotaExceeded(OrchestratorError):
    """A researcher's job would go beyond one of their quotas (``quotas.py``)."""

    status_code = 403
