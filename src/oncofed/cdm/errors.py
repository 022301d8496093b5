"""Errors raised while importing a site's data into the common data model."""

from __future__ import annotations

from dataclasses import dataclass


class CdmError(Exception):
    """Base: a source or mapping that cannot be imported; the message says where and why."""


class MappingError(CdmError):
    """A mapping file is invalid; the message names the file, line and field."""


class SourceError(CdmError):
    """A source file, folder, bundle or database cannot be read or lacks what is needed."""


class IdentifierRefused(CdmError):
    """A column looks like a direct identifier or a calendar date and is never stored."""

    def __init__(self, column: str, rule: str, detail: str) -> None:
        super().__init__(
            f"column {column!r} refused ({rule}): {detail}; "
            "direct identifiers and calendar dates are never stored at import"
        )
        self.column, self.rule = column, rule


@dataclass(frozen=True)
class RejectedPatient:
    """A patient an import left out, for the site admin's local list only (never sent)."""

    key: str
    """The source's own patient key ('' for a row that has none)."""
    where: str
    """Where the patient is in the source: a bundle file and entry, a table, a file and row."""
    reasons: tuple[str, ...]
    """Every rule the patient's rows break (``table.field: rule``), not only the first."""
