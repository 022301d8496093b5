"""The de-identification guard: identifiers and dates refused by name and by content (also as
numbers), normal clinical columns (the GBSG2 cohort, follow-up days, categories) accepted."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from lifelines.datasets import load_gbsg2

from oncofed.cdm.deid import Role, check_column, check_name, words
from oncofed.cdm.errors import IdentifierRefused
from oncofed.cdm.importers.tabular import import_tabular

NEVER_STORED = "direct identifiers and calendar dates are never stored at import"
MRN, ZIP, NAME = "medical record number", "ZIP code", "person name"


def refused(name: str, values: pa.Array, role: Role = "value") -> IdentifierRefused:
    with pytest.raises(IdentifierRefused) as caught:
        check_column(name, values, role=role)
    return caught.value


def test_a_planted_email_column_is_refused_by_content() -> None:
    values = pa.array(["ann@example.org", "bob.smith@mail.example.com", None, "c@x.de"])
    error = refused("contact", values)
    assert (error.column, error.rule) == ("contact", "e-mail address")
    assert str(error) == (
        "column 'contact' refused (e-mail address): 3 of 3 distinct values match the e-mail "
        f"address pattern; {NEVER_STORED}"
    )


def test_a_planted_birth_date_column_is_refused_by_type_text_and_name() -> None:
    dates = pa.array([dt.date(1950, 3, 12), dt.date(1961, 7, 1)])
    assert str(refused("born", dates)) == (
        f"column 'born' refused (calendar date): it holds calendar dates (date32[day]); "
        f"{NEVER_STORED}"
    )
    assert refused("born", pa.array(["1950-03-12", "1961-07-01"])).rule == "calendar date"
    by_name = refused("birth_date", pa.array([1, 2]))
    assert str(by_name) == (
        "column 'birth_date' refused (calendar date): "
        "its name marks it as a column of type calendar date; "
        f"{NEVER_STORED}"
    )


def test_a_planted_mrn_column_is_refused_by_content() -> None:
    codes = pa.array(["MRN00123456", "MRN00123457", "MRN00123458"])
    assert str(refused("ref", codes)) == (
        "column 'ref' refused (medical record number): 3 of 3 distinct values match the medical "
        f"record number pattern, 3 distinct values in 3 rows; {NEVER_STORED}"
    )
    assert refused("key", pa.array([10234567, 10234568, 10234599])).rule == "medical record number"


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("name", "person name"),
        ("first_name", "person name"),
        ("Surname", "person name"),
        ("last-name", "person name"),
        ("givenName", "person name"),
        ("family_name", "person name"),
        ("patient_name", "person name"),
        ("MRN", "medical record number"),
        ("patientMRN", "medical record number"),
        ("medical_record", "medical record number"),
        ("record_number", "medical record number"),
        ("hospital_number", "medical record number"),
        ("nhs_number", "medical record number"),
        ("patient_number", "medical record number"),
        ("patient_id", "medical record number"),
        ("chart", "medical record number"),
        ("ssn", "social security number"),
        ("social_security_no", "social security number"),
        ("phone", "phone number"),
        ("Telephone", "phone number"),
        ("homephone", "phone number"),
        ("mobile", "phone number"),
        ("fax", "phone number"),
        ("email", "e-mail address"),
        ("e_mail", "e-mail address"),
        ("mail", "e-mail address"),
        ("address", "street address"),
        ("street", "street address"),
        ("zip", "ZIP code"),
        ("ZipCode", "ZIP code"),
        ("postcode", "ZIP code"),
        ("postal_code", "ZIP code"),
        ("url", "URL"),
        ("website", "URL"),
        ("ip", "IP address"),
        ("ip_address", "IP address"),
        ("dob", "calendar date"),
        ("birth_date", "calendar date"),
        ("DateOfBirth", "calendar date"),
        ("date_of_birth", "calendar date"),
        ("surgery_date", "calendar date"),
        ("date_relapse", "calendar date"),
        ("diagnosisdate", "calendar date"),
    ],
)
def test_identifier_names_are_refused(name: str, rule: str) -> None:
    with pytest.raises(IdentifierRefused) as caught:
        check_name(name)
    assert (caught.value.column, caught.value.rule) == (name, rule)
    expected = f"column {name!r} refused ({rule}): its name marks it as a column of type {rule}"
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("values", "rule"),
    [
        (["123-45-6789", "987-65-4321"], "social security number"),
        (["(555) 123-4567", "+44 20 7946 0958", "555.123.4567"], "phone number"),
        (["12 Baker Street", "221B Baker St.", "3 Rue Road"], "street address"),
        (["02115", "90210-1234"], "ZIP code"),
        (["https://example.org/p/1", "www.example.com"], "URL"),
        (["192.168.0.1", "10.0.0.12"], "IP address"),
        (["15.01.2020", "3/7/21"], "calendar date"),
        (["Jan 15, 2020", "3 Feb 2021"], "calendar date"),
        (["2020-01-15T10:30:00", "2021-02-01"], "calendar date"),
        (["AB1234", "CD-99812", "EF/40032"], "medical record number"),
    ],
)
def test_identifier_content_is_refused(values: list[str], rule: str) -> None:
    assert refused("x", pa.array(values)).rule == rule


def test_integer_dates_and_timestamps_are_refused() -> None:
    assert refused("x", pa.array([19500312, 19610701, 19500312])).rule == "calendar date"
    stamps = pa.array([dt.datetime(2020, 1, 15, 10, 30)], pa.timestamp("s"))
    assert refused("x", stamps).rule == "calendar date"
    assert refused("x", pa.chunked_array([stamps])).rule == "calendar date"


def test_a_date_source_may_hold_dates_but_not_another_identifier() -> None:
    dates = pa.array(["1950-03-12", "1961-07-01"])
    check_column("birth_date", dates, role="date")
    check_column("dob", pa.array([dt.date(1950, 3, 12)]), role="date")
    assert refused("email", dates, role="date").rule == "e-mail address"


def test_free_text_is_refused_as_a_feature_but_numbers_and_mapped_text_pass() -> None:
    notes = pa.array(["smoker, stopped 2010", "never smoked"])
    error = refused("notes", notes, role="feature")
    assert str(error) == (
        "column 'notes' refused (free text): free text is not accepted as a feature; give a "
        f"value map; {NEVER_STORED}"
    )
    dictionary = pa.array(["Pre", "Post"]).dictionary_encode()
    assert refused("menostat", dictionary, role="feature").rule == "free text"
    check_column("menostat", pa.array(["Pre", "Post", "Pre"]), role="value")
    check_column("progrec", pa.array([48, 61, 52]), role="feature")


@pytest.mark.parametrize(
    "name",
    [
        "tsize", "tgrade", "nodes_examined", "progrec", "estrec", "horTh", "menostat", "time",
        "cens", "pnodes", "age", "patient_age", "tumour_size_cm", "grade", "nodes_pos",
        "er_fmol", "tamoxifen", "followup_months", "relapse", "her2_status", "ki67",
        "laterality", "stage_group", "histology", "icd10", "vital_status", "cause_of_death",
        "days_to_last_followup", "ipsilateral", "updated_flag", "candidate_trial", "mailing",
        "zipper", "drug_name_code", "menopause", "ecog", "smoking",
    ],
)  # fmt: skip
def test_clinical_column_names_pass(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize(
    "values",
    [
        pa.array(["G1", "G2", "G3"]),
        pa.array(["C50.9", "C50.4"]),
        pa.array(["8500/3", "8520/3"]),
        pa.array(["I", "II", "III", "II"]),
        pa.array(["pos", "neg", "2+"]),
        pa.array([1814, 2018, 712, 1807]),
        pa.array([0, 1, 1, 0]),
        pa.array([123456, 123456, 234567]),  # large but repeated: not one id per row
        pa.array([21.5, 12.0]),
        pa.array([None, None], pa.string()),
        pa.array([True, False]),
    ],
)
def test_clinical_content_passes(values: pa.Array) -> None:
    check_column("x", values, role="value")


def test_words_split_separators_and_camel_case() -> None:
    assert words("horTh") == ["hor", "th"]
    assert words("DateOfBirth") == ["date", "of", "birth"]
    assert words("patientMRN") == ["patient", "mrn"]
    assert words("MRNumber") == ["mr", "number"]
    assert words(" e-mail.address x") == ["e", "mail", "address", "x"]


ZIPS = [10115, 80331, 20095, 50667, 60311, 70173, 1067, 30159, 4109, 10115]
"""Berlin, Munich, Hamburg...; Dresden's 01067 and Leipzig's 04109 lost their leading zero."""
LAST = ("Smith", "Garcia", "Zhang", "Okafor", "Nowak")
SEVEN_DIGITS = [4711001 + 37 * i for i in range(19)] + [4711001]
"""Twenty record numbers, one of them twice."""


def rule_of(name: str, values: pa.Array, role: Role = "feature") -> str | None:
    """The rule that refuses the column, None when it passes."""
    try:
        check_column(name, values, role=role)
    except IdentifierRefused as error:
        return error.rule
    return None


def test_identifiers_in_numeric_extension_columns_are_refused_at_import(tmp_path: Path) -> None:
    source = tmp_path / "s.csv"
    lines = ["age,region,ref_float,ref2,pt_name"]
    names = [f"{first} {last}" for first in ("John", "Maria", "Wei", "Ngozi") for last in LAST]
    ages = load_gbsg2()["age"].to_numpy()
    for i in range(20):
        zip_code, ref = ZIPS[i % 10], 4_000_007.0 + 12 * i
        lines.append(f"{ages[i]},{zip_code},{ref:.1f},{SEVEN_DIGITS[i]},{names[i]}")
    source.write_text("\n".join(lines) + "\n")
    extensions: dict[str, dict[str, object]] = {
        "region": {"column": "region"},
        "ref_float": {"column": "ref_float"},
        "ref2": {"column": "ref2"},
        "pt_name": {"column": "pt_name", "values": {n: "x" for n in names}},
    }
    expected = {"region": ZIP, "ref_float": MRN, "ref2": MRN, "pt_name": NAME}
    for name, extension in extensions.items():
        mapping = tmp_path / "m.yaml"
        body = {"version": 1, "fields": {"age_at_diagnosis": "age"}, "extensions": {"e": extension}}
        mapping.write_text(yaml.safe_dump(body))
        with pytest.raises(IdentifierRefused) as caught:
            import_tabular(source, mapping)
        assert (caught.value.column, caught.value.rule) == (name, expected[name])


@pytest.mark.parametrize(
    ("values", "rule", "detail"),
    [
        (pa.array(ZIPS), ZIP, "7 of 9 distinct values match the ZIP code pattern"),
        (
            pa.array([4000007.0, 4000019.0, None, 4000023.0, float("nan")]),
            MRN,
            "3 of 3 distinct values match the medical record number pattern, "
            "3 distinct values in 3 rows",
        ),
        (
            pa.array([Decimal("4000007.00"), Decimal("4000019.00"), Decimal("4000023.00")]),
            MRN,
            "3 of 3 distinct values match the medical record number pattern, "
            "3 distinct values in 3 rows",
        ),
        (
            pa.array(SEVEN_DIGITS),
            MRN,
            "19 of 19 distinct values match the medical record number pattern, "
            "19 distinct values in 20 rows",
        ),
        (
            pa.array([19500312.0, 19610701.0]),
            "calendar date",
            "2 of 2 distinct values match the calendar date pattern",
        ),
        (
            pa.array(np.random.default_rng(1).permutation(686) + 1),
            MRN,
            "686 distinct values in 686 rows, whole numbers within a run of 686: a running "
            "number (record or row number)",
        ),
    ],
)
def test_identifiers_stored_as_numbers_are_refused(
    values: pa.Array, rule: str, detail: str
) -> None:
    assert str(refused("ext", values, role="feature")) == (
        f"column 'ext' refused ({rule}): {detail}; {NEVER_STORED}"
    )


@pytest.mark.parametrize(
    ("values", "rule"),
    [
        ([1234567, 2345678], None),  # two values say nothing about uniqueness
        ([1234567, 2345678, 3456789], MRN),
        ([1234567 + i for i in range(9)] + [1234567], MRN),  # 9 distinct in 10: 90%
        ([1234567 + i for i in range(8)] + [1234567] * 2, None),  # 8 in 10
        (list(range(1, 20)), None),  # 19 values: too few for a running number
        (list(range(1, 21)), MRN),
        ([*range(1, 20), 1], MRN),  # 19 distinct in 20: 95%
        ([*range(1, 19), 1, 2], None),  # 18 in 20
        ([*range(1, 20), 30], MRN),  # a run of 30 for 20 values
        ([*range(1, 20), 31], None),  # a run of 31: too sparse
        ([*ZIPS, 999], None),  # a three-digit value: not ZIP codes
        ([12000, 15000, 17000, 20000, 31000], ZIP),  # five digits only: an age in days too
    ],
)
def test_the_bounds_of_the_number_rules(values: list[int], rule: str | None) -> None:
    assert rule_of("ext", pa.array(values)) == rule
    assert rule_of("ext", pa.array([float(v) for v in values])) == rule


def test_the_gbsg2_columns_pass_as_they_are_and_as_floats() -> None:
    cohort = pa.Table.from_pandas(load_gbsg2(), preserve_index=False)
    for name in cohort.column_names:
        column = cohort[name]
        if pa.types.is_integer(column.type):
            check_column(name, column, role="feature")
            check_column(name, pc.cast(column, pa.float64()), role="feature")
        else:
            check_column(name, column, role="value")


def test_clinical_numbers_pass() -> None:
    rng = np.random.default_rng(7)
    days = rng.integers(0, 3651, 10_000)  # follow-up days, many repeats
    assert len(np.unique(days)) < len(days)
    time = load_gbsg2()["time"].to_numpy()
    columns = {
        "followup_days": days,
        "days_to_event": rng.integers(0, 36501, 10_000),
        "days_small_cohort": rng.choice(np.unique(time), 30, replace=False),  # distinct
        "age": load_gbsg2()["age"].to_numpy()[:25],
        "tumour_size_mm": rng.integers(1, 120, 500).astype(float),
        "nodes": rng.poisson(2, 500),
        "ki67_percent": rng.integers(0, 101, 300).astype(float),
        "psa": np.round(rng.lognormal(1, 1, 300), 2),
        "leukocytes_per_ul": rng.integers(30, 121, 200) * 100,
        "estrec": load_gbsg2()["estrec"].to_numpy(),
    }
    for name, values in columns.items():
        assert rule_of(name, pa.array(values)) is None, name


NAMES = [
    "John Smith", "Maria García", "Wei Zhang", "Seán O'Brien", "Anne-Marie Dupont",
    "Ludwig van Beethoven", "SMITH John", "Smith, Jane", "John F. Kennedy", "Ngozi Okafor",
]  # fmt: skip


@pytest.mark.parametrize("name", ["pt_name", "x"])
@pytest.mark.parametrize("role", ["value", "feature"])
def test_person_names_are_refused_by_content_with_or_without_a_value_map(
    name: str, role: Role
) -> None:
    assert str(refused(name, pa.array([*NAMES, None]), role)) == (
        f"column {name!r} refused (person name): 10 of 10 distinct values match the person "
        f"name pattern, 10 distinct values in 10 rows; {NEVER_STORED}"
    )
    assert rule_of(name, pa.array(NAMES[:3]), role) == NAME


@pytest.mark.parametrize(
    ("values", "rule"),
    [
        (["Stage I", "Stage II", "Stage III", "Stage IV"], None),
        (["Stage IA", "Stage IIB", "Stage IIIA", "Stage IIa"], None),
        (["Post", "Pre", "Post"], None),
        (["Yes", "No", "Yes"], None),
        (["Grade 1", "Grade 2", "Grade 3"], None),
        (["ER Positive", "ER Negative", "PR Positive"], None),
        (["Left Breast", "Right Breast", "Left Breast", "Left Breast", "Right Breast"], None),
        (["Invasive Ductal", "Invasive Lobular", "Mixed Type", "Invasive Ductal"], None),
        (["John Smith", "Maria Garcia", "Wei Zhang", "Anna Nowak", "Wei Zhang"], NAME),
        (["John Smith", "Maria Garcia", "Wei Zhang", "Wei Zhang", "Wei Zhang"], None),
        (["John Smith", "Maria Garcia"], None),  # two values: too few to tell
    ],
)
def test_the_bounds_of_the_person_name_rule(values: list[str], rule: str | None) -> None:
    assert rule_of("x", pa.array(values), role="value") == rule
