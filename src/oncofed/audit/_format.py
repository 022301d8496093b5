"""The chain format: what an entry holds, its canonical JSON and its hash, and the rule that
keeps patient values out of it.

An entry's hash is the SHA-256 of its canonical JSON (sorted keys, compact separators, ASCII,
times in UTC ISO 8601 with microseconds and ``Z``), which includes the previous entry's hash
(``GENESIS``, 64 zeros, for the first): changing, removing, adding or moving an entry breaks
the link to every entry after it.

What an entry may say (``check_detail``): a flat object of short facts. Keys are lower-case
identifiers; values are integers (counts of sites, rounds, bytes, a policy version), booleans,
short text (ids, names, SHA-256 hashes, endpoints, reasons: at most ``MAX_TEXT`` characters,
no control characters) or lists of names (the sites of a round). Floats, nested objects and
long text are refused: metrics, aggregates, model numbers and table rows cannot be written,
whoever calls ``record``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
"""The previous hash of the first entry."""
MAX_TEXT = 200
"""Longest text value (and actor) of an entry, in characters."""
MAX_NAME = 64
"""Longest name in a list (a site's name), and of ``project``, ``site`` and ``user``."""
MAX_ITEMS = 10_000
"""Most names in a list."""
MAX_KEYS = 32
"""Most facts in one entry's detail."""
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

Value = str | int | bool | list[str] | None
Detail = dict[str, Value]


class AuditError(ValueError):
    """An entry that may not be written (a float, long text, a nested object...)."""


@dataclass(frozen=True)
class Entry:
    """One event. ``seq``, ``prev_hash`` and ``hash`` are None until it is chained."""

    at: datetime
    actor: str
    action: str
    project: str | None
    site: str | None
    user: str | None
    detail: Detail
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def canonical(self) -> bytes:
        """The bytes hashed: every field but ``hash``."""
        return canonical(
            {
                "seq": self.seq,
                "at": iso(self.at),
                "actor": self.actor,
                "action": self.action,
                "project": self.project,
                "site": self.site,
                "user": self.user,
                "detail": self.detail,
                "prev_hash": self.prev_hash,
            }
        )

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def canonical(value: object) -> bytes:
    """JSON with sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_of(value: object) -> str:
    """SHA-256 of ``value``'s canonical JSON (of a job spec's ``model_dump(mode="json")``, the
    hash an edge pins for the job)."""
    return hashlib.sha256(canonical(value)).hexdigest()


def iso(at: datetime) -> str:
    if at.tzinfo is None:
        raise AuditError("an entry's time must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def clip(text: object, limit: int = MAX_TEXT) -> str:
    """Free text (a reason, an error) made fit for an entry: control characters and runs of
    white space become one space, and it is cut to ``limit`` characters (ending in '...')."""
    flat = " ".join(_CONTROL.sub(" ", str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def check_text(value: object, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise AuditError(f"{what} must be text, not {type(value).__name__}")
    if len(value) > limit:
        raise AuditError(f"{what} is {len(value)} characters long; at most {limit} (use clip)")
    if _CONTROL.search(value):
        raise AuditError(f"{what} holds control characters (use clip)")
    return value


def check_action(action: str) -> str:
    if not _ACTION.match(check_text(action, "action", 48)):
        raise AuditError(f"action {action!r} is not a dotted lower-case name")
    return action


def check_detail(detail: Mapping[str, Any] | None) -> Detail:
    """``detail`` as an entry may hold it (see the module docstring), or ``AuditError``."""
    if detail is None:
        return {}
    if not isinstance(detail, Mapping):
        raise AuditError(f"an entry's detail is an object, not {type(detail).__name__}")
    if len(detail) > MAX_KEYS:
        raise AuditError(f"an entry's detail holds at most {MAX_KEYS} facts")
    checked: Detail = {}
    for key, value in detail.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise AuditError(f"detail key {key!r} is not a short lower-case identifier")
        checked[key] = _check_value(key, value)
    return checked


def _check_value(key: str, value: object) -> Value:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return check_text(value, f"detail {key!r}")
    if isinstance(value, list | tuple):
        if len(value) > MAX_ITEMS:
            raise AuditError(f"detail {key!r} lists more than {MAX_ITEMS} names")
        return [check_text(item, f"a name in detail {key!r}", MAX_NAME) for item in value]
    raise AuditError(
        f"detail {key!r} is a {type(value).__name__}: an entry holds only integers, short "
        "text and lists of names (never measurements, metrics or aggregates)"
    )
