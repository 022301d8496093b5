"""Mapping files: parsing, and every mapping error naming the file, line and field path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from oncofed.cdm.errors import MappingError
from oncofed.cdm.fields import PATIENT_FIELDS
from oncofed.cdm.mapping import (
    ColumnUse,
    FieldSource,
    TabularMapping,
    load_mapping,
    mapping_from_dict,
)

EXAMPLE = Path(str(resources.files("oncofed.cdm") / "examples" / "csv" / "mapping.yaml"))
DEMO = resources.files("oncofed.demo") / "mappings"
HEAD = "version: 1\nfields:\n  sex: {constant: female}\n"
"""Lines 1-3 of every mapping below."""


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    message = str(caught.value)
    prefix = f"{path}, "
    assert all(line.startswith(prefix) for line in message.splitlines())
    return message.replace(prefix, "")


def test_example_mapping_parses_short_forms_and_keeps_yes_no_as_text() -> None:
    mapping = load_mapping(EXAMPLE)
    assert mapping.date_format == "%d.%m.%Y"
    assert mapping.fields["rfs_event"] == FieldSource(column="relapse")
    assert mapping.fields["grade"].values == {"1": "G1", "2": "G2", "3": "G3"}
    assert mapping.fields["os_event"].values == {"alive": 0, "dead": 1}
    assert [t.received for t in mapping.treatments] == [["Y"], ["Y"]]
    assert list(mapping.columns())[:3] == [
        ColumnUse("birth_date", ("fields", "age_at_diagnosis", "date"), "date"),
        ColumnUse("diagnosis_date", ("fields", "age_at_diagnosis", "origin"), "date"),
        ColumnUse("side", ("fields", "laterality", "column"), "value"),
    ]


def test_demo_mappings_parse() -> None:
    north = load_mapping(Path(str(DEMO / "gbsg2.yaml")))
    west = load_mapping(Path(str(DEMO / "gbsg2_west.yaml")))
    assert north.treatments[0].received == ["yes"]
    assert west.treatments[0].received == ["1"]
    assert west.fields["grade"].values == {"1": "G1", "2": "G2", "3": "G3"}
    assert set(north.fields) == set(west.fields)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "  gradez: tgrade\n",
            "line 4, fields.gradez: not a field of the data model; use one of sex, ",
        ),
        (
            "  tumour_seq: {constant: 2}\n",
            "line 4, fields.tumour_seq: a wide file has one primary tumour per patient: "
            "tumour_seq is always 1",
        ),
        (
            "  grade: {column: tgrade, constant: G1}\n",
            "line 4, fields.grade: give exactly one of column, constant or date "
            "(given: column, constant)",
        ),
        (
            "  grade: {}\n",
            "line 4, fields.grade: give exactly one of column, constant or date (given: none)",
        ),
        (
            "  grade: {column: tgrade, colour: red}\n",
            "line 4, fields.grade.colour: unknown key",
        ),
        (
            "  grade:\n    column: tgrade\n    values: {I: G1, IV: G7}\n",
            "line 6, fields.grade.values.IV: 'G7' is not one of G1, G2, G3, G4, GX",
        ),
        (
            "  grade: {constant: G1, values: {I: G1}}\n",
            "line 4, fields.grade: a value map (values) needs a column",
        ),
        (
            "  tumour_size_mm: {column: size, unit: days}\n",
            "line 4, fields.tumour_size_mm.unit: days does not fit tumour_size_mm; use mm, cm",
        ),
        (
            "  nodes_positive: {column: pnodes, unit: cm}\n",
            "line 4, fields.nodes_positive.unit: cm does not fit nodes_positive; "
            "use none: it has no unit",
        ),
        (
            "  tumour_size_mm: {column: size, unit: inch}\n",
            "line 4, fields.tumour_size_mm.unit: Input should be 'mm', 'cm', 'days', 'weeks', "
            "'months' or 'years'",
        ),
        (
            "  age_at_diagnosis: {date: dob, origin: dx_date, unit: days}\n",
            "line 4, fields.age_at_diagnosis.unit: days does not fit age_at_diagnosis; use years",
        ),
        (
            "  grade: {date: a_date, origin: b_date}\n",
            "line 4, fields.grade.date: dates give days or whole years, and grade is neither",
        ),
        (
            "  age_at_diagnosis: {date: dob}\n",
            "line 4, fields.age_at_diagnosis: date and origin go together: the days from origin "
            "to date",
        ),
        (
            "  age_at_diagnosis: {constant: 150}\n",
            "line 4, fields.age_at_diagnosis.constant: 150 is outside 0 to 120",
        ),
        (
            "  nodes_positive: {constant: 2.5}\n",
            "line 4, fields.nodes_positive.constant: 2.5 is not a whole number",
        ),
        (
            "  icd10: {constant: breast}\n",
            "line 4, fields.icd10.constant: 'breast' is not a ICD-10 code (text matching "
            r"^[CD]\d{2}(\.[0-9A-Z]{1,4})?$)",
        ),
        (
            "  rfs_event: cens\n",
            "line 2, fields: outcome fields (rfs_event) need time_origin (day 0)",
        ),
        (
            "  sex: male\n",
            "line 4, fields.sex: given twice",
        ),
    ],
)
def test_field_errors_name_the_line_and_path(tmp_path: Path, body: str, message: str) -> None:
    assert error_of(tmp_path, HEAD + body).startswith(message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "biomarkers:\n  - {name: ER, value: estrec, positive_at_least: 10}\n"
            "  - {name: ERX, value: estrec, positive_at_least: 10}\n",
            "line 6, biomarkers.1.name: unknown biomarker; use one of ER, PR, HER2, PSA, CEA, "
            "CA125, CA19-9, AFP",
        ),
        (
            "biomarkers:\n  - {name: ER, value: estrec}\n",
            "line 5, biomarkers.0: give a result column or positive_at_least to derive the result",
        ),
        (
            "biomarkers:\n  - {name: HER2, result: her2, positive_at_least: 1}\n",
            "line 5, biomarkers.0: positive_at_least derives the result from a value column",
        ),
        (
            "biomarkers:\n  - {name: HER2, result: her2, unit: '%'}\n",
            "line 5, biomarkers.0: a unit needs a value column",
        ),
        (
            "biomarkers:\n  - {name: HER2, result: her2, values: {pos: yes}}\n",
            "line 5, biomarkers.0.values.pos: 'yes' is not one of positive, negative, equivocal, "
            "unknown",
        ),
        (
            "biomarkers:\n  - {name: ER, value: estrec, positive_at_least: 10, day: -40000}\n",
            "line 5, biomarkers.0.day: -40000 is outside -36500 to 36500",
        ),
        (
            "biomarkers:\n  - {name: ER, value: e, positive_at_least: 10}\n"
            "  - {name: ER, value: e2, positive_at_least: 10}\n",
            "line 6, biomarkers.1.name: ER is mapped twice",
        ),
        (
            "treatments:\n  - {type: hormones, column: horTh, received: [yes]}\n",
            "line 5, treatments.0.type: 'hormones' is not one of surgery, radiotherapy, "
            "chemotherapy, endocrine, targeted, immunotherapy, other, other_procedure, "
            "other_medication",
        ),
        (
            "treatments:\n  - type: endocrine\n    column: horTh\n    received: [yes]\n"
            "    agent_code: 10324\n",
            "line 8, treatments.0.agent_code: Input should be a valid string (quote codes such as "
            '"10324": unquoted, YAML reads a number)',
        ),
        (
            "treatments:\n  - {type: endocrine, column: horTh, received: []}\n",
            "line 5, treatments.0.received: List should have at least 1 item after validation",
        ),
        (
            "treatments:\n  - {type: endocrine, column: horTh, received: [yes], "
            "not_received: [yes, no]}\n",
            "line 5, treatments.0.not_received: ['yes'] are also in received",
        ),
        (
            "extensions:\n  Menopause: {column: menostat, values: {Pre: pre}}\n",
            "line 5, extensions.Menopause: an extension name matches ^[a-z][a-z0-9_]{0,39}$",
        ),
        (
            "extensions:\n  menopause: {column: menostat, values: {Pre: [pre]}}\n",
            "line 5, extensions.menopause.values.Pre: Input should be a valid string",
        ),
    ],
)
def test_list_errors_name_the_line_and_path(tmp_path: Path, body: str, message: str) -> None:
    assert error_of(tmp_path, HEAD + body).startswith(message)


def test_every_problem_is_listed_on_its_own_line(tmp_path: Path) -> None:
    text = HEAD + "  grade: {column: g, values: {I: G9}}\n  tsize: tsize\n"
    assert error_of(tmp_path, text).splitlines() == [
        "line 4, fields.grade.values.I: 'G9' is not one of G1, G2, G3, G4, GX",
        "line 5, fields.tsize: not a field of the data model; use one of "
        + ", ".join(PATIENT_FIELDS),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 2\nfields: {}\n", "line 1, version: Input should be 1"),
        ("fields: {}\n", "line 1, version: Field required"),
        ("- version: 1\n", "line 1: a mapping file is a YAML mapping (version, fields...)"),
        ("", "line 1: a mapping file is a YAML mapping (version, fields...)"),
        (
            "version: 1\nfields:\n  sex: {constant: female\n",
            "line 4: not valid YAML: expected ',' or '}', but got '<stream end>'",
        ),
        (
            "version: 1\nfields: !!python/object/apply:os.system [echo]\n",
            "line 2: not valid YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text) == message


def test_an_unreadable_file_is_a_mapping_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"nothing\.yaml: cannot be read: "):
        load_mapping(tmp_path / "nothing.yaml")


def test_a_mapping_from_a_dict_names_the_field_without_a_line() -> None:
    with pytest.raises(MappingError) as caught:
        mapping_from_dict({"version": 1, "fields": {"grade": {"constant": "G5"}}}, "site.yaml")
    assert str(caught.value) == (
        "site.yaml, fields.grade.constant: 'G5' is not one of G1, G2, G3, G4, GX"
    )
    mapping = mapping_from_dict({"version": 1, "fields": {"age_at_diagnosis": "age"}})
    assert isinstance(mapping, TabularMapping)
    assert mapping.where(("fields", "age_at_diagnosis")) == "mapping, fields.age_at_diagnosis"


@pytest.mark.parametrize(
    ("date_format", "written"),
    [
        ("%Q", " (2001-02-03 written with it is '%Q')"),
        ("%d.%m", " (2001-02-03 written with it is '03.02')"),
        ("%Y-%m", " (2001-02-03 written with it is '2001-02')"),
        ("%m/%Y", " (2001-02-03 written with it is '02/2001')"),
        ("%F", " (2001-02-03 written with it is '2001-02-03')"),  # Python cannot read %F
        ("", " (2001-02-03 written with it is '')"),
    ],
)
def test_a_date_format_must_read_back_day_month_and_year(
    tmp_path: Path, date_format: str, written: str
) -> None:
    text = f'version: 1\ndate_format: "{date_format}"\nfields:\n  sex: {{constant: female}}\n'
    assert error_of(tmp_path, text) == (
        f"line 2, date_format: {date_format!r} is not a date format that reads back the day, "
        f"month and year{written}; use strptime directives such as %d.%m.%Y or %Y-%m-%d"
    )


@pytest.mark.parametrize("date_format", ["%Y%m%d", "%d/%m/%y", "%b %d, %Y", "%Y-%m-%d %H:%M"])
def test_date_formats_that_read_back_are_accepted(date_format: str) -> None:
    mapping = mapping_from_dict({"version": 1, "date_format": date_format})
    assert mapping.date_format == date_format


def test_structural_and_catalogue_errors_are_reported_together_in_line_order(
    tmp_path: Path,
) -> None:
    text = (
        'version: 1\ndate_format: "%Q"\nfields:\n  sex: {constant: female}\n'
        "  gradez: {column: g, colour: red}\n"
        "biomarkers:\n  - {name: XX, value: x, positive_at_least: 1}\n"
        "treatments:\n  - {type: endocrine, column: horTh, received: []}\n"
        "extensions:\n  Bad-Name: {column: b}\n"
    )
    assert error_of(tmp_path, text).splitlines() == [
        "line 2, date_format: '%Q' is not a date format that reads back the day, month and "
        "year (2001-02-03 written with it is '%Q'); use strptime directives such as %d.%m.%Y "
        "or %Y-%m-%d",
        "line 5, fields.gradez.colour: unknown key",
        "line 5, fields.gradez: not a field of the data model; use one of "
        + ", ".join(PATIENT_FIELDS),
        "line 7, biomarkers.0.name: unknown biomarker; use one of ER, PR, HER2, PSA, CEA, "
        "CA125, CA19-9, AFP",
        "line 9, treatments.0.received: List should have at least 1 item after validation, not 0",
        "line 11, extensions.Bad-Name: an extension name matches ^[a-z][a-z0-9_]{0,39}$",
    ]


def test_a_mapping_from_a_dict_reports_structural_then_catalogue_errors() -> None:
    data: dict[str, object] = {
        "version": 1,
        "fields": {"grade": {"constant": "G9"}, "tsize": {"column": "t", "unit": "inch"}},
        "treatments": [{"type": "hormones", "column": "h", "received": ["yes"]}, "x"],
    }
    with pytest.raises(MappingError) as caught:
        mapping_from_dict(data, "site.yaml")
    assert str(caught.value).splitlines() == [
        "site.yaml, fields.tsize.unit: Input should be 'mm', 'cm', 'days', 'weeks', 'months' "
        "or 'years'",
        "site.yaml, treatments.1: Input should be a valid dictionary or instance of "
        "TreatmentSource",
        "site.yaml, fields.grade.constant: 'G9' is not one of G1, G2, G3, G4, GX",
        "site.yaml, fields.tsize: not a field of the data model; use one of "
        + ", ".join(PATIENT_FIELDS),
        "site.yaml, treatments.0.type: 'hormones' is not one of surgery, radiotherapy, "
        "chemotherapy, endocrine, targeted, immunotherapy, other, other_procedure, "
        "other_medication",
    ]
