"""The de-identification guard: identifiers and dates refused by name and by content, normal
clinical columns accepted."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from oncofed.cdm.deid import Role, check_column, check_name, words
from oncofed.cdm.errors import IdentifierRefused

NEVER_STORED = "direct identifiers and calendar dates are never stored at import"


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
        f"record number pattern, one value per row; {NEVER_STORED}"
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
        (["AB1234", "CD-99812"], "medical record number"),
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
