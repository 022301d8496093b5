"""The common oncology data model, defined once: every table, field, type, allowed value,
code system and source standard. Importers, validation, the data quality report, cohort
filters, job specs and ``docs/data-model.md`` all read this catalogue.

Based on mCODE (HL7 FHIR R4 oncology profiles) and OMOP CDM v5.4 with its oncology extension.
All times are integer days relative to the patient's time origin; no calendar date is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TableName = Literal["patient", "tumour", "biomarker", "treatment", "outcome"]
Kind = Literal["id", "category", "code", "integer", "number", "day", "flag", "text"]
"""How a field is stored: id/category/code/text are strings, integer/day/flag are integers
(flag is 0/1), number is a float."""

TABLES: tuple[TableName, ...] = ("patient", "tumour", "biomarker", "treatment", "outcome")
KEY = "patient_id"
"""Pseudonymous patient id: random at import, links the tables, never selectable in a job."""
EXTENSION_PREFIX = "ext."
AGE_CAP = 90
"""Ages above 89 are stored as 90 ("90 or older")."""


@dataclass(frozen=True)
class Field:
    """One field of the model."""

    name: str
    table: TableName
    kind: Kind
    description: str
    standard: str
    system: str | None = None
    values: tuple[str, ...] | None = None
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    unit: str | None = None
    required: bool = False

    @property
    def selectable(self) -> bool:
        """Whether a job may filter on or use this field (never the pseudonymous id)."""
        return self.kind not in ("id", "text")

    @property
    def numeric(self) -> bool:
        return self.kind in ("integer", "number", "day", "flag")


SEXES = ("female", "male", "other", "unknown")
LATERALITIES = ("left", "right", "bilateral", "not_applicable", "unknown")
STAGE_SYSTEMS = ("AJCC7", "AJCC8")
STAGE_BASES = ("clinical", "pathological")
T_CATEGORIES = (
    "TX", "T0", "Tis", "T1", "T1mi", "T1a", "T1b", "T1c", "T2", "T2a", "T2b", "T2c",
    "T3", "T3a", "T3b", "T3c", "T4", "T4a", "T4b", "T4c", "T4d", "T4e",
)  # fmt: skip
N_CATEGORIES = (
    "NX", "N0", "N0(i+)", "N0(mol+)", "N1", "N1mi", "N1a", "N1b", "N1c",
    "N2", "N2a", "N2b", "N2c", "N3", "N3a", "N3b", "N3c",
)  # fmt: skip
M_CATEGORIES = ("MX", "M0", "M0(i+)", "M1", "M1a", "M1b", "M1c", "M1d")
STAGE_GROUPS = (
    "0", "0is", "I", "IA", "IA1", "IA2", "IA3", "IB", "IB1", "IB2", "IC",
    "II", "IIA", "IIA1", "IIA2", "IIB", "IIC", "III", "IIIA", "IIIB", "IIIC", "IIIC1", "IIIC2",
    "IIID", "IV", "IVA", "IVB", "IVC",
)  # fmt: skip
GRADES = ("G1", "G2", "G3", "G4", "GX")
RESULTS = ("positive", "negative", "equivocal", "unknown")
TREATMENT_TYPES = (
    "surgery", "radiotherapy", "chemotherapy", "endocrine", "targeted", "immunotherapy", "other",
    "other_procedure", "other_medication",
)  # fmt: skip
"""``other``: a cancer therapy of no type above (a drug the source marks as cancer related that
the importer's map does not type); ``other_procedure`` and ``other_medication``: a procedure or
medication the source records but the importer does not classify as cancer treatment, kept with
its code and dates. It may still be one (a drug or an operation outside the importer's maps):
these types say what the importer recognised, not that the patient had no other therapy."""
INTENTS = ("curative", "palliative", "adjuvant", "neoadjuvant", "unknown")
TIME_ORIGINS = ("diagnosis", "surgery", "randomisation")
VITAL_STATUSES = ("alive", "dead", "unknown")
CAUSES_OF_DEATH = ("cancer", "other", "unknown")
TRIAL_ARM = r"^[A-Za-z0-9][A-Za-z0-9 _.,:;+/()\-]{0,63}$"
"""A trial arm's name: letters, digits, spaces and common punctuation, up to 64."""
ENDPOINTS = ("os", "rfs", "dmfs")
"""Survival endpoints: each has ``<endpoint>_days`` and ``<endpoint>_event``."""


@dataclass(frozen=True)
class Biomarker:
    """A supported tumour marker: short name used in jobs, LOINC code, usual unit."""

    name: str
    loinc: str
    description: str
    unit: str | None = None


BIOMARKERS: tuple[Biomarker, ...] = (
    Biomarker("ER", "85337-4", "Estrogen receptor Ag [Presence] in Breast cancer specimen"),
    Biomarker("PR", "85339-0", "Progesterone receptor Ag [Presence] in Breast cancer specimen"),
    Biomarker("HER2", "48676-1", "HER2 [Interpretation] in Tissue"),
    Biomarker("PSA", "2857-1", "Prostate specific Ag [Mass/volume] in Serum or Plasma", "ng/mL"),
    Biomarker("CEA", "2039-6", "Carcinoembryonic Ag [Mass/volume] in Serum or Plasma", "ng/mL"),
    Biomarker("CA125", "10334-1", "Cancer Ag 125 [Units/volume] in Serum or Plasma", "U/mL"),
    Biomarker("CA19-9", "24108-3", "Cancer Ag 19-9 [Units/volume] in Serum or Plasma", "U/mL"),
    Biomarker("AFP", "1834-1", "Alpha-1-Fetoprotein [Mass/volume] in Serum or Plasma", "ng/mL"),
)
BIOMARKER_BY_NAME = {b.name: b for b in BIOMARKERS}
BIOMARKER_BY_LOINC = {b.loinc: b for b in BIOMARKERS}

_MCODE = "mCODE"
_OMOP = "OMOP CDM v5.4"
_ID = Field(KEY, "patient", "id", "Pseudonymous patient id, random at import.", "oncofed")


def _key(table: TableName) -> Field:
    return Field(KEY, table, "id", "Pseudonymous patient id, links to patient.", "oncofed")


def _days(table: TableName, name: str, what: str, standard: str, lowest: float = 0) -> Field:
    return Field(name, table, "day", what, standard, minimum=lowest, maximum=36_500, unit="d")


FIELDS: tuple[Field, ...] = (
    # patient: one row per patient
    _ID,
    Field("sex", "patient", "category", "Administrative sex.",
          f"{_MCODE} CancerPatient (US Core gender); {_OMOP} person.gender_concept_id",
          "HL7 AdministrativeGender", SEXES),
    Field("age_at_diagnosis", "patient", "integer",
          f"Age at diagnosis in whole years; {AGE_CAP} means {AGE_CAP} or older.",
          f"{_OMOP} person.year_of_birth with condition_start_date",
          minimum=0, maximum=120, unit="a"),
    Field("trial_arm", "patient", "code", "Clinical trial arm the patient was assigned to, "
          "as the study names it.", "FHIR ResearchSubject.assignedArm (actualArm)",
          "study arm name", pattern=TRIAL_ARM),
    # tumour: one row per primary cancer
    _key("tumour"),
    Field("tumour_seq", "tumour", "integer", "Order of this primary cancer (1 = first).",
          "NAACCR sequence number", minimum=1, maximum=20, required=True),
    Field("primary_site", "tumour", "code", "Primary site, ICD-O-3 topography (C50.9).",
          f"{_MCODE} PrimaryCancerCondition.bodySite; {_OMOP} oncology extension",
          "ICD-O-3 topography", pattern=r"^C\d{2}\.\d$"),
    Field("icd10", "tumour", "code", "Diagnosis, ICD-10 or ICD-10-CM C or D code (C50.9, C50.911).",
          f"{_MCODE} PrimaryCancerCondition.code", "ICD-10",
          pattern=r"^[CD]\d{2}(\.[0-9A-Z]{1,4})?$"),
    Field("histology", "tumour", "code", "Morphology/behaviour, ICD-O-3 (8500/3).",
          f"{_MCODE} HistologyMorphologyBehavior extension; {_OMOP} oncology extension",
          "ICD-O-3 morphology", pattern=r"^\d{4}/[0-3]$"),
    Field("laterality", "tumour", "category", "Side of a paired organ.",
          f"{_MCODE} PrimaryCancerCondition.bodySite laterality", "SNOMED CT", LATERALITIES),
    Field("stage_system", "tumour", "category", "AJCC edition of the staging.",
          f"{_MCODE} TNMStageGroup.method", "AJCC", STAGE_SYSTEMS),
    Field("stage_basis", "tumour", "category", "Clinical (c) or pathological (p) staging.",
          f"{_MCODE} TNM clinical/pathological profiles", "AJCC", STAGE_BASES),
    Field("t_category", "tumour", "category", "AJCC primary tumour (T) category.",
          f"{_MCODE} TNMPrimaryTumorCategory; {_OMOP} Cancer Modifier", "AJCC", T_CATEGORIES),
    Field("n_category", "tumour", "category", "AJCC regional nodes (N) category.",
          f"{_MCODE} TNMRegionalNodesCategory; {_OMOP} Cancer Modifier", "AJCC", N_CATEGORIES),
    Field("m_category", "tumour", "category", "AJCC distant metastases (M) category.",
          f"{_MCODE} TNMDistantMetastasesCategory; {_OMOP} Cancer Modifier", "AJCC",
          M_CATEGORIES),
    Field("stage_group", "tumour", "category", "AJCC stage group.",
          f"{_MCODE} TNMStageGroup; {_OMOP} Cancer Modifier", "AJCC", STAGE_GROUPS),
    Field("grade", "tumour", "category", "Histologic grade.",
          f"{_MCODE} HistologicGrade (AJCC); {_OMOP} Cancer Modifier", "AJCC grade", GRADES),
    Field("tumour_size_mm", "tumour", "number", "Largest tumour dimension.",
          f"{_MCODE} TumorSize; {_OMOP} Cancer Modifier", minimum=0, maximum=2000, unit="mm"),
    Field("nodes_positive", "tumour", "integer", "Regional lymph nodes positive.",
          "NAACCR item 820; OMOP Cancer Modifier", minimum=0, maximum=100),
    Field("nodes_examined", "tumour", "integer", "Regional lymph nodes examined.",
          "NAACCR item 830; OMOP Cancer Modifier", minimum=0, maximum=150),
    Field("ecog", "tumour", "integer", "ECOG performance status at diagnosis (0-5).",
          f"{_MCODE} ECOGPerformanceStatus (LOINC 89247-1)", minimum=0, maximum=5),
    Field("karnofsky", "tumour", "integer", "Karnofsky performance status at diagnosis.",
          f"{_MCODE} KarnofskyPerformanceStatus (LOINC 89243-0)", minimum=0, maximum=100),
    # biomarker: long table, one row per test
    _key("biomarker"),
    Field("code", "biomarker", "code", "Tumour marker test, LOINC code from the supported list.",
          f"{_MCODE} TumorMarkerTest.code; {_OMOP} measurement", "LOINC",
          tuple(b.loinc for b in BIOMARKERS), required=True),
    Field("result", "biomarker", "category", "Interpretation of the test.",
          f"{_MCODE} TumorMarkerTest.value / interpretation", "oncofed", RESULTS,
          required=True),
    Field("value", "biomarker", "number", "Numeric result, in ``unit``.",
          f"{_MCODE} TumorMarkerTest.valueQuantity; {_OMOP} measurement.value_as_number"),
    Field("unit", "biomarker", "code", "Unit of ``value``, UCUM.",
          f"{_OMOP} measurement.unit_concept_id", "UCUM",
          pattern=r"^[A-Za-z0-9%/.\[\]{}*^\-]{1,24}$"),
    _days("biomarker", "day", "Day of the test.", f"{_OMOP} measurement_date", -36_500),
    # treatment: long table, one row per treatment episode
    _key("treatment"),
    Field("type", "treatment", "category", "Kind of treatment; other_procedure and "
          "other_medication: recorded by the source, not classified as cancer treatment by the "
          "importer.",
          f"{_MCODE} CancerRelatedSurgicalProcedure / RadiationCourseSummary / "
          f"CancerRelatedMedicationRequest; {_OMOP} episode", "oncofed", TREATMENT_TYPES,
          required=True),
    _days("treatment", "start_day", "First day of treatment.", f"{_OMOP} episode_start_date",
          -36_500),
    _days("treatment", "end_day", "Last day of treatment.", f"{_OMOP} episode_end_date",
          -36_500),
    Field("agent_code", "treatment", "code", "Drug (RxNorm or ATC) or procedure code.",
          f"{_MCODE} medication code; {_OMOP} drug_exposure / procedure_occurrence",
          "RxNorm, ATC, SNOMED CT", pattern=r"^[A-Za-z0-9.\-]{1,32}$"),
    Field("intent", "treatment", "category", "Treatment intent.",
          f"{_MCODE} ProcedureIntent / TreatmentIntent", "oncofed", INTENTS),
    # outcome: one row per patient
    _key("outcome"),
    Field("time_origin", "outcome", "category", "Day 0 of every time of this patient.",
          "oncofed", "oncofed", TIME_ORIGINS, required=True),
    _days("outcome", "randomisation_day", "Day of study entry (randomisation): a job whose "
          "time origin is randomisation measures every time from it.",
          "FHIR ResearchSubject.period.start", -36_500),
    Field("vital_status", "outcome", "category", "Vital status at last follow-up.",
          f"{_MCODE} Patient.deceased; {_OMOP} death", "oncofed", VITAL_STATUSES),
    _days("outcome", "last_followup_day", "Last day the patient was known to be followed.",
          f"{_OMOP} observation_period_end_date"),
    _days("outcome", "os_days", "Overall survival time.", "oncofed"),
    Field("os_event", "outcome", "flag", "1: died at os_days, 0: alive (censored).",
          f"{_OMOP} death", minimum=0, maximum=1),
    _days("outcome", "rfs_days", "Recurrence-free survival time.", "oncofed"),
    Field("rfs_event", "outcome", "flag", "1: recurrence or death at rfs_days, 0: censored.",
          f"{_MCODE} CancerDiseaseStatus; {_OMOP} episode (disease recurrence)",
          minimum=0, maximum=1),
    _days("outcome", "dmfs_days", "Distant-metastasis-free survival time.", "oncofed"),
    Field("dmfs_event", "outcome", "flag", "1: distant metastasis or death at dmfs_days.",
          f"{_MCODE} CancerDiseaseStatus; {_OMOP} episode (metastasis)", minimum=0, maximum=1),
    Field("cause_of_death", "outcome", "category", "Cause of death, for competing risks.",
          f"{_OMOP} death.cause_concept_id", "oncofed", CAUSES_OF_DEATH),
)  # fmt: skip

BY_TABLE: dict[TableName, tuple[Field, ...]] = {
    table: tuple(f for f in FIELDS if f.table == table) for table in TABLES
}


def field(table: TableName, name: str) -> Field:
    """The field ``name`` of ``table``; KeyError names both when there is none."""
    for candidate in BY_TABLE[table]:
        if candidate.name == name:
            return candidate
    raise KeyError(f"{table}.{name} is not a field of the data model")


PATIENT_FIELDS: dict[str, Field] = {
    f.name: f for f in FIELDS if f.table in ("patient", "tumour", "outcome") and f.selectable
}
"""Fields with one value per patient (the index tumour for tumour fields), by name: the
names a job spec uses for features, filters and outcomes."""


@dataclass(frozen=True)
class Variable:
    """What a name in a job spec stands for: a patient field, a biomarker, a treatment flag or a
    site extension; ``values`` are its categories (None for a numeric variable)."""

    name: str
    numeric: bool
    values: tuple[str, ...] | None


def variable(name: str) -> Variable:
    """Resolve a job-spec name: ``age_at_diagnosis``, ``biomarker.ER`` (result category),
    ``biomarker.ER.value`` (number), ``treatment.endocrine`` (0/1), ``ext.NAME`` (numeric
    unless the spec gives levels). ValueError names what is allowed."""
    if name in PATIENT_FIELDS:
        f = PATIENT_FIELDS[name]
        return Variable(name, f.numeric, None if f.numeric else f.values)
    head, _, rest = name.partition(".")
    if head == "biomarker":
        marker, _, part = rest.partition(".")
        if marker not in BIOMARKER_BY_NAME:
            raise ValueError(f"{name!r}: unknown biomarker; supported: {sorted(BIOMARKER_BY_NAME)}")
        if part == "":
            return Variable(name, False, RESULTS)
        if part == "value":
            return Variable(name, True, None)
        raise ValueError(f"{name!r}: use biomarker.{marker} (result) or biomarker.{marker}.value")
    if head == "treatment":
        if rest not in TREATMENT_TYPES:
            raise ValueError(f"{name!r}: unknown treatment type; one of {list(TREATMENT_TYPES)}")
        return Variable(name, True, None)
    if head + "." == EXTENSION_PREFIX and rest:
        return Variable(name, True, None)
    if name == KEY:
        raise ValueError(f"{KEY!r} is pseudonymous and can never be selected by a job")
    raise ValueError(
        f"{name!r} is not a field of the data model; use one of {sorted(PATIENT_FIELDS)}, "
        "biomarker.NAME, biomarker.NAME.value, treatment.TYPE or ext.NAME"
    )
