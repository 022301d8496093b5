"""A demo hospital's FHIR R4 mCODE export, written from the model's rows: one Bundle (type
collection) per patient, every resource built and validated with the ``fhir.resources`` R4B
models.

Dates are made up: each patient's diagnosis falls on a random day of 1984-1989, every other
date is that day plus the model's day, and the birthDate is a random day that gives
age_at_diagnosis. Resource ids are random UUIDs drawn from the seed, never derived from the
data. The codes are those :mod:`oncofed.cdm.importers.fhir` reads, so importing the folder
gives back the same rows. Tumours get onsets one day apart in tumour_seq order; their
observations are dated on that onset. Drugs are MedicationStatements (mCODE cancer-related
profile, RxNorm code), surgery and radiotherapy Procedures; other procedures and medications
are a Procedure (SNOMED CT code, no category) and a MedicationStatement (RxNorm code, no
cancer profile). A trial arm or study entry day becomes a ResearchSubject (on-study, period
start, assignedArm) in its ResearchStudy. The outcome becomes ``Patient.deceased[x]`` and
CancerDiseaseStatus observations: "worsened" at rfs_days when rfs_event is 1, and "stable" (or
"worsened" if that is the recurrence) at last_followup_day.

What would not read back the same raises ValueError rather than being dropped or altered: a
laterality FHIR has no code for here, TNM values without stage_basis, stage_system without TNM,
a drug whose RxNorm code the importer maps to another type or ingredient, intent ``unknown``, a
marker value without unit, another procedure or medication without a code and start day, with
an intent or with a code the importer reads as cancer treatment, a patient without a tumour or
outcome row, tumour_seq not 1..n, an outcome the FHIR facts would not give back (see
:func:`oncofed.cdm.importers.fhir.outcome`).
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.researchstudy import ResearchStudy, ResearchStudyArm
from fhir.resources.R4B.researchsubject import ResearchSubject
from fhir.resources.R4B.resource import Resource

from oncofed.cdm.fields import KEY, TableName
from oncofed.cdm.importers.fhir import codes
from oncofed.cdm.importers.fhir.outcomes import outcome as fhir_outcome
from oncofed.cdm.tables import CdmData

Row = dict[str, Any]
FIRST_DIAGNOSIS = date(1984, 1, 1)
DIAGNOSIS_DAYS = (date(1990, 1, 1) - FIRST_DIAGNOSIS).days
"""Diagnosis dates are drawn from 1984-01-01 to 1989-12-31."""
_LINKED: tuple[TableName, ...] = ("tumour", "biomarker", "treatment", "outcome")
_INTERPRETATION = {
    result: code
    for (system, code), result in codes.RESULTS.items()
    if system == codes.V3_INTERPRETATION and result != "unknown"
}
_DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_OTHER = ("other_procedure", "other_medication")
"""Treatments the importer does not classify as cancer treatment."""
_CATEGORY = {"surgery": codes.SURGERY_CATEGORY, "radiotherapy": codes.RADIOTHERAPY_CATEGORY}
"""The SNOMED CT category of a cancer Procedure."""


def _first_keys(table: dict[Any, str]) -> dict[str, Any]:
    """Inverse of a code map: each value -> the first key that maps to it."""
    inverse: dict[str, Any] = {}
    for key, value in table.items():
        inverse.setdefault(value, key)
    return inverse


_GRADE_CODE = _first_keys(codes.GRADES)
_STAGE_METHOD = _first_keys(codes.STAGE_SYSTEMS)
_LATERALITY_CODE = _first_keys(codes.LATERALITY)
_INTENT_CODE = _first_keys(codes.INTENTS)
_NODES_CODE = _first_keys(codes.NODES_LOINC)
_PERFORMANCE_CODE = {name: loinc for loinc, (name, _) in codes.PERFORMANCE.items()}
_TNM_CODE = {value: loinc for loinc, value in codes.TNM_LOINC.items()}


def write_fhir(data: CdmData, folder: Path, *, seed: int = 0) -> list[Path]:
    """One mCODE Bundle per patient of ``data`` in ``folder`` (``patient-00001.json``, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    linked: dict[TableName, defaultdict[str, list[Row]]] = {}
    for table in _LINKED:
        linked[table] = defaultdict(list)
        for row in data[table].to_pylist():
            linked[table][row[KEY]].append(row)
    paths = []
    for number, patient in enumerate(data["patient"].to_pylist(), start=1):
        rows = {table: linked[table][patient[KEY]] for table in _LINKED}
        bundle = _PatientBundle(rng, number).build(patient, rows)
        paths.append(folder / f"patient-{number:05d}.json")
        paths[-1].write_text(bundle.model_dump_json(), encoding="utf-8")
    return paths


def _concept(system: str, code: str) -> CodeableConcept:
    return CodeableConcept(coding=[Coding(system=system, code=code)])


def _extension(url: str, system: str, code: str) -> Extension:
    return Extension(url=url, valueCodeableConcept=_concept(system, code))


class _PatientBundle:
    """The resources of one patient, dated from a random diagnosis day."""

    def __init__(self, rng: random.Random, number: int) -> None:
        self.rng, self.number = rng, number
        self.diagnosis = FIRST_DIAGNOSIS + timedelta(days=rng.randrange(DIAGNOSIS_DAYS))
        self.entries: list[BundleEntry] = []
        self.days: list[int] = []
        self.patient = self._urn()
        self.subject = Reference(reference=self.patient)

    def refuse(self, what: str) -> ValueError:
        return ValueError(f"patient {self.number}: {what} cannot be written as FHIR mCODE")

    def build(self, patient: Row, rows: dict[TableName, list[Row]]) -> Bundle:
        tumours = sorted(rows["tumour"], key=lambda t: t["tumour_seq"])
        if not tumours or len(rows["outcome"]) != 1:
            raise self.refuse("a patient without tumour or outcome row")
        if [t["tumour_seq"] for t in tumours] != list(range(1, len(tumours) + 1)):
            raise self.refuse("tumour_seq other than 1..n")
        conditions = [self._tumour(tumour) for tumour in tumours]
        for marker in rows["biomarker"]:
            self._biomarker(marker)
        for treatment in rows["treatment"]:
            self._treatment(treatment)
        self._study(patient["trial_arm"], rows["outcome"][0]["randomisation_day"])
        deceased = self._outcome(rows["outcome"][0], [Reference(reference=conditions[0])])
        person = Patient(
            id=_id(self.patient),
            gender=patient["sex"],
            birthDate=self._birth(patient["age_at_diagnosis"]),
            **deceased,
        )
        entries = [BundleEntry(fullUrl=self.patient, resource=person), *self.entries]
        return Bundle(id=_id(self._urn()), type="collection", entry=entries)

    def _urn(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).urn

    def _date(self, day: int | None) -> date | None:
        if day is None:
            return None
        self.days.append(day)
        return self.diagnosis + timedelta(days=day)

    def _add(self, resource: Resource) -> str:
        """Add ``resource`` with a new random id; its ``urn:uuid`` reference."""
        urn = self._urn()
        resource.id = _id(urn)
        self.entries.append(BundleEntry(fullUrl=urn, resource=resource))
        return urn

    def _birth(self, age: int | None) -> date | None:
        """A random birthDate that makes the patient ``age`` whole years old at diagnosis."""
        if age is None:
            return None
        latest = _years_before(self.diagnosis, age)
        earliest = _years_before(self.diagnosis, age + 1) + timedelta(days=1)
        return earliest + timedelta(days=self.rng.randrange((latest - earliest).days + 1))

    def _observation(self, loinc: str, day: int | None, **value: Any) -> Observation:
        return Observation(
            status="final",
            code=_concept(codes.LOINC, loinc),
            subject=self.subject,
            effectiveDateTime=self._date(day),
            **value,
        )

    def _tumour(self, tumour: Row) -> str:
        """The Condition of a primary cancer and its observations; the Condition's urn."""
        onset = tumour["tumour_seq"] - 1
        site: dict[str, Any] = {}
        if tumour["primary_site"]:
            site["coding"] = [Coding(system=codes.ICDO3, code=tumour["primary_site"])]
        if tumour["laterality"]:
            if tumour["laterality"] not in _LATERALITY_CODE:
                raise self.refuse(f"laterality {tumour['laterality']!r}")
            side = _LATERALITY_CODE[tumour["laterality"]]
            site["extension"] = [_extension(codes.LATERALITY_EXTENSIONS[0], codes.SNOMED, side)]
        histology = tumour["histology"]
        condition = Condition(
            meta=Meta(profile=[codes.PRIMARY_CANCER]),
            extension=[_extension(codes.HISTOLOGY, codes.ICDO3, histology)] if histology else None,
            code=_concept(codes.ICD10_CM, tumour["icd10"]) if tumour["icd10"] else None,
            bodySite=[CodeableConcept(**site)] if site else None,
            subject=self.subject,
            onsetDateTime=self._date(onset),
        )
        urn = self._add(condition)
        for name, value in self._tumour_values(tumour).items():
            observation = self._observation(name, onset, **value)
            observation.focus = [Reference(reference=urn)]
            self._add(observation)
        return urn

    def _tumour_values(self, tumour: Row) -> dict[str, dict[str, Any]]:
        """LOINC code -> the value elements of each observation a tumour row needs."""
        values: dict[str, dict[str, Any]] = {}
        basis, system = tumour["stage_basis"], tumour["stage_system"]
        staged = [name for name in codes.TNM_FIELDS if tumour[name]]
        if (staged or system) and not (staged and basis):
            raise self.refuse("staging without both stage_basis and a TNM value")
        method = _concept(*_STAGE_METHOD[system]) if system else None
        for name in staged:
            code = tumour[name] if name == "stage_group" else basis[0] + tumour[name]
            values[_TNM_CODE[(name, basis)]] = {
                "valueCodeableConcept": _concept(codes.AJCC, code),
                "method": method,
            }
        if tumour["grade"]:
            values[codes.GRADE_LOINC[0]] = {
                "valueCodeableConcept": _concept(*_GRADE_CODE[tumour["grade"]])
            }
        if tumour["tumour_size_mm"] is not None:
            size = Quantity(value=tumour["tumour_size_mm"], unit="mm", system=codes.UCUM, code="mm")
            values[codes.SIZE_LOINC[0]] = {"valueQuantity": size}
        for name, loinc in (*_NODES_CODE.items(), *_PERFORMANCE_CODE.items()):
            if tumour[name] is not None:
                values[loinc] = {"valueInteger": tumour[name]}
        return values

    def _biomarker(self, marker: Row) -> None:
        value: dict[str, Any] = {}
        if marker["result"] in _INTERPRETATION:
            result = _concept(codes.V3_INTERPRETATION, _INTERPRETATION[marker["result"]])
            value["interpretation"] = [result]
        if marker["value"] is not None:
            if not marker["unit"]:
                raise self.refuse(f"biomarker {marker['code']} value without unit")
            value["valueQuantity"] = Quantity(
                value=marker["value"], unit=marker["unit"], system=codes.UCUM, code=marker["unit"]
            )
        elif not value:
            value["dataAbsentReason"] = _concept(_DATA_ABSENT, "unknown")
        self._add(self._observation(marker["code"], marker["day"], **value))

    def _treatment(self, treatment: Row) -> None:
        kind, agent, intent = treatment["type"], treatment["agent_code"], treatment["intent"]
        if kind in _OTHER and (not agent or treatment["start_day"] is None or intent):
            raise self.refuse(f"{kind} without agent_code and start_day, or with an intent")
        common: dict[str, Any] = {"subject": self.subject}
        if intent is not None:
            if intent not in _INTENT_CODE:
                raise self.refuse(f"treatment intent {intent!r}")
            url, code = codes.INTENT_EXTENSIONS[0], _INTENT_CODE[intent]
            common["extension"] = [_extension(url, codes.SNOMED, code)]
        start, end = self._date(treatment["start_day"]), self._date(treatment["end_day"])
        period = Period(start=start, end=end) if start or end else None
        resource: Resource
        if kind in ("surgery", "radiotherapy", "other_procedure"):
            if kind == "other_procedure" and agent in (
                *codes.RADIOTHERAPY_CODES,
                *_CATEGORY.values(),
                *codes.CANCER_SURGERY,
            ):
                raise self.refuse(f"{kind} with SNOMED CT code {agent!r}")
            category = _concept(codes.SNOMED, _CATEGORY[kind]) if kind in _CATEGORY else None
            resource = Procedure(
                status="completed",
                category=category,
                code=_concept(codes.SNOMED, agent) if agent else None,
                performedPeriod=period,
                **common,
            )
        elif kind == "other_medication":
            if codes.drug(agent) is not None:
                raise self.refuse(f"{kind} with RxNorm code {agent!r}")
            resource = MedicationStatement(
                status="completed",
                medicationCodeableConcept=_concept(codes.RXNORM, agent),
                effectivePeriod=period,
                **common,
            )
        else:
            if codes.drug(agent or "") != (None if kind == "other" else (agent, kind)):
                raise self.refuse(f"{kind} with RxNorm code {agent!r}")
            resource = MedicationStatement(
                meta=Meta(profile=[codes.CANCER_MEDICATION_PROFILES[2]]),
                status="completed",
                medicationCodeableConcept=_concept(codes.RXNORM, agent)
                if agent
                else CodeableConcept(text=kind),
                effectivePeriod=period,
                **common,
            )
        self._add(resource)

    def _study(self, arm: str | None, entry: int | None) -> None:
        """A ResearchSubject in its ResearchStudy for a trial arm or a study entry day."""
        if arm is None and entry is None:
            return
        start = self._date(entry)
        arms = [ResearchStudyArm(name=arm)] if arm else None
        study = self._add(ResearchStudy(status="completed", arm=arms))
        subject = ResearchSubject(
            status="on-study",
            study=Reference(reference=study),
            individual=self.subject,
            period=Period(start=start) if start else None,
            assignedArm=arm,
        )
        self._add(subject)

    def _outcome(self, outcome: Row, focus: list[Reference]) -> dict[str, Any]:
        """Adds the disease status observations; the Patient's ``deceased[x]``."""
        if outcome["time_origin"] != "diagnosis":
            raise self.refuse(f"time origin {outcome['time_origin']!r}")
        dead = outcome["vital_status"] == "dead"
        death = outcome["os_days"] if dead else None
        statuses: list[tuple[int, bool]] = []
        if outcome["rfs_event"] == 1 and outcome["rfs_days"] is not None:
            statuses.append((outcome["rfs_days"], True))
        last = outcome["last_followup_day"]
        if last is not None and last not in [day for day, _ in statuses]:
            statuses.append((last, False))
        for day, worsened in statuses:
            trend = codes.WORSENED if worsened else codes.STABLE
            status = self._observation(
                codes.DISEASE_STATUS_LOINC, day, valueCodeableConcept=_concept(codes.SNOMED, trend)
            )
            status.focus = focus
            self._add(status)
        entry = outcome["randomisation_day"]
        expected = {KEY: outcome[KEY], **fhir_outcome(dead, death, statuses, self.days, entry)}
        differ = sorted(name for name, value in outcome.items() if expected.get(name) != value)
        if differ:
            raise self.refuse(f"outcome {differ} (it would read back as {expected})")
        if death is not None:
            return {"deceasedDateTime": self._date(death)}
        return {"deceasedBoolean": dead}


def _id(urn: str) -> str:
    return urn.removeprefix("urn:uuid:")


def _years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier (28 February for 29 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)
