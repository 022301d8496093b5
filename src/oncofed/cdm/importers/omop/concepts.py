"""What each OMOP concept means to the importer, from the site's own CONCEPT table (vocabulary,
code, name, domain), never from hard-coded concept ids: the concepts a site uses are few, so
they are interpreted here in Python, one row per concept (``meanings``), and the SQL joins it.

ICD-O-3 ``hhhh/b-Cxx.x`` with behaviour 2 or 3 and ICD10/ICD10CM C00-C76, C80-C97, D00-D09
(C77-C79 are secondary) are primary cancers; an ICD-10(-CM) code is kept when it has the form
of the model's ``icd10`` field (C50.9, C50.911), and one of a primary cancer category without
that form (C509) is marked ``icd10_bad``; Cancer Modifier codes give stage and grade (a code
read as a T, N, M, stage or grade item whose value is not in the model has ``item_value``
None); tumour sizes are LOINC 33728-7 and 21889-1, NAACCR's tumour size items (``SIZE_CODES``)
and, in other vocabularies, measurements named a tumour size; drugs are typed by RxNorm
ingredient name or ATC prefix, procedures by name, episodes by name or concept class (a
disease-status episode is a recurrence, progression, metastasis, remission or stable disease, or
one of the oncology extension's Disease Dynamic or Disease Extent concepts; a Disease First
Occurrence is a diagnosis, no status)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pyarrow as pa

from oncofed.cdm.fields import (
    BIOMARKER_BY_LOINC,
    GRADES,
    M_CATEGORIES,
    N_CATEGORIES,
    STAGE_GROUPS,
    T_CATEGORIES,
)
from oncofed.cdm.fields import field as model_field

_ENDOCRINE = (
    "tamoxifen toremifene fulvestrant raloxifene letrozole anastrozole exemestane goserelin "
    "leuprolide triptorelin buserelin degarelix bicalutamide flutamide enzalutamide "
    "apalutamide darolutamide abiraterone megestrol medroxyprogesterone"
)
_TARGETED = (
    "trastuzumab pertuzumab lapatinib neratinib tucatinib palbociclib ribociclib abemaciclib "
    "olaparib talazoparib alpelisib everolimus bevacizumab ramucirumab cetuximab panitumumab "
    "imatinib dasatinib nilotinib erlotinib gefitinib afatinib osimertinib crizotinib "
    "alectinib sorafenib sunitinib pazopanib regorafenib lenvatinib cabozantinib vemurafenib "
    "dabrafenib trametinib rituximab"
)
_IMMUNO = (
    "pembrolizumab nivolumab atezolizumab durvalumab avelumab cemiplimab dostarlimab "
    "ipilimumab tremelimumab"
)
_CHEMO = (
    "cyclophosphamide ifosfamide doxorubicin epirubicin daunorubicin mitoxantrone paclitaxel "
    "docetaxel cabazitaxel carboplatin cisplatin oxaliplatin fluorouracil capecitabine "
    "tegafur methotrexate pemetrexed gemcitabine cytarabine vinorelbine vincristine "
    "vinblastine eribulin irinotecan topotecan etoposide mitomycin bleomycin dacarbazine "
    "temozolomide melphalan chlorambucil bendamustine busulfan"
)
DRUG_TYPES: dict[str, str] = {
    name: kind
    for kind, names in (
        ("endocrine", _ENDOCRINE), ("targeted", _TARGETED),
        ("immunotherapy", _IMMUNO), ("chemotherapy", _CHEMO),
    )
    for name in names.split()
}  # fmt: skip
"""RxNorm ingredient name -> treatment type: a drug concept (any RxNorm level) whose name
contains one of these ingredients is that kind of treatment; other drugs are not read."""
ATC_TYPES: tuple[tuple[str, str], ...] = (
    ("L01FF", "immunotherapy"), ("L01E", "targeted"), ("L01FD", "targeted"),
    ("L01FE", "targeted"), ("L01FG", "targeted"), ("L01", "chemotherapy"), ("L02", "endocrine"),
)  # fmt: skip
"""ATC code prefix -> treatment type, most specific first."""

_RADIOTHERAPY = re.compile(
    r"radiotherapy|radiation therapy|teletherapy|brachytherapy|external beam|radiosurgery"
)
_SURGERY = re.compile(
    r"mastectomy|lumpectomy|quadrantectomy|wide local excision|prostatectomy|pneumonectomy|"
    r"lobectomy of lung|gastrectomy|colectomy|esophagectomy|oesophagectomy|cystectomy|"
    r"nephrectomy|pancreatoduodenectomy|lymphadenectomy|lymph node dissection|"
    r"(excision|resection) of (malignant )?(neoplasm|tumou?r|carcinoma)"
)
"""Procedure names read as cancer radiotherapy or surgery (other procedures are not read)."""
_EPISODES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("metastasis", re.compile(r"metasta")),
    ("recurrence", re.compile(r"recurren|relapse|progression")),
    ("status", re.compile(r"remission|response|stable disease|no evidence of disease")),
    ("surgery", re.compile(r"surgery")),
    ("radiotherapy", re.compile(r"radiotherapy|radiation")),
    ("regimen", re.compile(r"regimen|drug treatment|chemotherapy")),
)
"""Episode name -> kind, first match. An episode of another name is of kind ``status`` when
its concept class is Disease Dynamic or Disease Extent (``_STATUS_CLASSES``: a state of the
disease at a time, e.g. Confined Disease), else ``disease`` when it is of another Disease class
or named a disease (Disease First Occurrence, an episode of care): a diagnosis, no assessment.
The status kinds (``STATUS_EPISODES``) are the evidence of disease-status follow-up
(``outcome``); ``disease`` never is, as oncology ETLs write a first occurrence for every
diagnosis."""
_STATUS_CLASSES = ("disease dynamic", "disease extent")
STATUS_EPISODES = ("metastasis", "recurrence", "status")
MAXIMUM, ANY_SIZE = 1, 2
"""Size kinds, in the order preferred on one day: the largest dimension, then any size."""
SIZE_CODES: dict[tuple[str, str], int] = {
    ("LOINC", "33728-7"): MAXIMUM, ("LOINC", "21889-1"): ANY_SIZE,
    **{("NAACCR", item): MAXIMUM for item in ("752", "754", "756", "780", "2800")},
}  # fmt: skip
"""(vocabulary, code) -> size kind: LOINC "Size.maximum dimension in Tumor" and "Size Tumor",
and NAACCR items 752, 754, 756 (Tumor Size Clinical, Pathologic, Summary), 780 (EOD--Tumor
Size) and 2800 (CS Tumor Size), each the largest dimension in mm. Other LOINC and NAACCR
concepts are never read as a size by their name (NAACCR 2820 is "CS Tumor Size/Ext Eval")."""
STANDARD_UNITS = {8588: "mm", 8582: "cm"}
"""OMOP's standard UCUM concepts for the size units, read as such only when the site's CONCEPT
table lacks them (a row it has always decides)."""
_RESULTS = {
    "positive": "positive", "detected": "positive", "present": "positive",
    "negative": "negative", "not detected": "negative", "absent": "negative",
    "equivocal": "equivocal", "borderline": "equivocal",
    "unknown": "unknown", "indeterminate": "unknown",
}  # fmt: skip
"""Value concept name (lower case) -> biomarker result."""
_INTENTS = (("neoadjuvant", r"neo-?adjuvant"), ("adjuvant", r"adjuvant"),
            ("curative", r"curative"), ("palliative", r"palliative"))  # fmt: skip
_QUANTITIES = (
    ("nodes_examined", re.compile(r"nodes? examined")),
    ("nodes_positive", re.compile(
        r"nodes? positive|positive (regional )?(lymph )?nodes|nodes? (with|containing) metasta"
    )),
)  # fmt: skip
_SIZE_NAMES = ((MAXIMUM, re.compile(r"(largest|greatest|maximum) dimension")),
               (ANY_SIZE, re.compile(r"tumou?r size|size of tumou?r")))  # fmt: skip
_NEOPLASM = re.compile(
    r"malignan|cancer|carcinoma|neoplasm|lymphoma|leuka?emia|sarcoma|melanoma|myeloma|tumou?r"
)
_ICDO3 = re.compile(r"^(\d{4}/(\d)|NULL)-(C\d{2}\.\d|NULL)$")
_ICD10 = re.compile(model_field("tumour", "icd10").pattern or "")
_AJCC = re.compile(r"^(?:([cp])-)?(?:(\d+)(?:st|nd|rd|th)_)?AJCC/UICC-(.+)$", re.IGNORECASE)
_GRADE = re.compile(r"^(?:[cp]-)?(?:grade[- ]?(\w+)|g([1-4x]))$", re.IGNORECASE)
_ROMAN = {"0": "0", "1": "I", "2": "II", "3": "III", "4": "IV"}
_CANCER_CATEGORY = re.compile(r"^(C\d{2}|D0\d)", re.IGNORECASE)
_FIELDS = ("condition_occurrence", "drug_exposure", "procedure_occurrence", "episode")


_MEANING = pa.schema(
    [("concept_id", pa.int64()), ("code", pa.string()), ("label", pa.string())]
    + [(name, pa.string()) for name in (
        "vocabulary", "domain",
        "sex", "icd10", "icd10_site", "histology", "site", "item", "item_value", "basis",
        "system", "biomarker", "result", "ucum", "drug_type", "drug_key", "procedure_type",
        "episode_kind", "field", "intent", "neoplasm",
    )]
    + [("malignant", pa.bool_()), ("icd10_bad", pa.bool_()), ("size_kind", pa.int64())]
)  # fmt: skip
"""What each concept means to the importer (one row per concept, most columns null)."""


def _lookup(values: Sequence[str]) -> dict[str, str]:
    return {v.lower(): v for v in values}


_T, _N, _M, _STAGE = (_lookup(v) for v in (T_CATEGORIES, N_CATEGORIES, M_CATEGORIES, STAGE_GROUPS))


def _icdo3(code: str) -> dict[str, object]:
    """ICD-O-3 ``8500/3-C50.9`` (either part may be NULL): histology, site, malignant."""
    match = _ICDO3.match(code)
    if not match:
        return {}
    histology, behaviour, site = match.groups()
    return {
        "histology": histology if behaviour and behaviour in "0123" else None,
        "site": None if site == "NULL" else site,
        "malignant": behaviour in ("2", "3"),
        "neoplasm": "yes",
    }


def _icd10(code: str) -> dict[str, object]:
    """ICD-10 or ICD-10-CM C/D code of the model's form (C50.9, C50.911): the code, the ICD-O-3
    site it implies (C00-C42, C44, C47-C76 with a numeric subcategory share their codes with the
    topography), and whether it is a primary cancer (C00-C76, C80-C97 malignant, D00-D09 in
    situ)."""
    if not _ICD10.match(code):
        prefix = _CANCER_CATEGORY.match(code)
        primary = prefix is not None and not "C77" <= prefix.group(1).upper() <= "C79"
        return {"icd10_bad": True} if primary else {}
    letter, category, sub = code[0], int(code[1:3]), code[4:]
    malignant = (letter == "C" and not 77 <= category <= 79) or (letter == "D" and category < 10)
    shared = letter == "C" and (category <= 42 or category == 44 or 47 <= category <= 76)
    return {
        "icd10": code,
        "icd10_site": f"C{category:02d}.{sub[0]}" if shared and sub[:1].isdigit() else None,
        "malignant": malignant,
        "neoplasm": "yes" if letter == "C" or category <= 48 else None,
    }


def _cancer_modifier(code: str) -> dict[str, object]:
    """Cancer Modifier staging/grading codes: ``c-8th_AJCC/UICC-T2``, ``p-7th_AJCC/UICC-N1a``,
    ``8th_AJCC/UICC-Stage-2A`` (arabic stage numbers become roman), ``Grade-3`` or ``G3``."""
    value: str | None
    grade = _GRADE.match(code)
    if grade:
        value = "G" + (grade.group(1) or grade.group(2)).upper()
        return {"item": "grade", "item_value": value if value in GRADES else None}
    ajcc = _AJCC.match(code)
    if not ajcc:
        return {}
    prefix, edition, rest = ajcc.groups()
    if rest.lower().startswith("stage-"):
        number = re.match(r"^([0-4])(.*)$", rest[6:])
        roman = _ROMAN[number.group(1)] + number.group(2) if number else ""
        item, value = "stage", _STAGE.get(roman.lower())
    elif rest[:1].upper() in "TNM":
        item = rest[0].lower()
        value = {"t": _T, "n": _N, "m": _M}[item].get(rest.lower())
    else:
        return {}
    return {
        "item": item,
        "item_value": value,
        "basis": {"c": "clinical", "p": "pathological"}.get((prefix or "").lower()),
        "system": {"7": "AJCC7", "8": "AJCC8"}.get(edition or ""),
    }


def _drug(vocabulary: str, code: str, name: str) -> dict[str, object]:
    if vocabulary == "ATC":
        kind = next((k for prefix, k in ATC_TYPES if code.startswith(prefix)), None)
        return {"drug_type": kind, "drug_key": code} if kind else {}
    if not vocabulary.startswith("RxNorm"):
        return {}
    found = sorted(i for i in DRUG_TYPES if re.search(rf"\b{i}\b", name))
    kinds = {DRUG_TYPES[i] for i in found}
    return {"drug_type": kinds.pop(), "drug_key": "+".join(found)} if len(kinds) == 1 else {}


def _size_kind(vocabulary: str, code: str, name: str) -> int | None:
    """The size kind of a measurement concept (``SIZE_CODES``, else by name outside LOINC and
    NAACCR), None when it is no tumour size."""
    if vocabulary in ("LOINC", "NAACCR"):
        return SIZE_CODES.get((vocabulary, code))
    return next((kind for kind, pattern in _SIZE_NAMES if pattern.search(name)), None)


def interpret(row: dict[str, str | int | None]) -> dict[str, object]:
    """The meaning of one CONCEPT row (see ``_MEANING``)."""
    vocabulary, code = str(row["vocabulary_id"] or ""), str(row["concept_code"] or "")
    name, domain = str(row["concept_name"] or "").strip(), str(row["domain_id"] or "")
    lower = name.lower()
    out: dict[str, object] = {
        "concept_id": row["concept_id"],
        "code": code,
        "label": f"{vocabulary} {code!r} ({name})",
        "vocabulary": vocabulary,
        "domain": domain,
    }
    if domain == "Gender" and lower in ("female", "male", "other", "unknown"):
        out["sex"] = lower
    if vocabulary == "ICDO3":
        out |= _icdo3(code)
    elif vocabulary in ("ICD10", "ICD10CM"):
        out |= _icd10(code)
    elif vocabulary == "Cancer Modifier":
        out |= _cancer_modifier(code)
    elif vocabulary == "LOINC" and code in BIOMARKER_BY_LOINC:
        out["biomarker"] = code
    elif vocabulary == "UCUM":
        out["ucum"] = code
    elif vocabulary == "CDM" or domain == "Metadata":
        out["field"] = next((t for t in _FIELDS if f"{t}.{t}_id" in (lower, code.lower())), None)
    if domain == "Measurement" and "item" not in out:
        size = _size_kind(vocabulary, code, lower)
        kind = next((k for k, pattern in _QUANTITIES if pattern.search(lower)), None)
        out["item"] = "size" if size else kind or ("intent" if "intent" in lower else None)
        out["size_kind"] = size
    out["result"] = _RESULTS.get(lower)
    out["intent"] = next((k for k, p in _INTENTS if re.match(p, lower)), None)
    out |= _drug(vocabulary, code, lower)
    if domain == "Procedure":
        surgery = "surgery" if _SURGERY.search(lower) else None
        out["procedure_type"] = "radiotherapy" if _RADIOTHERAPY.search(lower) else surgery
    if domain == "Episode" or vocabulary == "Episode":
        kind = next((k for k, p in _EPISODES if p.search(lower)), None)
        kind_class = str(row["concept_class_id"] or "").lower()
        if kind is None and kind_class in _STATUS_CLASSES:
            kind = "status"
        elif kind is None and (kind_class.startswith("disease") or "disease" in lower):
            kind = "disease"
        out["episode_kind"] = kind
    if "neoplasm" not in out and domain == "Condition" and _NEOPLASM.search(lower):
        out["neoplasm"] = "yes"
    return out


def meanings(rows: list[dict[str, str | int | None]]) -> pa.Table:
    return pa.Table.from_pylist([interpret(r) for r in rows], schema=_MEANING)


def source_values(values: list[str]) -> pa.Table:
    """``condition_source_value`` in the unambiguous ICD-O-3 histology-topography form."""
    rows = [{"source_value": v} | _icdo3(v) for v in values if _ICDO3.match(v)]
    schema = pa.schema(
        [
            ("source_value", pa.string()),
            ("histology", pa.string()),
            ("site", pa.string()),
            ("malignant", pa.bool_()),
        ]
    )
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema)
