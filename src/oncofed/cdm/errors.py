"""Errors raised while importing a site's data into the common data model."""

from __future__ import annotations


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
