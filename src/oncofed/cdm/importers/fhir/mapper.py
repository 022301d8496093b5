"""One patient's FHIR resources -> model rows, or every reason the patient is excluded (the
rules are in :mod:`oncofed.cdm.importers.fhir`): the primary cancers that fix day 0, then the
patient's observations, treatments and study entry, its Patient resource and its outcome."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from functools import partial

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.researchsubject import ResearchSubject

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
from oncofed.cdm.importers.fhir.sites import crosswalk
from oncofed.cdm.importers.fhir.studies import Entry, study_entry
from oncofed.cdm.importers.fhir.treatments import TREATMENTS, treatment

_ICD10 = model_pattern("tumour", "icd10")
_TOPOGRAPHY = model_pattern("tumour", "primary_site")
_MORPHOLOGY = model_pattern("tumour", "histology")
_ONSET = "Condition.onsetDateTime"
_SITE = "tumour.primary_site"
Rows = dict[fields.TableName, list[Row]]


class PatientMapper:
    """Maps one patient's resources to model rows, or to every reason the patient is
    excluded."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.context = PatientContext(record)

    @property
    def notes(self) -> Counter[str]:
        """The patient's resources and codes that are not model values, by reason."""
        return self.context.notes

    def map(self) -> Rows | list[str]:
        """The patient's rows, or every reason the patient is excluded, in the order found."""
        try:
            rows = self._rows()
        except Rejected:
            rows = {}
        if isinstance(rows, str):
            return [rows]
        return self.context.reasons or rows

    def _rows(self) -> Rows | str:
        """The rows; a string when the patient has no day 0. Each condition, resource and row
        is read even after another excluded the patient, so that every reason is found."""
        context, resources = self.context, self.record.resources
        conditions = [r for r in resources if isinstance(r, Condition) and self._primary(r)]
        if not conditions:
            return "patient: no primary cancer condition"
        onsets = [c.onsetDateTime or (c.onsetPeriod and c.onsetPeriod.start) for c in conditions]
        dates = [day for day in map(full_date, onsets) if day is not None]
        if len(dates) < len(onsets):
            cut = any(onset is not None and full_date(onset) is None for onset in onsets)
            return f"patient: {'partial' if cut else 'no'} diagnosis date ({_ONSET})"
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
                continue  # Conditions are read above, ResearchSubjects below
            if context.skipped(resource, resource.status):
                continue
            if isinstance(resource, Observation):
                context.attempt(partial(observations.read, resource))
            elif (row := context.attempt(partial(treatment, context, resource))) is not None:
                treatments.append(row)
        for number, tumour in enumerate(tumours):
            observations.finish(number, tumour)
        entry = study_entry(context, [r for r in resources if isinstance(r, ResearchSubject)])
        return {
            "patient": [self._patient(entry)],
            "tumour": tumours,
            "biomarker": observations.biomarkers,
            "treatment": treatments,
            "outcome": [self._outcome(observations.statuses, entry)],
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
        icd10 = context.attempt(
            lambda: context.parse(condition.code, "tumour.icd10", ICD10_SYSTEMS, _form(_ICD10))
        )
        sites = [context.attempt(partial(self._site, site)) for site in condition.bodySite or []]
        sides = [
            self._laterality(extensions)
            for extensions in (
                condition.extension,
                *(s.extension for s in condition.bodySite or []),
            )
        ]
        sides.extend(side for site in sites if site is not None for side in site[1])
        histology = context.attempt(
            lambda: context.extension_concept(
                extension(condition.extension, (HISTOLOGY,)), "tumour.histology"
            )
        )
        topographies = [site[0] for site in sites if site is not None and site[0] is not None]
        return {
            fields.KEY: context.pid,
            "tumour_seq": seq,
            "primary_site": self._primary_site(topographies),
            "icd10": icd10,
            "histology": context.attempt(
                lambda: context.parse(
                    histology, "tumour.histology", ICDO3_SYSTEMS, _form(_MORPHOLOGY)
                )
            ),
            "laterality": context.attempt(lambda: context.agree(sides, "tumour.laterality")),
        }

    def _site(self, concept: CodeableConcept) -> tuple[str | None, list[str | None]]:
        """The topography of a bodySite, its ICD-O-3 code or else the crosswalk's for its SNOMED
        CT code, and the sides of its SNOMED CT codes in the crosswalk. A body site neither
        gives (a malformed ICD-O-3 code too) is noted and left missing, never excludes."""
        found = list(codings(concept))
        known = [crosswalk()[code] for system, code in found if _in_crosswalk(system, code)]
        icdo3 = [_topography(key) for key in found if key[0] in ICDO3_SYSTEMS]
        topography = next((code for code in icdo3 if code is not None), None)
        sides = [site.laterality for site in known]
        if topography is not None or known:
            return topography or known[0].topography, sides
        if found or concept.text:
            snomed = any(system == SNOMED for system, _ in found)
            coded = "a SNOMED CT code outside the crosswalk" if snomed else "no code read"
            coded = "a malformed ICD-O-3 code" if icdo3 else coded
            self.context.note(f"{_SITE}: body site with {coded} (left missing)")
        return None, sides

    def _primary_site(self, topographies: list[str]) -> str | None:
        """The topography of a tumour's body sites, never excluding the patient: within one
        three-character group the most specific code, any other code before the group's NOS
        ``.9`` (C50.4 over C50.9); body sites of several groups, or of different parts of one
        (C50.2 and C50.4), leave it missing with a note."""
        found = set(topographies)
        specific = {code for code in found if not code.endswith(".9")} or found
        if len({code[:3] for code in found}) > 1:
            self.context.note(f"{_SITE}: body sites of several topography groups (left missing)")
        elif len(specific) > 1:
            self.context.note(f"{_SITE}: body sites of different parts of one organ (left missing)")
        else:
            return next(iter(specific), None)
        return None

    def _laterality(self, extensions: list[Extension] | None) -> str | None:
        what = "tumour.laterality"

        def read() -> str | None:
            qualifier = self.context.extension_concept(
                extension(extensions, LATERALITY_EXTENSIONS), what
            )
            return self.context.parse(
                qualifier, what, (SNOMED,), lambda key: LATERALITY.get(key[1])
            )

        return self.context.attempt(read)

    def _patient(self, entry: Entry) -> Row:
        patient, context = self.record.patient, self.context
        if patient.gender is not None and patient.gender not in fields.SEXES:
            context.exclude("patient.sex", NOT_INTERPRETABLE)
        birth, origin = patient.birthDate, context.origin
        years = age(birth, origin) if birth else None
        if birth is not None and years is None:  # a partial birthDate that leaves the age open
            years = origin.year - int(str(birth)[:4])
            context.note(YEAR_OF_BIRTH_AGES)
        if years is not None and years < 0:
            context.exclude("patient.age_at_diagnosis", "birth after diagnosis")
        return {
            fields.KEY: context.pid,
            "sex": patient.gender,
            "age_at_diagnosis": years,
            "trial_arm": entry.arm,
        }

    def _outcome(self, statuses: list[tuple[int, bool]], entry: Entry) -> Row:
        """The outcome by :func:`outcome`, its endpoints without evidence noted; a partial date
        that could be the last follow-up excludes the patient."""
        patient, context = self.record.patient, self.context
        death = context.attempt(lambda: context.day(patient.deceasedDateTime, "outcome.os_days"))
        if death is not None and death < 0:
            context.exclude("outcome.os_days", "before diagnosis")
        if context.partial and death is None and not statuses:
            context.exclude("outcome.last_followup_day", PARTIAL_DATE)
        dead = patient.deceasedDateTime is not None or patient.deceasedBoolean is True
        if dead and death is None:
            context.note("os: death without a date")
        if not statuses:
            context.note("rfs: no disease status recorded")
        row = outcome(dead, death, statuses, context.days, entry.day)
        return {fields.KEY: context.pid, **row}


def _form(pattern: re.Pattern[str]) -> Callable[[Key], str | None]:
    """Reads a code that has the form ``pattern`` as it is."""
    return lambda key: key[1] if pattern.match(key[1]) else None


def _in_crosswalk(system: str | None, code: str) -> bool:
    return system == SNOMED and code in crosswalk()


def _topography(key: Key) -> str | None:
    """An ICD-O-3 topography, ``C50.9`` or ``C509``, as ``C50.9``."""
    code = key[1]
    if re.fullmatch(r"C\d{3}", code):
        code = f"{code[:3]}.{code[3]}"
    return code if _TOPOGRAPHY.match(code) else None
