"""One patient's FHIR resources -> model rows, or the reason the patient is excluded (the rules
are in :mod:`oncofed.cdm.importers.fhir`): the primary cancers that fix day 0, then the
patient's observations and treatments, its Patient resource and its outcome."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.observation import Observation

from oncofed.cdm import fields
from oncofed.cdm.importers import YEAR_OF_BIRTH_AGES
from oncofed.cdm.importers.fhir.bundles import Record
from oncofed.cdm.importers.fhir.codes import (
    HISTOLOGY,
    ICD10_SYSTEMS,
    ICDO3_SYSTEMS,
    LATERALITY,
    LATERALITY_EXTENSIONS,
    PRIMARY_CANCER,
    SECONDARY_CANCER,
    SNOMED,
    Key,
    model_pattern,
    primary_icd10,
    secondary_icd10,
)
from oncofed.cdm.importers.fhir.context import (
    NOT_INTERPRETABLE,
    PARTIAL_DATE,
    PatientContext,
    Rejected,
    Row,
)
from oncofed.cdm.importers.fhir.elements import (
    age,
    code_in,
    codings,
    extension,
    full_date,
    profiles,
)
from oncofed.cdm.importers.fhir.observations import ObservationReader
from oncofed.cdm.importers.fhir.outcomes import outcome
from oncofed.cdm.importers.fhir.treatments import TREATMENTS, treatment

_ICD10 = model_pattern("tumour", "icd10")
_TOPOGRAPHY = model_pattern("tumour", "primary_site")
_MORPHOLOGY = model_pattern("tumour", "histology")
_ONSET = "Condition.onsetDateTime"


class PatientMapper:
    """Maps one patient's resources to model rows, or to the reason the patient is excluded."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.context = PatientContext(record)

    @property
    def notes(self) -> Counter[str]:
        """The patient's resources and codes that are not model values, by reason."""
        return self.context.notes

    def map(self) -> dict[fields.TableName, list[Row]] | str:
        """The patient's rows, or the reason the patient is excluded."""
        try:
            return self._rows()
        except Rejected as rejected:
            return rejected.reason

    def _rows(self) -> dict[fields.TableName, list[Row]] | str:
        context, resources = self.context, self.record.resources
        conditions = [r for r in resources if isinstance(r, Condition) and self._primary(r)]
        if not conditions:
            return "patient: no primary cancer condition"
        onsets = [c.onsetDateTime or (c.onsetPeriod and c.onsetPeriod.start) for c in conditions]
        dates = [day for day in map(full_date, onsets) if day is not None]
        if len(dates) < len(onsets):
            partial = any(onset is not None and full_date(onset) is None for onset in onsets)
            return f"patient: {'partial' if partial else 'no'} diagnosis date ({_ONSET})"
        order = sorted(range(len(conditions)), key=lambda n: (dates[n], n))
        context.origin = dates[order[0]]
        tumours: list[Row] = []
        tumour_of: dict[int, int] = {}
        for seq, n in enumerate(order, start=1):
            tumour_of[id(conditions[n])] = seq - 1
            tumours.append(self._tumour(conditions[n], seq))
            context.day(onsets[n], None)
        observations = ObservationReader(context, tumour_of)
        treatments: list[Row] = []
        for resource in resources:
            if not isinstance(resource, (Observation, *TREATMENTS)):
                continue  # Conditions are read above
            if context.skipped(resource, resource.status):
                continue
            if isinstance(resource, Observation):
                observations.read(resource)
            elif (row := treatment(context, resource)) is not None:
                treatments.append(row)
        for number, tumour in enumerate(tumours):
            observations.finish(number, tumour)
        return {
            "patient": [self._patient()],
            "tumour": tumours,
            "biomarker": observations.biomarkers,
            "treatment": treatments,
            "outcome": [self._outcome(observations.statuses)],
        }

    def _primary(self, condition: Condition) -> bool:
        """Whether ``condition`` is a primary cancer (see the package docstring)."""
        verification = next((c for _, c in codings(condition.verificationStatus)), None)
        if self.context.skipped(condition, verification):
            return False
        claimed = profiles(condition)
        icd10 = code_in(condition.code, ICD10_SYSTEMS)
        if SECONDARY_CANCER in claimed or (icd10 and secondary_icd10(icd10)):
            self.context.note("Condition: secondary cancer (metastasis) not read")
            return False
        if PRIMARY_CANCER in claimed or extension(condition.extension, (HISTOLOGY,)):
            return True
        return icd10 is not None and primary_icd10(icd10)

    def _tumour(self, condition: Condition, seq: int) -> Row:
        context = self.context
        icd10 = context.parse(condition.code, "tumour.icd10", ICD10_SYSTEMS, _form(_ICD10))
        sites = [
            context.parse(site, "tumour.primary_site", ICDO3_SYSTEMS, _topography)
            for site in condition.bodySite or []
        ]
        sides = [
            self._laterality(extensions)
            for extensions in (
                condition.extension,
                *(s.extension for s in condition.bodySite or []),
            )
        ]
        histology = context.extension_concept(
            extension(condition.extension, (HISTOLOGY,)), "tumour.histology"
        )
        return {
            fields.KEY: context.pid,
            "tumour_seq": seq,
            "primary_site": context.agree(sites, "tumour.primary_site"),
            "icd10": icd10,
            "histology": context.parse(
                histology, "tumour.histology", ICDO3_SYSTEMS, _form(_MORPHOLOGY)
            ),
            "laterality": context.agree(sides, "tumour.laterality"),
        }

    def _laterality(self, extensions: list[Extension] | None) -> str | None:
        what = "tumour.laterality"
        qualifier = self.context.extension_concept(
            extension(extensions, LATERALITY_EXTENSIONS), what
        )
        return self.context.parse(qualifier, what, (SNOMED,), lambda key: LATERALITY.get(key[1]))

    def _patient(self) -> Row:
        patient = self.record.patient
        if patient.gender is not None and patient.gender not in fields.SEXES:
            self.context.reject("patient.sex", NOT_INTERPRETABLE)
        birth, origin = patient.birthDate, self.context.origin
        years = age(birth, origin) if birth else None
        if birth is not None and years is None:  # a partial birthDate that leaves the age open
            years = origin.year - int(str(birth)[:4])
            self.context.note(YEAR_OF_BIRTH_AGES)
        if years is not None and years < 0:
            self.context.reject("patient.age_at_diagnosis", "birth after diagnosis")
        return {fields.KEY: self.context.pid, "sex": patient.gender, "age_at_diagnosis": years}

    def _outcome(self, statuses: list[tuple[int, bool]]) -> Row:
        """The outcome by :func:`outcome`; a partial date that could be the last follow-up
        excludes the patient."""
        patient = self.record.patient
        death = self.context.day(patient.deceasedDateTime, "outcome.os_days")
        if death is not None and death < 0:
            self.context.reject("outcome.os_days", "before diagnosis")
        if self.context.partial and death is None and not statuses:
            self.context.reject("outcome.last_followup_day", PARTIAL_DATE)
        dead = patient.deceasedDateTime is not None or patient.deceasedBoolean is True
        return {fields.KEY: self.context.pid, **outcome(dead, death, statuses, self.context.days)}


def _form(pattern: re.Pattern[str]) -> Callable[[Key], str | None]:
    """Reads a code that has the form ``pattern`` as it is."""
    return lambda key: key[1] if pattern.match(key[1]) else None


def _topography(key: Key) -> str | None:
    """An ICD-O-3 topography, ``C50.9`` or ``C509``, as ``C50.9``."""
    code = key[1]
    if re.fullmatch(r"C\d{3}", code):
        code = f"{code[:3]}.{code[3]}"
    return code if _TOPOGRAPHY.match(code) else None
