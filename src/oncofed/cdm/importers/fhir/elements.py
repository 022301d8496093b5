"""Reading FHIR elements: codings, extensions, profiles, dates, values and quantities."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date, datetime

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.resource import Resource

from oncofed.cdm.importers.fhir.codes import UCUM, Key


def codings(concept: CodeableConcept | None) -> Iterator[Key]:
    """The (system, code) of each coding of ``concept`` that has a code."""
    for coding in (concept.coding or []) if concept is not None else []:
        if coding.code:
            yield coding.system, coding.code


def code_in(concept: CodeableConcept | None, systems: tuple[str, ...]) -> str | None:
    """The first code of ``concept`` from one of ``systems``."""
    return next((code for system, code in codings(concept) if system in systems), None)


def extension(extensions: list[Extension] | None, urls: tuple[str, ...]) -> Extension | None:
    return next((e for e in extensions or [] if e.url in urls), None)


def profiles(resource: Resource) -> set[str]:
    """The profiles ``resource`` claims, without their ``|version``."""
    claimed = resource.meta.profile if resource.meta and resource.meta.profile else []
    return {p.split("|")[0] for p in claimed if p}


def full_date(value: object) -> date | None:
    """The calendar day of a FHIR date/dateTime; None for none or a partial date."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else None


def _years(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def age(birth: object, origin: date) -> int | None:
    """Whole years at ``origin``; a partial birthDate counts only when it fixes the age."""
    first = last = full_date(birth)
    if first is None and isinstance(birth, str):
        year, _, month = birth.partition("-")
        first = date(int(year), int(month or 1), 1)
        end_month = int(month or 12)
        last = date(int(year), end_month, calendar.monthrange(int(year), end_month)[1])
    if first is None or last is None:
        return None
    young, old = _years(last, origin), _years(first, origin)
    return young if young == old else None


def period(span: Period | None) -> tuple[object, object]:
    """The start and end of ``span`` (None, None without one)."""
    return (span.start, span.end) if span is not None else (None, None)


def effective(obs: Observation) -> object:
    """When ``obs`` was made: effectiveDateTime, effectivePeriod.start or effectiveInstant."""
    if obs.effectiveDateTime is not None:
        return obs.effectiveDateTime
    if obs.effectivePeriod is not None:
        return obs.effectivePeriod.start
    return obs.effectiveInstant


def value_type(obs: Observation) -> str | None:
    """The value[x] element ``obs`` has (``valueQuantity``), None without a value."""
    names = obs.get_one_of_many_fields()["value"]
    return next((name for name in names if getattr(obs, name) is not None), None)


def unit(quantity: Quantity) -> str | None:
    """UCUM code of a quantity, else its unit text."""
    return quantity.code if quantity.code and quantity.system == UCUM else quantity.unit
