"""The de-identification guard: refuse a source column that looks like a direct identifier
(HIPAA Safe Harbor kinds: names, record numbers, SSN, phone, e-mail, street address, ZIP code,
URL, IP address) or a calendar date, by its name or by its content, before anything is stored.

Names are compared word by word (split on ``_ - .``, spaces and camelCase, case-insensitive), so
``tsize``, ``nodes_examined`` or ``horTh`` do not match; a few distinctive words (``surname``,
``phone``, ``email``...) also match inside glued names such as ``homephone``. Content rules look
at up to 1,000 distinct values and fire when at least half of them match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from oncofed.cdm.errors import IdentifierRefused

Role = Literal["value", "date", "feature"]
"""How the mapping uses a column. ``value``: through a value map or into a numeric or coded
field; ``date``: a ``date:``/``origin:`` source, converted to days and dropped, so it may hold
dates (and its content is not checked: what does not parse as a date is never stored);
``feature``: stored as it is (an extension or category without a value map), so text is refused.
"""

SAMPLE = 1_000
"""Distinct values a content rule looks at."""
FREE_TEXT = "free text is not accepted as a feature; give a value map"
DATE = "calendar date"
MRN = "medical record number"


@dataclass(frozen=True)
class _NameRule:
    """Words (whole word parts), whole names, and glued substrings that name an identifier."""

    rule: str
    words: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    glued: tuple[str, ...] = ()


def _rule(rule: str, words: str = "", names: str = "", glued: str = "") -> _NameRule:
    return _NameRule(rule, frozenset(words.split()), frozenset(names.split()), tuple(glued.split()))


_NAME_RULES = (
    _rule(
        "person name",
        "surname forename initials",
        "name",
        "firstname lastname givenname familyname patientname fullname middlename maidenname",
    ),
    _rule(
        MRN,
        "mrn chart nhs",
        "id",
        "medicalrecord recordnumber recordno hospitalnumber hospitalno hospitalid patientnumber "
        "patientno patientid recordid casenumber",
    ),
    _rule("social security number", "ssn", glued="socialsecurity"),
    _rule("phone number", "mobile fax tel", glued="phone"),
    _rule("e-mail address", "mail", glued="email"),
    _rule("URL", "url web homepage", glued="website"),
    _rule("IP address", "ip", glued="ipaddress"),
    _rule("ZIP code", "zip plz", glued="zipcode postcode postalcode"),
    _rule("street address", "street addr", glued="address"),
    _rule(
        DATE,
        "dob dod birthday timestamp",
        glued="dateofbirth dateofdeath birthdate",
    ),
)
_SPLIT = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_DATE_RE = (
    r"(?i)^(?:\d{4}[./-]\d{1,2}[./-]\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\S*"
    r"|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}"
    r"|(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    rf"|\d{{1,2}}[ -]{_MONTH}[ -,]*\d{{2,4}}"
    rf"|{_MONTH} \d{{1,2}},? \d{{4}})$"
)
_CONTENT_RULES = (
    ("social security number", r"^\d{3}-\d{2}-\d{4}$"),
    ("e-mail address", r"[^@\s]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    ("URL", r"(?i)(?:https?://|www\.)\S+"),
    ("IP address", r"^\d{1,3}(?:\.\d{1,3}){3}$"),
    (DATE, _DATE_RE),
    ("ZIP code", r"^\d{5}(?:-\d{4})?$"),
    ("phone number", r"^\+?\(?\d[\d ().-]{7,}\d$"),
    (
        "street address",
        r"(?i)^\d+[a-z]?,? +(?:[a-z.'-]+ +){0,4}(?:street|st|road|rd|avenue|ave|lane|ln|drive|"
        r"dr|boulevard|blvd|way|court|ct|place|pl|square|sq|terrace|close|crescent|strasse|"
        r"straße|weg|platz|allee)\.?$",
    ),
    (MRN, r"^(?:\d{6,}|[A-Za-z]{1,6}[-_/ ]?\d{4,})$"),
)
_PHONE_DIGITS = 9
"""A phone number has at least this many digits (so dates and small codes do not match)."""
_TEXT_RULES = tuple(rule for rule, _ in _CONTENT_RULES)
_NUMBER_RULES = (DATE, MRN)
"""Integer columns: dates written as yyyymmdd and record numbers (6+ digits, one per row)."""


def words(name: str) -> list[str]:
    """The lower-case word parts of a column name: ``horTh`` -> ``['hor', 'th']``."""
    return [w.lower() for w in _SPLIT.split(name.strip()) if w]


def _is_date_word(word: str) -> bool:
    """``date``, ``date_*``, ``*date`` (but not ``update``, ``candidate``...)."""
    return word.startswith("date") or (
        word.endswith("date") and not word.endswith(("update", "idate"))
    )


def check_name(name: str, *, role: Role = "value") -> None:
    """Refuse a column (or extension) ``name`` that says it holds an identifier or a date
    (a date is allowed for the ``date`` role)."""
    parts = words(name)
    glued = "".join(parts)
    for r in _NAME_RULES:
        if r.rule == DATE and role == "date":
            continue
        hit = (
            glued in r.names
            or any(w in r.words for w in parts)
            or any(g in glued for g in r.glued)
            or (r.rule == DATE and any(_is_date_word(w) for w in parts))
        )
        if hit:
            raise IdentifierRefused(name, r.rule, f"its name marks it as a column of type {r.rule}")


def _plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array


def _content_rule(values: pa.Array, rules: tuple[str, ...]) -> tuple[str, str] | None:
    """The first of ``rules`` that most sampled distinct values match, with a detail."""
    present = values.drop_null()
    if len(present) == 0:
        return None
    distinct = pc.unique(present)
    sample = pc.cast(distinct.slice(0, SAMPLE), pa.string())
    needed = (len(sample) + 1) // 2
    for rule, pattern in _CONTENT_RULES:
        if rule not in rules or (rule == MRN and len(distinct) < len(present)):
            continue
        hits = pc.match_substring_regex(sample, pattern)
        if rule == "phone number":
            digits = pc.utf8_length(pc.replace_substring_regex(sample, r"\D", ""))
            separated = pc.match_substring_regex(sample, r"^\+|[ ().-]")
            hits = pc.and_(pc.and_(hits, separated), pc.greater_equal(digits, _PHONE_DIGITS))
        matched = pc.sum(hits).as_py() or 0
        if matched >= needed:
            detail = f"{matched} of {len(sample)} distinct values match the {rule} pattern"
            return rule, detail + (", one value per row" if rule == MRN else "")
    return None


def check_column(name: str, values: pa.Array | pa.ChunkedArray, *, role: Role) -> None:
    """Raise IdentifierRefused when the column's name or content looks like a direct
    identifier or a calendar date, or when a ``feature`` column holds free text."""
    check_name(name, role=role)
    if role == "date":
        return
    array = _plain(values)
    kind = array.type
    if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        raise IdentifierRefused(name, DATE, f"it holds calendar dates ({kind})")
    textual = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if textual or pa.types.is_integer(kind):
        found = _content_rule(array, _TEXT_RULES if textual else _NUMBER_RULES)
        if found is not None:
            raise IdentifierRefused(name, *found)
    if textual and role == "feature":
        raise IdentifierRefused(name, "free text", FREE_TEXT)
