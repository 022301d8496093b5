"""The code systems, mCODE profiles and code maps the FHIR importer reads, and the parsing of
AJCC and ICD-10 codes. Pure data and string functions: no FHIR model, no I/O."""

from __future__ import annotations

import re
from decimal import Decimal

from oncofed.cdm import fields

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
AJCC = "http://cancerstaging.org"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10_SYSTEMS = (ICD10_CM, "http://hl7.org/fhir/sid/icd-10")
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
ICDO3_SYSTEMS = (ICDO3, "urn:oid:2.16.840.1.113883.6.43.1")

MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition/"
PRIMARY_CANCER = MCODE + "mcode-primary-cancer-condition"
SECONDARY_CANCER = MCODE + "mcode-secondary-cancer-condition"
HISTOLOGY = MCODE + "mcode-histology-morphology-behavior"
LATERALITY_EXTENSIONS = (MCODE + "mcode-laterality-qualifier", MCODE + "mcode-laterality")
INTENT_EXTENSIONS = (MCODE + "mcode-procedure-intent", MCODE + "mcode-treatment-intent")
CANCER_MEDICATION_PROFILES = tuple(
    MCODE + f"mcode-cancer-related-medication-{kind}"
    for kind in ("request", "administration", "statement")
)
SURGERY_PROFILES = (MCODE + "mcode-cancer-related-surgical-procedure",)
RADIOTHERAPY_PROFILES = (
    MCODE + "mcode-radiotherapy-course-summary",
    MCODE + "mcode-cancer-related-radiation-procedure",
)
SURGERY_CATEGORY = "387713003"
RADIOTHERAPY_CATEGORY = "108290001"
RADIOTHERAPY_CODES = (RADIOTHERAPY_CATEGORY, "1217123003")

TNM_LOINC: dict[str, tuple[str, str]] = {
    "21905-5": ("t_category", "clinical"),
    "21906-3": ("n_category", "clinical"),
    "21907-1": ("m_category", "clinical"),
    "21908-9": ("stage_group", "clinical"),
    "21899-0": ("t_category", "pathological"),
    "21900-6": ("n_category", "pathological"),
    "21901-4": ("m_category", "pathological"),
    "21902-2": ("stage_group", "pathological"),
}
TNM_FIELDS = ("t_category", "n_category", "m_category", "stage_group")
GRADE_LOINC = ("21858-6", "33732-9")
SIZE_LOINC = ("21889-1", "33728-7")
SIZE_MAX_DIMENSION = "33728-7"
NODES_LOINC = {"21893-3": "nodes_positive", "21894-1": "nodes_examined"}
DISEASE_STATUS_LOINC = "97509-4"

Key = tuple[str | None, str]
"""A (system, code) pair, as the maps below are keyed."""
LATERALITY = {"7771000": "left", "24028007": "right", "51440002": "bilateral"}
"""SNOMED laterality qualifiers."""
INTENTS = {
    "373808002": "curative",
    "363676003": "palliative",
    "373846009": "adjuvant",
    "373847000": "neoadjuvant",
}
"""SNOMED procedure/treatment intents."""
STAGE_SYSTEMS: dict[Key, str] = {
    (SNOMED, "897275008"): "AJCC8",
    (NCIT, "C146985"): "AJCC8",
    (SNOMED, "443830009"): "AJCC7",
}
GRADES: dict[Key, str] = {
    (SNOMED, "54102005"): "G1",
    (SNOMED, "1663004"): "G2",
    (SNOMED, "61026006"): "G3",
    (SNOMED, "258245003"): "G4",
    (SNOMED, "12619005"): "GX",
    **{(AJCC, grade): grade for grade in fields.GRADES},
}
RESULTS: dict[Key, str] = {
    (LOINC, "LA6576-8"): "positive",
    (LOINC, "LA6577-6"): "negative",
    (LOINC, "LA11885-3"): "equivocal",
    (SNOMED, "10828004"): "positive",
    (SNOMED, "260385009"): "negative",
    (SNOMED, "42425007"): "equivocal",
    (SNOMED, "82334004"): "unknown",
    (V3_INTERPRETATION, "POS"): "positive",
    (V3_INTERPRETATION, "NEG"): "negative",
    (V3_INTERPRETATION, "E"): "equivocal",
    (V3_INTERPRETATION, "IND"): "unknown",
}
"""Tumour marker results; indeterminate counts as ``unknown``."""
WORSENED, STABLE = "271299001", "359746009"
DISEASE_STATUS: dict[Key, bool] = {
    (SNOMED, WORSENED): True,
    (SNOMED, "268910001"): False,  # improved
    (SNOMED, STABLE): False,
    (SNOMED, "260415000"): False,  # not detected
    (SNOMED, "709137006"): False,  # undetermined
}
"""SNOMED condition trend -> recurrence or progression."""
ECOG_ANSWERS = {
    "LA9622-7": 0, "LA9623-5": 1, "LA9624-3": 2, "LA9625-0": 3, "LA9626-8": 4, "LA9627-6": 5,
}  # fmt: skip
KARNOFSKY_ANSWERS = {
    "LA29175-9": 100, "LA29176-7": 90, "LA29177-5": 80, "LA29178-3": 70, "LA29179-1": 60,
    "LA29180-9": 50, "LA29181-7": 40, "LA29182-5": 30, "LA29183-3": 20, "LA29184-1": 10,
    "LA9627-6": 0,
}  # fmt: skip
PERFORMANCE = {"89247-1": ("ecog", ECOG_ANSWERS), "89243-0": ("karnofsky", KARNOFSKY_ANSWERS)}
"""LOINC of ECOG and Karnofsky -> field and LOINC answer codes."""
DRUGS: dict[str, str] = {
    # endocrine: tamoxifen, letrozole, anastrozole, exemestane, fulvestrant
    "10324": "endocrine", "72965": "endocrine", "84857": "endocrine", "258494": "endocrine",
    "282357": "endocrine",
    # targeted: trastuzumab, pertuzumab; immunotherapy: pembrolizumab, nivolumab
    "224905": "targeted", "1298944": "targeted", "1547545": "immunotherapy",
    "1597876": "immunotherapy",
    # chemotherapy: cyclophosphamide, doxorubicin, epirubicin, paclitaxel, docetaxel,
    # fluorouracil, methotrexate, carboplatin, cisplatin, capecitabine
    "3002": "chemotherapy", "3639": "chemotherapy", "3995": "chemotherapy",
    "56946": "chemotherapy", "72962": "chemotherapy", "4492": "chemotherapy",
    "6851": "chemotherapy", "40048": "chemotherapy", "2555": "chemotherapy",
    "194000": "chemotherapy",
}  # fmt: skip
"""RxNorm ingredient -> treatment type."""
CLINICAL_DRUGS: dict[str, str] = {
    # endocrine: tamoxifen 10 MG and 20 MG, letrozole 2.5 MG, anastrozole 1 MG, exemestane
    # 25 MG Oral Tablet; 5 ML fulvestrant 50 MG/ML Prefilled Syringe
    "198240": "10324", "313195": "10324", "200064": "72965", "199224": "84857",
    "310261": "258494", "727762": "282357",
    # chemotherapy: 10 ML doxorubicin hydrochloride 2 MG/ML Injection, cisplatin 1 MG/ML
    # Injectable Solution, 1 ML docetaxel 20 MG/ML Injection, methotrexate 2.5 MG Oral Tablet,
    # capecitabine 150 MG and 500 MG Oral Tablet
    "1790099": "3639", "309311": "2555", "1860480": "72962", "105585": "6851",
    "200327": "194000", "200328": "194000",
}  # fmt: skip
"""RxNorm clinical drug (SCD), the code EHRs usually send -> its ingredient in ``DRUGS``. Each
id was found with this drug in public sources: the mCODE IG's examples (1790099, 309311),
openFDA's NDC directory (198240, 313195, 200327, 200328) or at least two public code bases that
agree (the others). Products of the other ingredients of ``DRUGS`` (trastuzumab, pertuzumab,
pembrolizumab, nivolumab, cyclophosphamide, epirubicin, paclitaxel, fluorouracil, carboplatin)
are not listed: their ids could not be confirmed."""
CANCER_SURGERY = frozenset((
    "172043006",  # Simple (total) mastectomy
    "64368001",  # Partial mastectomy (excision of part of breast)
    "392021009",  # Lumpectomy of breast
    "23968004",  # Colectomy
    "43075005",  # Partial resection of colon
    "173171007",  # Lobectomy of lung
    "359615001",  # Partial lobectomy of lung
    "90470006",  # Prostatectomy
))  # fmt: skip
"""SNOMED CT procedures that are cancer surgery when a cancer patient's record holds them, read
as surgery even without the mCODE surgical profile or category."""
SIZE_UNITS = {"mm": Decimal(1), "cm": Decimal(10)}
SKIPPED_STATUSES = frozenset(
    ("entered-in-error", "cancelled", "not-done", "not-taken", "draft", "intended", "refuted")
)
_ROMAN = ("0", "I", "II", "III", "IV")


def drug(rxnorm: str) -> tuple[str, str] | None:
    """The ingredient and treatment type of an RxNorm code: an ingredient of ``DRUGS`` or a
    clinical drug of ``CLINICAL_DRUGS``; None for another code."""
    ingredient = CLINICAL_DRUGS.get(rxnorm, rxnorm)
    kind = DRUGS.get(ingredient)
    return None if kind is None else (ingredient, kind)


def ajcc_category(code: str, basis: str, allowed: tuple[str, ...]) -> str | None:
    """``cT2``, ``pN1a`` or ``T2`` -> the model's category; None for another prefix or value."""
    match = re.fullmatch(r"([a-z]?)([TNM].*)", code)
    if match is None or match[1] not in ("", basis[0]) or match[2] not in allowed:
        return None
    return match[2]


def ajcc_stage_group(code: str) -> str | None:
    """``IIB`` or the AJCC code ``2B`` -> ``IIB``; None otherwise."""
    match = re.fullmatch(r"([0-4])(.*)", code)
    group = _ROMAN[int(match[1])] + match[2] if match else code
    return group if group in fields.STAGE_GROUPS else None


def ajcc_value(name: str, basis: str, code: str) -> str | None:
    """The model's value of the TNM field ``name`` (or stage group) for an AJCC code."""
    if name == "stage_group":
        return ajcc_stage_group(code)
    return ajcc_category(code, basis, fields.field("tumour", name).values or ())


def primary_icd10(code: str) -> bool:
    """ICD-10 primary neoplasms: C00-C76, C80-C97, D00-D09, D37-D49."""
    match = re.match(r"([CD])(\d{2})", code)
    if match is None:
        return False
    number = int(match[2])
    return not 77 <= number <= 79 if match[1] == "C" else number <= 9 or 37 <= number <= 49


def secondary_icd10(code: str) -> bool:
    """ICD-10 secondary neoplasms (metastases): C77-C79."""
    return re.match(r"C7[7-9]", code) is not None


def model_pattern(table: fields.TableName, name: str) -> re.Pattern[str]:
    """The form the model's field ``table.name`` takes (its catalogue pattern)."""
    return re.compile(fields.field(table, name).pattern or "")
