"""What the readers of one patient's resources share: the patient and its bundle, the
diagnosis date that is day 0, every day read, the patient's notes, and the rules that exclude
the patient when a model value cannot be interpreted (every such reason is kept, in the order
found: a reader that excludes the patient stops, :meth:`PatientContext.attempt` lets the
others go on)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource

from oncofed.cdm.importers.fhir.bundles import Record, resolve
from oncofed.cdm.importers.fhir.codes import SKIPPED_STATUSES, Key
from oncofed.cdm.importers.fhir.elements import codings, full_date

Row = dict[str, Any]
T = TypeVar("T")

NOT_INTERPRETABLE = "code not interpretable"
SYSTEM_NOT_SUPPORTED = "code system not supported"
CONFLICTING = "conflicting values"
PARTIAL_DATE = "partial date"


class Rejected(Exception):
    """A model value of the patient cannot be interpreted: the patient is excluded (the reason
    is already in :attr:`PatientContext.reasons`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class PatientContext:
    """One patient being mapped."""

    record: Record
    notes: Counter[str] = field(default_factory=Counter)
    """Resources and codes of this patient that are not model values, by reason."""
    origin: date = date.min
    """The diagnosis date, day 0; set once the primary cancers are known."""
    days: list[int] = field(default_factory=list)
    """Every day read, for the last follow-up."""
    partial: bool = False
    """Whether a date read only for the last follow-up was partial (and left out)."""
    reasons: list[str] = field(default_factory=list)
    """Why the patient is excluded (``table.field: rule``), each once, in the order found."""

    @property
    def pid(self) -> str:
        return self.record.pid

    def note(self, reason: str) -> None:
        self.notes[reason] += 1

    def exclude(self, what: str, rule: str) -> None:
        """Exclude the patient: ``what`` (``table.field``) breaks ``rule``; reading goes on."""
        reason = f"{what}: {rule}"
        if reason not in self.reasons:
            self.reasons.append(reason)

    def reject(self, what: str, rule: str) -> NoReturn:
        """Exclude the patient (:meth:`exclude`) and stop the reader."""
        self.exclude(what, rule)
        raise Rejected(f"{what}: {rule}")

    def attempt(self, read: Callable[[], T]) -> T | None:
        """What ``read()`` gives; None when it excludes the patient, so that the readers after
        it still run and find every reason."""
        try:
            return read()
        except Rejected:
            return None

    def day(self, value: object, what: str | None) -> int | None:
        """Days from the diagnosis date. A partial date of the model field ``what`` excludes
        the patient; one that only counts towards the last follow-up (``what`` None) is left
        out and remembered in ``partial``."""
        day = self.offset(value)
        if day is None:
            if value is not None and what is not None:
                self.reject(what, PARTIAL_DATE)
            self.partial = self.partial or value is not None
            return None
        self.days.append(day)
        return day

    def offset(self, value: object) -> int | None:
        """Days from the diagnosis date to a full date (None for none or a partial one), not
        counted towards the last follow-up."""
        day = full_date(value)
        return None if day is None else (day - self.origin).days

    def parse(
        self,
        concept: CodeableConcept | None,
        what: str,
        systems: Collection[str | None],
        read: Callable[[Key], T | None],
    ) -> T | None:
        """The value ``read`` gives for the first code of ``concept`` from ``systems``; None
        for a concept with neither a coding nor text. A concept of which no code is read
        excludes the patient: ``code system not supported`` when none of its codes is from
        ``systems``, else (a code ``read`` does not know, or text only) ``code not
        interpretable``."""
        if concept is None or not (concept.coding or concept.text):
            return None
        found = list(codings(concept))
        for key in found:
            if key[0] in systems and (value := read(key)) is not None:
                return value
        supported = not found or any(system in systems for system, _ in found)
        self.reject(what, NOT_INTERPRETABLE if supported else SYSTEM_NOT_SUPPORTED)

    def code(self, concept: CodeableConcept | None, what: str, table: Mapping[Key, T]) -> T | None:
        """:meth:`parse` by a code map keyed by (system, code)."""
        return self.parse(concept, what, {system for system, _ in table}, table.get)

    def extension_concept(self, found: Extension | None, what: str) -> CodeableConcept | None:
        """The coded value of an extension of the model field ``what``; the patient is
        excluded when the extension has a value of another type or none."""
        if found is not None and found.valueCodeableConcept is None:
            self.reject(what, NOT_INTERPRETABLE)
        return found.valueCodeableConcept if found is not None else None

    def number(self, quantity: Quantity | None, what: str) -> Decimal | None:
        """The value of ``quantity``; excludes the patient for a comparator (``<5``)."""
        if quantity is None or quantity.value is None:
            return None
        if quantity.comparator is not None:
            self.reject(what, "comparator not supported")
        return quantity.value

    def agree(self, values: Iterable[T | None], what: str) -> T | None:
        """The one value of ``values`` (None ignored); excludes the patient when they differ."""
        distinct = {value for value in values if value is not None}
        if len(distinct) > 1:
            self.reject(what, CONFLICTING)
        return distinct.pop() if distinct else None

    def skipped(self, resource: Resource, status: object) -> bool:
        """Whether ``status`` says not to read ``resource`` (noted if so)."""
        if status in SKIPPED_STATUSES:
            self.note(f"{resource.get_resource_type()}: status {status} (ignored)")
            return True
        return False

    def resolve(self, ref: Reference | None) -> Resource | None:
        """The resource of the patient's bundle that ``ref`` names."""
        return resolve(ref, self.record.index)
