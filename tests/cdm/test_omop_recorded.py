"""OMOP import of every patient as the source recorded them (issue 9): tumour size from LOINC,
NAACCR and Cancer Modifier measurements, notes for the admin that name only concepts not read,
endpoints set only by their own records, and every reason a person is excluded.

Fixtures are edits of the shipped example (``tests/cdm/test_omop.py``) written as an OMOP ETL
writes rows: a measurement's ``measurement_concept_id`` is a CONCEPT row of its vocabulary and
code (LOINC ``33728-7``, NAACCR item ``754``), unlinked or linked to its condition through
``measurement_event_id`` and the field concept 1147127 (the OHDSI oncology extension). Concept
ids are local (2000000200 and up) except OMOP's standard ones the conventions name (32528
Disease First Occurrence, 8588 millimetre, 8582 centimetre): the importer reads a concept by
its vocabulary and code, never by its id."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncofed.cdm.errors import RejectedPatient
from oncofed.cdm.importers.omop import NO_DIAGNOSIS, NO_PERSON_ID, OmopImport, import_omop
from oncofed.cdm.importers.omop.concepts import STATUS_EPISODES, interpret
from tests.cdm.test_omop import EXPECTED, NOTES, READABLE, Edit, _edited, _rows

_SIZE_NOTE = "tumour sizes left empty, unit not mm or cm, or a range: 1"


def _concept(concept_id: int, name: str, vocabulary: str, code: str, domain: str = "Measurement",
             kind: str = "Clinical Observation") -> Edit:  # fmt: skip
    """A CONCEPT row as the OMOP vocabularies give it."""
    row = f'{concept_id},"{name}",{domain},{vocabulary},{kind},S,{code},1970-01-01,2099-12-31,'
    return ("concept.csv", None, row)


MAX_SIZE = _concept(2000000200, "Size.maximum dimension in Tumor", "LOINC", "33728-7")
ANY_SIZE = _concept(2000000201, "Size Tumor", "LOINC", "21889-1")
NAACCR_SIZE = _concept(2000000202, "Tumor Size Pathologic", "NAACCR", "754", kind="NAACCR Variable")
LESS_THAN_1CM = _concept(2000000203, 'Described as "less than 1 centimeter (cm)"', "NAACCR",
                         "breast@754@991", "Meas Value", "NAACCR Value")  # fmt: skip
_MM, _CM = "8588", "2000000050"
"""The example's UCUM unit concepts: 8588 ``mm`` (OMOP's id), ``cm`` under a local id."""


def _size(n: int, person: int, concept: int, day: str, number: str, unit: str = "",
          value: str = "", event: str = "") -> Edit:  # fmt: skip
    """A size measurement of ``person``; ``event`` a condition_occurrence_id it is linked to."""
    link = f"{event},1147127" if event else ","
    row = f"{200 + n},{person},{concept},{day},32879,{number},{value},{unit},{link}"
    return ("measurement.csv", None, row)


def _import(tmp_path: Path, edits: list[Edit]) -> OmopImport:
    return import_omop(_edited(tmp_path / "cdm", READABLE + edits))


def _sizes(got: OmopImport, person: str) -> list[object]:
    """The tumour sizes of ``person``, in tumour order."""
    return [r.get("tumour_size_mm") for r in _rows(got.data["tumour"]) if r["patient_id"] == person]


# Person 4: a lung cancer diagnosed 2012-02-02 (condition 401), no size in the example.
SIZES: list[tuple[str, list[Edit], float | None]] = [
    ("LOINC maximum dimension in cm, unlinked", [MAX_SIZE, _size(1, 4, 2000000200,
     "2012-02-10", "3.4", _CM)], 34.0),
    ("the closest to diagnosis", [MAX_SIZE, ANY_SIZE,
     _size(1, 4, 2000000201, "2012-02-02", "25", _MM),
     _size(2, 4, 2000000200, "2012-03-15", "30", _MM)], 25.0),
    ("on one day the maximum dimension over Size Tumor", [MAX_SIZE, ANY_SIZE,
     _size(1, 4, 2000000201, "2012-02-10", "25", _MM),
     _size(2, 4, 2000000200, "2012-02-10", "2.8", _CM)], 28.0),
    ("before diagnosis when closer", [MAX_SIZE,
     _size(1, 4, 2000000200, "2012-01-30", "20", _MM),
     _size(2, 4, 2000000200, "2012-02-06", "22", _MM)], 20.0),
    ("the earlier of two as close", [MAX_SIZE,
     _size(1, 4, 2000000200, "2012-02-05", "22", _MM),
     _size(2, 4, 2000000200, "2012-01-30", "20", _MM)], 20.0),
    ("OMOP's cm concept 8582 when CONCEPT lacks it", [MAX_SIZE,
     _size(1, 4, 2000000200, "2012-02-02", "2.5", "8582")], 25.0),
    ("NAACCR item 754 linked to the condition", [NAACCR_SIZE,
     _size(1, 4, 2000000202, "2012-02-02", "18", _MM, event="401")], 18.0),
]  # fmt: skip
"""(case, edits, person 4's tumour size in mm, hand-checked)."""


@pytest.mark.parametrize(("case", "edits", "mm"), SIZES, ids=[c[0] for c in SIZES])
def test_tumour_size_from_loinc_and_naaccr_measurements(
    case: str, edits: list[Edit], mm: float, tmp_path: Path
) -> None:
    got = _import(tmp_path, edits)
    assert _sizes(got, "4") == [mm]
    assert (got.rejected, got.notes) == ({NO_DIAGNOSIS: 1}, NOTES)


UNREAD: list[tuple[str, list[Edit]]] = [
    ("unit concept 0", [MAX_SIZE, _size(1, 4, 2000000200, "2012-02-02", "25", "0")]),
    ("no unit", [MAX_SIZE, _size(1, 4, 2000000200, "2012-02-02", "25")]),
    ("a unit of another dimension", [MAX_SIZE,
     _size(1, 4, 2000000200, "2012-02-02", "25", "2000000052")]),
    ("a unit not in CONCEPT", [MAX_SIZE, _size(1, 4, 2000000200, "2012-02-02", "25", "12345")]),
    ("a NAACCR range (less than 1 cm)", [NAACCR_SIZE, LESS_THAN_1CM,
     _size(1, 4, 2000000202, "2012-02-02", "1", "8582", "2000000203", "401")]),
    ("the closest unreadable, a later one in mm", [MAX_SIZE,
     _size(1, 4, 2000000200, "2012-02-02", "25"),
     _size(2, 4, 2000000200, "2012-05-02", "30", _MM)]),
]  # fmt: skip
"""(case, edits giving person 4 a size that cannot be read as mm)."""


@pytest.mark.parametrize(("case", "edits"), UNREAD, ids=[c[0] for c in UNREAD])
def test_a_size_without_a_known_unit_is_left_empty_and_noted_never_rejected(
    case: str, edits: list[Edit], tmp_path: Path
) -> None:
    got = _import(tmp_path, edits)
    assert _sizes(got, "4") == [None]
    assert (got.rejected, got.notes) == ({NO_DIAGNOSIS: 1}, [*NOTES, _SIZE_NOTE])


def test_a_cancer_modifier_size_without_unit_keeps_its_person(tmp_path: Path) -> None:
    """Person 5's size of 2.1 given in ng/mL: the size is left empty, every other row kept."""
    got = _import(tmp_path, [("measurement.csv", "2.1,,2000000050,", "2.1,,2000000052,")])
    tumour = [{**r, "tumour_size_mm": None} if r["patient_id"] == "5" else r
              for r in EXPECTED["tumour"]]  # fmt: skip
    assert _rows(got.data["tumour"]) == [{k: v for k, v in r.items() if v is not None}
                                         for r in tumour]  # fmt: skip
    assert (got.rejected, got.notes) == ({NO_DIAGNOSIS: 1}, [*NOTES, _SIZE_NOTE])


def test_an_unlinked_size_of_a_person_with_two_primaries_is_noted_not_read(
    tmp_path: Path,
) -> None:
    """Person 2: prostate cancer diagnosed 2015-07-10, then a colon cancer 2017-01-05; a 45 mm
    size linked to no event, dated on the colon's diagnosis, could be either tumour's."""
    got = _import(tmp_path, [MAX_SIZE, _size(1, 2, 2000000200, "2017-01-05", "45", _MM)])
    assert _sizes(got, "2") == [None, None]
    note = "unlinked tumour sizes of persons with several primaries, not read: 1"
    assert (got.rejected, got.notes) == ({NO_DIAGNOSIS: 1}, [*NOTES, note])


@pytest.mark.parametrize(("condition", "sizes"), [("201", [45.0, None]), ("203", [None, 45.0])])
def test_a_linked_size_is_its_tumours_whatever_the_day(
    condition: str, sizes: list[float | None], tmp_path: Path
) -> None:
    """Person 2's size linked to the prostate (201) or the colon (203) condition."""
    edits = [MAX_SIZE, _size(1, 2, 2000000200, "2017-01-05", "45", _MM, event=condition)]
    got = _import(tmp_path, edits)
    assert (_sizes(got, "2"), got.notes) == (sizes, NOTES)


_OUTSIDE = "unlinked tumour sizes outside days -30 to +90 of diagnosis, not read: 1"


@pytest.mark.parametrize(
    ("day", "mm", "note"),
    [("2012-01-03", 25.0, []), ("2012-01-02", None, [_OUTSIDE]),
     ("2012-05-02", 25.0, []), ("2012-05-03", None, [_OUTSIDE])],
)  # fmt: skip
def test_an_unlinked_size_is_read_from_30_days_before_to_90_days_after_diagnosis(
    day: str, mm: float | None, note: list[str], tmp_path: Path
) -> None:
    """Person 4's single primary, diagnosed 2012-02-02: day -30 is 2012-01-03, day +90 is
    2012-05-02 (2012 is a leap year)."""
    got = _import(tmp_path, [MAX_SIZE, _size(1, 4, 2000000200, day, "25", _MM)])
    assert _sizes(got, "4") == [mm]
    assert (got.rejected, got.notes) == ({NO_DIAGNOSIS: 1}, [*NOTES, *note])


def test_a_size_linked_to_another_event_is_noted_not_read(tmp_path: Path) -> None:
    """Person 4's size linked to an episode (field concept episode.episode_id), as NAACCR's
    ETL copies a condition's modifiers onto its disease episode, tells no tumour: not read."""
    edits = [MAX_SIZE, ("measurement.csv", None,
                        "201,4,2000000200,2012-02-02,32879,25,,8588,1,2000000002")]  # fmt: skip
    got = _import(tmp_path, edits)
    assert _sizes(got, "4") == [None]
    note = "tumour sizes linked to an event other than a cancer condition, not read: 1"
    assert (got.rejected, got.notes) == ({NO_DIAGNOSIS: 1}, [*NOTES, note])


def test_sizes_of_one_day_that_disagree_exclude_the_person(tmp_path: Path) -> None:
    got = _import(tmp_path, [MAX_SIZE, _size(1, 4, 2000000200, "2012-02-10", "20", _MM),
                             _size(2, 4, 2000000200, "2012-02-10", "2.5", _CM)])  # fmt: skip
    assert got.rejected == {NO_DIAGNOSIS: 1, "tumour.tumour_size_mm: conflicting values": 1}


@pytest.mark.parametrize(
    ("vocabulary", "code", "name", "size"),
    [("LOINC", "33728-7", "Size.maximum dimension in Tumor", 1),
     ("LOINC", "21889-1", "Size Tumor", 2),
     ("LOINC", "33729-5", "Size additional dimension in Tumor", None),
     ("NAACCR", "756", "Tumor Size Summary", 1),
     ("NAACCR", "2820", "CS Tumor Size/Ext Eval", None),
     ("SNOMED", "246116008", "Tumor size", 2),
     ("Cancer Modifier", "local-size", "Greatest dimension of tumour", 1)],
)  # fmt: skip
def test_size_concepts(vocabulary: str, code: str, name: str, size: int | None) -> None:
    meaning = interpret(
        {"concept_id": 1, "concept_name": name, "domain_id": "Measurement",
         "vocabulary_id": vocabulary, "concept_class_id": "Clinical Observation",
         "concept_code": code}
    )  # fmt: skip
    assert (meaning["size_kind"], meaning["item"] == "size") == (size, size is not None)


# --- notes for the admin -------------------------------------------------------------------

_LINKED = ",101,1147127"
"""Linked to person 1's breast cancer condition, as the oncology extension links modifiers."""


def test_a_concept_imported_is_never_listed_as_not_used(tmp_path: Path) -> None:
    """ER and PR measurements linked to the cancer condition are imported as biomarkers; a
    linked measurement the model has no field for is still listed, a node count without its
    number is noted, not listed."""
    edits: list[Edit] = [
        ("measurement.csv", "80,9191,2000000051,,", "80,9191,2000000051" + _LINKED),
        ("measurement.csv", ",9189,,,", ",9189," + _LINKED),
        _concept(2000000204, "Lymphovascular invasion", "Cancer Modifier", "LVI-1"),
        ("measurement.csv", None, "250,1,2000000204,2010-03-20,32879,,,," + _LINKED[1:]),
        ("measurement.csv", None, "251,1,2000000042,2010-04-20,32879,,,," + _LINKED[1:]),
    ]
    got = _import(tmp_path, edits)
    assert _rows(got.data["biomarker"]) == EXPECTED["biomarker"]
    assert dict(got.unmapped) == {
        "None 'No matching concept' (No matching concept)": 1,
        "measurement Cancer Modifier 'LVI-1' (Lymphovascular invasion)": 1,
    }
    assert got.notes == [*NOTES, "tumour sizes or node counts without a number, not read: 1"]


# --- endpoints -----------------------------------------------------------------------------

_NO_EPISODES: list[Edit] = [
    ("episode.csv", "1,1,2000000100,2013-01-01,,0,32879\n2,2,2000000101,2015-09-01,2016-03-01,"
                    "2000000080,32879\n", ""),
    ("episode_event.csv", "2,5,2000000001\n", ""),
]  # fmt: skip
FIRST = _concept(32528, "Disease First Occurrence", "Episode", "OMOP4822040", "Episode",
                 "Disease Episode")  # fmt: skip
RECURRENCE = _concept(2000000205, "Disease Recurrence", "Episode", "local-recurrence", "Episode",
                      "Disease Dynamic")  # fmt: skip
REMISSION = _concept(2000000206, "Complete Remission", "Episode", "local-remission", "Episode",
                     "Disease Dynamic")  # fmt: skip
STABLE = _concept(2000000207, "Stable Disease", "Episode", "local-stable", "Episode",
                  "Disease Dynamic")  # fmt: skip
CARE = _concept(2000000208, "Episode of care", "Episode", "local-care", "Episode",
                "Disease Episode")  # fmt: skip
_NO_RFS = "patients without rfs, no disease status recorded after diagnosis"
_NO_DMFS = "patients without dmfs, no disease status recorded after diagnosis"


def _episode(n: int, person: int, concept: int, day: str, end: str = "") -> Edit:
    return ("episode.csv", None, f"{10 + n},{person},{concept},{day},{end},0,32879")


_FIRST_OCCURRENCES: list[Edit] = [
    FIRST,
    ("episode.csv", None, "11,2,32528,2015-07-10,,2000000012,32879"),
    ("episode.csv", None, "12,4,32528,2012-02-02,,0,32879"),
    ("episode_event.csv", None, "11,201,1147127"),
    ("episode_event.csv", None, "12,401,1147127"),
]
"""A Disease First Occurrence of persons 2 and 4 on their diagnosis day, as the OHDSI NAACCR
ETL derives one from every cancer condition (its concept as the episode's object, linked to the
condition through episode_event and field concept 1147127)."""


def _outcomes(got: OmopImport) -> dict[str, dict[str, object]]:
    return {str(r["patient_id"]): r for r in got.data["outcome"].to_pylist()}


def _endpoints(got: OmopImport, person: str) -> tuple[object, ...]:
    """``person``'s rfs_days, rfs_event, dmfs_days, dmfs_event."""
    row = _outcomes(got)[person]
    return tuple(row[f"{e}_{x}"] for e in ("rfs", "dmfs") for x in ("days", "event"))


def test_deaths_without_disease_episodes_set_overall_survival_only(tmp_path: Path) -> None:
    got = _import(tmp_path, _NO_EPISODES)
    outcomes = _outcomes(got)
    assert {p: (o["os_days"], o["os_event"]) for p, o in outcomes.items()} == {
        "1": (1433, 1), "2": (1096, 0), "4": (303, 1), "5": (None, None)
    }  # fmt: skip
    assert all(o["rfs_days"] is None and o["rfs_event"] is None for o in outcomes.values())
    # person 1's later M1 is a recorded distant metastasis: DMFS stands on its own record
    assert (outcomes["1"]["dmfs_days"], outcomes["1"]["dmfs_event"]) == (823, 1)
    assert f"{_NO_RFS}: 3" in got.notes


def test_recurrence_episodes_set_rfs_for_their_persons_only(tmp_path: Path) -> None:
    """Person 1's M1 (day 823, a distant recurrence, before its progression on day 1037) and
    a recurrence of person 4 on 2012-06-01: day 120 after the diagnosis of 2012-02-02 (a leap
    year)."""
    got = _import(tmp_path, [RECURRENCE, _episode(1, 4, 2000000205, "2012-06-01")])
    rfs = {p: (o["rfs_days"], o["rfs_event"]) for p, o in _outcomes(got).items()}
    assert rfs == {"1": (823, 1), "2": (None, None), "4": (120, 1), "5": (None, None)}
    assert f"{_NO_RFS}: 1" in got.notes


@pytest.mark.parametrize(
    "edits",
    [_FIRST_OCCURRENCES,
     [*_FIRST_OCCURRENCES, CARE, _episode(3, 2, 2000000208, "2016-07-10", "2017-07-10"),
      _episode(4, 4, 2000000208, "2012-05-01")],
     [*_FIRST_OCCURRENCES, STABLE, _episode(3, 2, 2000000207, "2015-07-10"),
      _episode(4, 4, 2000000207, "2012-02-02")]],
    ids=["first occurrence", "later episode of care", "status on the day of diagnosis"],
)  # fmt: skip
def test_a_disease_episode_that_tells_no_later_status_sets_no_rfs_nor_dmfs(
    edits: list[Edit], tmp_path: Path
) -> None:
    """Person 2 (alive, M0, followed 1096 days) and person 4 (died on day 303), each with a
    Disease First Occurrence at diagnosis, and a later episode of care or a stable disease on
    the day of diagnosis: no assessment after diagnosis, so RFS and DMFS are left empty (not
    censored at the last follow-up nor equal to OS) and counted in the notes."""
    got = _import(tmp_path, edits)
    assert [_endpoints(got, person) for person in ("2", "4")] == [(None,) * 4] * 2
    assert (got.rejected, got.notes) == ({NO_DIAGNOSIS: 1}, NOTES)
    assert NOTES[2:] == [f"{_NO_RFS}: 2", f"{_NO_DMFS}: 1"]


def test_a_status_episode_after_diagnosis_sets_rfs_censored_at_the_last_assessment(
    tmp_path: Path,
) -> None:
    """Person 2 in complete remission from 2016-07-10 (day 366, 2016 a leap year) to 2017-07-10
    (day 731), followed to day 1096: RFS and DMFS (M0) censored on day 731, the last day
    assessed. Person 4 stable on 2012-05-01 (day 89), died on day 303: RFS ends in death; no
    DMFS (M category unknown)."""
    edits = [*_FIRST_OCCURRENCES, REMISSION, STABLE,
             _episode(3, 2, 2000000206, "2016-07-10", "2017-07-10"),
             _episode(4, 4, 2000000207, "2012-05-01")]  # fmt: skip
    got = _import(tmp_path, edits)
    assert _endpoints(got, "2") == (731, 0, 731, 0)
    assert _endpoints(got, "4") == (303, 1, None, None)
    assert (_outcomes(got)["2"]["os_days"], _outcomes(got)["4"]["os_days"]) == (1096, 303)
    assert got.notes == NOTES[:2]  # every person followed has RFS, and DMFS by their M


@pytest.mark.parametrize(
    ("name", "kind", "episode"),
    [("Disease First Occurrence", "Disease Episode", "disease"),
     ("Episode of care", "Disease Episode", "disease"),
     ("Complete Remission", "Disease Dynamic", "status"),
     ("Disease Remission", "Disease Episode", "status"),
     ("Stable disease", "Disease Dynamic", "status"),
     ("Confined Disease", "Disease Extent", "status"),
     ("Metastatic Disease", "Disease Extent", "metastasis"),
     ("Disease Recurrence", "Disease Episode", "recurrence"),
     ("Disease Progression", "Disease Dynamic", "recurrence"),
     ("Treatment Regimen", "Treatment Episode", "regimen"),
     ("Cancer Surgery", "Treatment Episode", "surgery")],
)  # fmt: skip
def test_episode_kinds(name: str, kind: str, episode: str) -> None:
    meaning = interpret(
        {"concept_id": 1, "concept_name": name, "domain_id": "Episode", "vocabulary_id": "Episode",
         "concept_class_id": kind, "concept_code": "x"}
    )  # fmt: skip
    assert meaning["episode_kind"] == episode
    assert (episode in STATUS_EPISODES) == (episode not in ("disease", "regimen", "surgery"))


# --- every reason of an excluded person ----------------------------------------------------


def test_an_excluded_person_is_listed_with_every_rule_broken(tmp_path: Path) -> None:
    edits: list[Edit] = [
        ("person.csv", "1,8532,", "1,12345,"),
        ("death.csv", "1,2014-02-01,", "1,2009-02-01,"),
        ("person.csv", None, ",8532,1970,,,,0,0"),
    ]
    got = _import(tmp_path, edits)
    sex, death = "patient.sex: concept not interpretable", "outcome.os_days: death before diagnosis"
    assert got.rejected == {NO_DIAGNOSIS: 1, sex: 1, NO_PERSON_ID: 1}
    assert got.rejections == [
        RejectedPatient("", "person table", (NO_PERSON_ID,)),
        RejectedPatient("1", "person and death tables", (sex, death)),
        RejectedPatient("3", "person table", (NO_DIAGNOSIS,)),
    ]
    assert sum(got.rejected.values()) == len(got.rejections)
