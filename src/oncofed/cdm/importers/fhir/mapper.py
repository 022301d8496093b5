"""One patient's FHIR resources -> model rows, noting what cannot be read (the rules are in
:mod:`oncofed.cdm.importers.fhir`): the primary cancers that fix day 0, then the patient's
observations and treatments, its Patient resource and its outcome."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.observation import Observation

from oncofed.cdm import fields
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
    model_pattern,
    primary_icd10,
    secondary_icd10,
)
from oncofed.cdm.importers.fhir.context import PatientContext, Row
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


class PatientMapper:
    """Maps one patient's resources to model rows, noting what it cannot read."""

    def __init__(self, record: Record, notes: Counter[str]) -> None:
        self.record = record
        self.context = PatientContext(record, notes)

    def map(self) -> dict[fields.TableName, list[Row]] | str:
        """The patient's rows, or the reason the patient is excluded."""
        context, resources = self.context, self.record.resources
        conditions = [r for r in resources if isinstance(r, Condition) and self._primary(r)]
        if not conditions:
            return "patient: no primary cancer condition"
        onsets = [c.onsetDateTime or (c.onsetPeriod and c.onsetPeriod.start) for c in conditions]
        order = sorted(range(len(conditions)), key=lambda n: (full_date(onsets[n]) or date.max, n))
        first = full_date(onsets[order[0]])
        if first is None:
            return "patient: no diagnosis date (Condition.onsetDateTime)"
        context.origin = first
        tumours: list[Row] = []
        tumour_of: dict[int, int] = {}
        for seq, n in enumerate(order, start=1):
            tumour_of[id(conditions[n])] = seq - 1
            tumours.append(self._tumour(conditions[n], seq))
            context.day(onsets[n], "tumour: onset")
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
        row: Row = {fields.KEY: self.context.pid, "tumour_seq": seq}
        icd10 = code_in(condition.code, ICD10_SYSTEMS)
        if icd10 is not None and _ICD10.match(icd10):
            row["icd10"] = icd10
        elif condition.code is not None:
            self.context.note("tumour.icd10: no ICD-10 code of the model's form")
        for site in condition.bodySite or []:
            topography = code_in(site, ICDO3_SYSTEMS)
            if topography is not None and re.fullmatch(r"C\d{3}", topography):
                topography = f"{topography[:3]}.{topography[3]}"
            if topography is not None and _TOPOGRAPHY.match(topography):
                row["primary_site"] = topography
            elif site.coding:
                self.context.note("tumour.primary_site: bodySite has no ICD-O-3 topography")
            self._laterality(row, site.extension)
        self._laterality(row, condition.extension)
        histology = extension(condition.extension, (HISTOLOGY,))
        if histology is not None:
            morphology = code_in(histology.valueCodeableConcept, ICDO3_SYSTEMS)
            if morphology is not None and _MORPHOLOGY.match(morphology):
                row["histology"] = morphology
            else:
                self.context.note("tumour.histology: not an ICD-O-3 morphology code")
        return row

    def _laterality(self, row: Row, extensions: list[Extension] | None) -> None:
        qualifier = extension(extensions, LATERALITY_EXTENSIONS)
        if qualifier is not None:
            side = code_in(qualifier.valueCodeableConcept, (SNOMED,))
            if side in LATERALITY:
                row["laterality"] = LATERALITY[side]
            else:
                self.context.note("tumour.laterality: code not mapped")

    def _patient(self) -> Row:
        patient = self.record.patient
        sex = patient.gender if patient.gender in fields.SEXES else None
        if patient.gender is not None and sex is None:
            self.context.note("patient.sex: gender not mapped")
        years = age(patient.birthDate, self.context.origin) if patient.birthDate else None
        if patient.birthDate is not None and (years is None or years < 0):
            self.context.note(
                "patient.age_at_diagnosis: birthDate does not fix an age at diagnosis"
            )
            years = None
        return {fields.KEY: self.context.pid, "sex": sex, "age_at_diagnosis": years}

    def _outcome(self, statuses: list[tuple[int, bool]]) -> Row:
        patient = self.record.patient
        death = self.context.day(patient.deceasedDateTime, "outcome.os_days")
        if death is not None and death < 0:
            self.context.note("outcome.os_days: death before diagnosis")
            death = None
        dead = patient.deceasedDateTime is not None or patient.deceasedBoolean is True
        return {fields.KEY: self.context.pid, **outcome(dead, death, statuses, self.context.days)}
