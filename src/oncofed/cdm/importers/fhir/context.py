"""What the readers of one patient's resources share: the patient and its bundle, the
diagnosis date that is day 0, every day read, and the notes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource

from oncofed.cdm.importers.fhir.bundles import Record, resolve
from oncofed.cdm.importers.fhir.codes import SKIPPED_STATUSES
from oncofed.cdm.importers.fhir.elements import full_date

Row = dict[str, Any]


@dataclass
class PatientContext:
    """One patient being mapped."""

    record: Record
    notes: Counter[str]
    """Values left null and resources not used, by reason (shared by all patients)."""
    origin: date = date.min
    """The diagnosis date, day 0; set once the primary cancers are known."""
    days: list[int] = field(default_factory=list)
    """Every day read, for the last follow-up."""

    @property
    def pid(self) -> str:
        return self.record.pid

    def note(self, reason: str) -> None:
        self.notes[reason] += 1

    def day(self, value: object, what: str) -> int | None:
        """Days from the diagnosis date; a partial date is noted and gives None."""
        day = full_date(value)
        if day is None:
            if value is not None:
                self.note(f"{what}: partial date")
            return None
        self.days.append((day - self.origin).days)
        return self.days[-1]

    def skipped(self, resource: Resource, status: object) -> bool:
        """Whether ``status`` says not to read ``resource`` (noted if so)."""
        if status in SKIPPED_STATUSES:
            self.note(f"{resource.get_resource_type()}: status {status} (ignored)")
            return True
        return False

    def resolve(self, ref: Reference | None) -> Resource | None:
        """The resource of the patient's bundle that ``ref`` names."""
        return resolve(ref, self.record.index)
