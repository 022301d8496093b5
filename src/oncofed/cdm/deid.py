"""The de-identification guard: refuse a source column that looks like a direct identifier
(HIPAA Safe Harbor kinds: names, record numbers, SSN, phone, e-mail, street address, ZIP code,
URL, IP address) or a calendar date, by its name or by its content, before anything is stored.

Names are compared word by word (split on ``_ - .``, spaces and camelCase, case-insensitive), so
``tsize``, ``nodes_examined`` or ``horTh`` do not match; a few distinctive words (``surname``,
``phone``, ``email``...) also match inside glued names such as ``homephone``.

Content rules read text, and whole numbers as their digits (integers, and float or decimal
columns whose finite values are all whole: ``4000007.0`` is read as ``4000007``). They look at
up to 1,000 distinct values and fire when at least half of them match, with these exceptions:

- ZIP code: in a number column at least 99% of the distinct values must have four or five
  digits (four: a code that lost its leading zero), so that days (0-36500, some under 1000)
  pass; four- and five-digit numbers, most of them five (an age in days), are still refused,
  and a country's four-digit postal codes are not recognised.
- Record number (six or more digits, or letters and four or more digits): the column must also
  hold about one value per row: at least 3 non-null values, at least 90% of them distinct.
- Person name (2 to 4 capitalised words, with particles such as ``van`` and initials): at
  least 3 distinct values, making at least 80% of the non-null values, so that categories
  such as ``Left Breast`` repeated down a column pass. It fires with or without a value map.
- Running number: a whole-number column of at least 20 values, at least 95% of them distinct,
  that fills at least two thirds of its range (max - min + 1 <= 1.5 x distinct values) is a
  record or row number (random values that dense would repeat far more often).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
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
PERSON = "person name"
ZIP = "ZIP code"
PHONE = "phone number"

MOST = 0.5
"""Share of the sampled distinct values a content rule must match."""
ZIP_NUMBERS = 0.99
"""A whole-number column holds ZIP codes only if at least this share of its sampled distinct
values have four or five digits (four: a code that lost its leading zero)."""
ONE_PER_ROW = 0.9
"""A record number column: at least this share of its non-null values distinct..."""
ONE_PER_ROW_MIN = 3
"""...and at least this many of them (fewer say nothing about uniqueness)."""
NAME_SHARE = 0.8
"""A person name column: distinct values make at least this share of its non-null values..."""
NAME_MIN = 3
"""...and there are at least this many of them."""
RUN_MIN = 20
"""A running number has at least this many values,"""
RUN_DISTINCT = 0.95
"""at least this share of them distinct,"""
RUN_SPAN = 1.5
"""and a range (max - min + 1) at most this many times its distinct values."""


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
        PERSON,
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
    _rule(PHONE, "mobile fax tel", glued="phone"),
    _rule("e-mail address", "mail", glued="email"),
    _rule("URL", "url web homepage", glued="website"),
    _rule("IP address", "ip", glued="ipaddress"),
    _rule(ZIP, "zip plz", glued="zipcode postcode postalcode"),
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
_PHONE_DIGITS = 9
"""A phone number has at least this many digits (so dates and small codes do not match)."""
_PARTICLES = frozenset({
    "al", "bin", "da", "das", "de", "del", "della", "den", "der", "di", "do", "dos", "du", "el",
    "ibn", "la", "le", "ten", "ter", "van", "von", "zu",
})  # fmt: skip
"""Lower-case words between the parts of a name (``Ludwig van Beethoven``)."""
_NAME_SPLIT = re.compile(r"[,\s]+")
_NAME_LETTERS = re.compile(r"^[^\W\d_]+(?:['\u2019-][^\W\d_]+)*$")
_INITIAL = re.compile(r"^[^\W\d_]\.$")
_ROMAN = re.compile(r"^[IVXLCDM]+[A-D]?$")


def _name_word(word: str) -> bool:
    """``Maria``, ``García``, ``O'Brien``, ``McDonald``, ``SMITH``; not ``IIIA``, ``ER``,
    ``IIa`` or ``3``."""
    if not _NAME_LETTERS.match(word) or not word[0].isupper():
        return False
    if word.isupper():
        return len(word) >= 3 and not _ROMAN.match(word)
    return word[1].islower() or word[1] in "'\u2019"


def _person_name(value: str) -> bool:
    """2 to 4 name words, with particles and initials between: ``Maria García``, ``Smith,
    John``, ``SMITH John``, ``Ludwig van Beethoven``, ``John F. Kennedy``."""
    parts = [p for p in _NAME_SPLIT.split(value) if p]
    names = sum(_name_word(p) for p in parts)
    others = all(_name_word(p) or p in _PARTICLES or _INITIAL.match(p) for p in parts)
    return others and 2 <= names <= 4


def _regex(pattern: str) -> Callable[[pa.Array], pa.Array]:
    return lambda sample: pc.match_substring_regex(sample, pattern)


def _phone(sample: pa.Array) -> pa.Array:
    """Digits with separators (``+``, spaces, brackets, dots, dashes), at least nine digits."""
    shape = pc.match_substring_regex(sample, r"^\+?\(?\d[\d ().-]{7,}\d$")
    separated = pc.match_substring_regex(sample, r"^\+|[ ().-]")
    digits = pc.utf8_length(pc.replace_substring_regex(sample, r"\D", ""))
    return pc.and_(pc.and_(shape, separated), pc.greater_equal(digits, _PHONE_DIGITS))


def _person_names(sample: pa.Array) -> pa.Array:
    return pa.array([_person_name(v) for v in sample.to_pylist()], pa.bool_())


_CONTENT_RULES: tuple[tuple[str, Callable[[pa.Array], pa.Array]], ...] = (
    ("social security number", _regex(r"^\d{3}-\d{2}-\d{4}$")),
    ("e-mail address", _regex(r"[^@\s]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")),
    ("URL", _regex(r"(?i)(?:https?://|www\.)\S+")),
    ("IP address", _regex(r"^\d{1,3}(?:\.\d{1,3}){3}$")),
    (DATE, _regex(_DATE_RE)),
    (ZIP, _regex(r"^\d{5}(?:-\d{4})?$")),
    (PHONE, _phone),
    (
        "street address",
        _regex(
            r"(?i)^\d+[a-z]?,? +(?:[a-z.'-]+ +){0,4}(?:street|st|road|rd|avenue|ave|lane|ln|"
            r"drive|dr|boulevard|blvd|way|court|ct|place|pl|square|sq|terrace|close|crescent|"
            r"strasse|straße|weg|platz|allee)\.?$"
        ),
    ),
    (PERSON, _person_names),
    (MRN, _regex(r"^(?:\d{6,}|[A-Za-z]{1,6}[-_/ ]?\d{4,})$")),
)
"""Each rule with the test of one sampled distinct value (as text)."""


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


@dataclass(frozen=True)
class _Content:
    """What the content rules read of a column: up to SAMPLE distinct non-null values as text,
    the counts of non-null and distinct values, and for whole numbers their range."""

    sample: pa.Array
    present: int
    distinct: int
    span: int | None

    @classmethod
    def of(cls, array: pa.Array) -> _Content | None:
        """The content of text or whole numbers (None for other columns, or no values)."""
        kind = array.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            values = array.drop_null()
        else:
            values = _whole_numbers(array)
            if values is None:
                return None
        if len(values) == 0:
            return None
        distinct = pc.unique(values)
        span = None
        if pa.types.is_integer(values.type):
            low, high = pc.min_max(values).values()
            span = high.as_py() - low.as_py() + 1
        sample = pc.cast(distinct.slice(0, SAMPLE), pa.string())
        return cls(sample, len(values), len(distinct), span)

    def fits(self, rule: str) -> bool:
        """Whether the column allows ``rule``: about one value per row for a record number,
        many distinct values for a person name, four or five digits for numbers as ZIP codes."""
        if rule == MRN:
            return self.present >= ONE_PER_ROW_MIN and self.distinct >= ONE_PER_ROW * self.present
        if rule == PERSON:
            return self.distinct >= max(NAME_MIN, NAME_SHARE * self.present)
        if rule == ZIP and self.span is not None:
            codes = pc.sum(pc.match_substring_regex(self.sample, r"^\d{4,5}$")).as_py() or 0
            return codes >= ZIP_NUMBERS * len(self.sample)
        return True

    def counts(self) -> str:
        """The counts for a refusal's detail (never a value)."""
        return f"{self.distinct} distinct values in {self.present} rows"


def _whole_numbers(array: pa.Array) -> pa.Array | None:
    """The non-null values of an integer column, or of a float or decimal column whose finite
    values are all whole (as int64); None otherwise."""
    kind = array.type
    if pa.types.is_integer(kind):
        return array.drop_null()
    if not (pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        return None
    values = array.drop_null()
    if pa.types.is_floating(kind):
        values = values.filter(pc.is_finite(values))
    try:
        return pc.cast(values, pa.int64())
    except pa.ArrowInvalid:  # a fraction, or beyond int64
        return None


def _content_rule(content: _Content) -> tuple[str, str] | None:
    """The first rule the column's content matches, with a detail (never a value)."""
    sample = content.sample
    for rule, test in _CONTENT_RULES:
        if not content.fits(rule):
            continue
        matched = pc.sum(test(sample)).as_py() or 0
        if matched >= max(1, math.ceil(MOST * len(sample))):
            detail = f"{matched} of {len(sample)} distinct values match the {rule} pattern"
            return rule, detail + (f", {content.counts()}" if rule in (MRN, PERSON) else "")
    span = content.span
    running = (
        span is not None
        and content.present >= RUN_MIN
        and content.distinct >= RUN_DISTINCT * content.present
        and span <= RUN_SPAN * content.distinct
    )
    if running:
        return MRN, (
            f"{content.counts()}, whole numbers within a run of {span}: a running number "
            "(record or row number)"
        )
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
    content = _Content.of(array)
    found = None if content is None else _content_rule(content)
    if found is not None:
        raise IdentifierRefused(name, *found)
    if role == "feature" and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise IdentifierRefused(name, "free text", FREE_TEXT)
