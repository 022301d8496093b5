"""A site's mapping file (YAML): how the columns of a wide CSV or Parquet file, one row per
patient, become the model's fields, biomarker rows, treatment rows and extension features.

Parsing is ``safe_load``-style (no tags) with YAML 1.2 booleans, so ``yes``/``no``/``on``/``off``
stay text (only ``true``/``false`` are booleans). Every error names the file, the line and
the field path, e.g. ``gbsg2.yaml, line 7, fields.grade.values.IV: ...``. All problems are
reported at once, in line order: structural ones (unknown keys, wrong types, missing sources)
beside catalogue ones (names, units, codes, values) of every part that is itself well formed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic import Field as Option

from oncofed.cdm.deid import Role
from oncofed.cdm.errors import MappingError
from oncofed.cdm.fields import (
    BIOMARKER_BY_NAME,
    PATIENT_FIELDS,
    Field,
    TableName,
    field,
)

Loc = tuple[str | int, ...]
Scalar = str | int | float

LENGTH_UNITS = {"mm": 1.0, "cm": 10.0}
TIME_UNITS = {"days": 1.0, "weeks": 7.0, "months": 30.4375, "years": 365.25}
UNITS: dict[str, dict[str, float]] = {"mm": LENGTH_UNITS, "d": TIME_UNITS, "a": {"years": 1.0}}
"""Source units each model unit accepts, with the factor to the model unit. Converted days
are rounded to the nearest day."""
DATE_UNITS = {"d": "days", "a": "years"}
"""What the span between two dates gives for a model unit: days, or whole years (floor)."""
Unit = Literal["mm", "cm", "days", "weeks", "months", "years"]
EXTENSION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
SAMPLE_DATE = dt.datetime(2001, 2, 3)
"""A day whose year, month and day differ, to check that a date format reads them all."""


def _date_format(value: str) -> str:
    """``value`` if 2001-02-03 written with it reads back as that day, with Python's and with
    Arrow's strptime (the import uses both), so that it gives the day, month and year."""
    written = ""
    with suppress(ValueError, pa.ArrowException):  # a directive either cannot handle
        text = SAMPLE_DATE.strftime(value)
        written = f" (2001-02-03 written with it is {text!r})"
        if dt.datetime.strptime(text, value) == SAMPLE_DATE:  # before Arrow: "" crashes it
            arrow = pc.strptime(pa.array([text]), format=value, unit="s", error_is_null=True)
            if arrow[0].as_py() == SAMPLE_DATE:
                return value
    raise ValueError(
        f"{value!r} is not a date format that reads back the day, month and year{written}; "
        "use strptime directives such as %d.%m.%Y or %Y-%m-%d"
    )


def source_text(value: object) -> str:
    """A source value as text, the way a value map and ``received`` compare it: numbers as
    written (``1``, ``2.5``), booleans as ``true``/``false`` (as Arrow casts them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError("must be text or a number")


def _target(value: object) -> Scalar:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be text or a number")
    return value


def _short_form(value: object) -> object:
    """``field: colname`` is short for ``field: {column: colname}``."""
    return {"column": value} if isinstance(value, str) else value


SourceValue = Annotated[str, PlainValidator(source_text)]
Target = Annotated[Scalar, PlainValidator(_target)]
T = TypeVar("T")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FieldSource(_Strict):
    """One model field: from a ``column`` (optionally through a value map ``values`` and a
    ``unit``), a ``constant``, or the days (or whole years) from ``origin`` to ``date``."""

    column: str | None = None
    constant: Target | None = None
    date: str | None = None
    origin: str | None = None
    values: dict[SourceValue, Target] | None = None
    unit: Unit | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FieldSource:
        given = [k for k in ("column", "constant", "date") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of column, constant or date "
                f"(given: {', '.join(given) or 'none'})"
            )
        if (self.date is None) != (self.origin is None):
            raise ValueError("date and origin go together: the days from origin to date")
        if self.values is not None and self.column is None:
            raise ValueError("a value map (values) needs a column")
        if self.unit is not None and self.constant is not None:
            raise ValueError("a constant takes no unit; write it in the model's unit")
        return self


class BiomarkerSource(_Strict):
    """Rows of one biomarker: a numeric ``value`` column and/or a ``result`` column; the result
    may be derived from the value (``positive_at_least``)."""

    name: str
    value: str | None = None
    result: str | None = None
    values: dict[SourceValue, str] | None = None
    unit: str | None = None
    positive_at_least: float | None = None
    day: int | None = None

    @model_validator(mode="after")
    def _result_source(self) -> BiomarkerSource:
        if self.value is None and self.result is None:
            raise ValueError("give a value column, a result column or both")
        if self.values is not None and self.result is None:
            raise ValueError("a value map (values) needs a result column")
        if self.unit is not None and self.value is None:
            raise ValueError("a unit needs a value column")
        if self.positive_at_least is not None and (self.value is None or self.result is not None):
            raise ValueError("positive_at_least derives the result from a value column")
        if self.result is None and self.positive_at_least is None:
            raise ValueError("give a result column or positive_at_least to derive the result")
        return self


class TreatmentSource(_Strict):
    """Rows of one treatment: one for each patient whose ``column`` holds a ``received`` value.
    With ``not_received``, any other value makes the row invalid."""

    type: str
    column: str
    received: list[SourceValue] = Option(min_length=1)
    not_received: list[SourceValue] | None = None
    agent_code: str | None = None
    intent: str | None = None
    start_day: int | None = None
    end_day: int | None = None


class ExtensionSource(_Strict):
    """A site-specific feature: numbers, or text through a value map (never free text)."""

    column: str
    values: dict[SourceValue, str] | None = None


FieldEntry = Annotated[FieldSource, BeforeValidator(_short_form)]
ExtensionEntry = Annotated[ExtensionSource, BeforeValidator(_short_form)]


@dataclass(frozen=True)
class ColumnUse:
    """A source column the mapping reads, where (``loc``) and how (``role``)."""

    column: str
    loc: Loc
    role: Role


@dataclass(frozen=True)
class _Origin:
    file: str
    root: yaml.Node | None


class TabularMapping(_Strict):
    """A mapping file. A wide file has one row per patient and one primary tumour each, so
    ``tumour_seq`` is always 1."""

    version: Literal[1]
    date_format: Annotated[str, AfterValidator(_date_format)] = "%Y-%m-%d"
    fields: dict[str, FieldEntry] = {}
    biomarkers: list[BiomarkerSource] = []
    treatments: list[TreatmentSource] = []
    extensions: dict[str, ExtensionEntry] = {}
    _origin: _Origin = PrivateAttr(default=_Origin("mapping", None))

    def model_post_init(self, context: object, /) -> None:
        """Check names, units, codes and values against the catalogue (``context`` is the
        file the mapping was read from, for the error messages)."""
        if isinstance(context, _Origin):
            self._origin = context
        parts = _Parts(self.fields, self.biomarkers, self.treatments, list(self.extensions))
        problems = list(_check(parts))
        if problems:
            raise MappingError(_report(self._origin, problems))

    def where(self, loc: Loc) -> str:
        """``file, line N, a.b.c`` for a place in the mapping (no line without a file)."""
        return _where(self._origin, loc)

    def columns(self) -> Iterator[ColumnUse]:
        """Every source column the mapping reads, in mapping order."""
        for name, src in self.fields.items():  # model values are checked against the model
            if src.column is not None:
                yield ColumnUse(src.column, ("fields", name, "column"), "value")
            if src.date is not None and src.origin is not None:
                yield ColumnUse(src.date, ("fields", name, "date"), "date")
                yield ColumnUse(src.origin, ("fields", name, "origin"), "date")
        for i, marker in enumerate(self.biomarkers):
            if marker.value is not None:
                yield ColumnUse(marker.value, ("biomarkers", i, "value"), "value")
            if marker.result is not None:
                yield ColumnUse(marker.result, ("biomarkers", i, "result"), "value")
        for i, treatment in enumerate(self.treatments):
            yield ColumnUse(treatment.column, ("treatments", i, "column"), "value")
        for name, ext in self.extensions.items():  # free text: text without a value map
            role: Role = "feature" if ext.values is None else "value"
            yield ColumnUse(ext.column, ("extensions", name, "column"), role)


@dataclass(frozen=True)
class _Parts:
    """What the catalogue checks read: the mapping's entries, None for one that is not well
    formed (its structural errors are reported instead), and the extension names."""

    fields: Mapping[str, FieldSource | None]
    biomarkers: Sequence[BiomarkerSource | None]
    treatments: Sequence[TreatmentSource | None]
    extensions: Sequence[str]

    @classmethod
    def of_data(cls, data: Mapping[str, object]) -> _Parts:
        """The entries of raw mapping ``data`` (invalid as a whole), each validated on its
        own, so that catalogue problems are reported beside the structural ones."""
        return cls(
            {k: _entry(_FIELD, v) for k, v in _items(data.get("fields"))},
            [_entry(_BIOMARKER, v) for v in _list(data.get("biomarkers"))],
            [_entry(_TREATMENT, v) for v in _list(data.get("treatments"))],
            [k for k, _ in _items(data.get("extensions"))],
        )


_FIELD: TypeAdapter[FieldSource] = TypeAdapter(FieldEntry)
_BIOMARKER = TypeAdapter(BiomarkerSource)
_TREATMENT = TypeAdapter(TreatmentSource)


def _entry(adapter: TypeAdapter[T], value: object) -> T | None:
    """``value`` validated, None when it is not well formed."""
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _items(section: object) -> list[tuple[str, object]]:
    """The entries of a mapping section with text keys (none if it is not a mapping)."""
    if not isinstance(section, dict):
        return []
    return [(k, v) for k, v in section.items() if isinstance(k, str)]


def _list(section: object) -> list[object]:
    """The items of a list section (none if it is not a list)."""
    return section if isinstance(section, list) else []


def _report(origin: _Origin, problems: Sequence[tuple[Loc, str]]) -> str:
    """One line per problem; in line order when read from a file (else in the order found)."""
    if origin.root is not None:
        root = origin.root
        problems = sorted(problems, key=lambda problem: _line(root, problem[0]))
    return "\n".join(f"{_where(origin, loc)}: {msg}" for loc, msg in problems)


def _where(origin: _Origin, loc: Loc) -> str:
    path = ".".join(str(p) for p in loc if p != "[key]") or "(top level)"
    if origin.root is None:
        return f"{origin.file}, {path}"
    return f"{origin.file}, line {_line(origin.root, loc)}, {path}"


def _line(node: yaml.Node, loc: Loc) -> int:
    """The line of the deepest node of ``loc`` present in the document (parts that are not in
    it, such as a missing key, keep the line of their parent)."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def units(f: Field, *, dated: bool) -> tuple[str, ...]:
    """Units a source may give ``f`` in (from a column, or between two dates)."""
    if dated:
        return (DATE_UNITS[f.unit],) if f.unit in DATE_UNITS else ()
    return tuple(UNITS.get(f.unit or "", {}))


def _value_problem(f: Field, value: Scalar) -> str | None:
    """Why ``value`` cannot be a value of ``f`` (None when it can)."""
    if f.values is not None:
        return None if value in f.values else f"{value!r} is not one of {', '.join(f.values)}"
    if f.pattern is not None:
        if isinstance(value, str) and re.match(f.pattern, value):
            return None
        return f"{value!r} is not a {f.system or f.name} code (text matching {f.pattern})"
    if isinstance(value, str):
        return f"{value!r} is not a number"
    if f.kind != "number" and not float(value).is_integer():
        return f"{value!r} is not a whole number"
    if (f.minimum is not None and value < f.minimum) or (
        f.maximum is not None and value > f.maximum
    ):
        return f"{value!r} is outside {f.minimum:g} to {f.maximum:g}"
    return None


def _check_values(f: Field, values: Mapping[str, Scalar], loc: Loc) -> Iterator[tuple[Loc, str]]:
    for key, target in values.items():
        problem = _value_problem(f, target)
        if problem:
            yield (*loc, key), problem


def _check_field(name: str, src: FieldSource | None) -> Iterator[tuple[Loc, str]]:
    loc: Loc = ("fields", name)
    if name not in PATIENT_FIELDS:
        yield loc, f"not a field of the data model; use one of {', '.join(PATIENT_FIELDS)}"
        return
    f = PATIENT_FIELDS[name]
    if name == "tumour_seq":
        yield loc, "a wide file has one primary tumour per patient: tumour_seq is always 1"
    if src is None:
        return
    if src.constant is not None:
        yield from _check_values(f, {"constant": src.constant}, loc)
    if src.values is not None:
        yield from _check_values(f, src.values, (*loc, "values"))
    if src.date is not None and f.unit not in DATE_UNITS:
        yield (*loc, "date"), f"dates give days or whole years, and {name} is neither"
    elif src.unit is not None and src.unit not in units(f, dated=src.date is not None):
        fits = ", ".join(units(f, dated=src.date is not None)) or "none: it has no unit"
        yield (*loc, "unit"), f"{src.unit} does not fit {name}; use {fits}"


def _check_constants(
    table: TableName, source: BaseModel, keys: tuple[str, ...], loc: Loc
) -> Iterator[tuple[Loc, str]]:
    """Problems of the constants ``keys`` of ``source``, values of the same-named fields."""
    for key in keys:
        value = getattr(source, key)
        problem = None if value is None else _value_problem(field(table, key), value)
        if problem is not None:
            yield (*loc, key), problem


def _check_biomarker(i: int, marker: BiomarkerSource) -> Iterator[tuple[Loc, str]]:
    loc: Loc = ("biomarkers", i)
    if marker.name not in BIOMARKER_BY_NAME:
        yield (*loc, "name"), f"unknown biomarker; use one of {', '.join(BIOMARKER_BY_NAME)}"
    if marker.values is not None:
        yield from _check_values(field("biomarker", "result"), marker.values, (*loc, "values"))
    yield from _check_constants("biomarker", marker, ("unit", "day"), loc)


def _check_treatment(i: int, t: TreatmentSource) -> Iterator[tuple[Loc, str]]:
    loc: Loc = ("treatments", i)
    keys = ("type", "agent_code", "intent", "start_day", "end_day")
    yield from _check_constants("treatment", t, keys, loc)
    both = set(t.received) & set(t.not_received or ())
    if both:
        yield (*loc, "not_received"), f"{sorted(both)} are also in received"


def _check(parts: _Parts) -> Iterator[tuple[Loc, str]]:
    """Problems that need the model catalogue: names, units, codes and values."""
    for name, src in parts.fields.items():
        yield from _check_field(name, src)
    outcome = [
        n for n in parts.fields if n in PATIENT_FIELDS and PATIENT_FIELDS[n].table == "outcome"
    ]
    if outcome and "time_origin" not in parts.fields:
        yield ("fields",), f"outcome fields ({', '.join(outcome)}) need time_origin (day 0)"
    seen: set[str] = set()
    for i, marker in enumerate(parts.biomarkers):
        if marker is None:
            continue
        if marker.name in seen:
            yield ("biomarkers", i, "name"), f"{marker.name} is mapped twice"
        seen.add(marker.name)
        yield from _check_biomarker(i, marker)
    for i, treatment in enumerate(parts.treatments):
        if treatment is not None:
            yield from _check_treatment(i, treatment)
    for name in parts.extensions:
        if not EXTENSION_NAME.match(name):
            yield ("extensions", name), f"an extension name matches {EXTENSION_NAME.pattern}"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so ``yes`` and ``no`` stay text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _duplicates(node: yaml.Node, file: str, path: Loc = ()) -> Iterator[str]:
    """``file, line N, path: key given twice`` for every repeated key (YAML keeps the last)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            where = ".".join(str(p) for p in (*path, key.value))
            if key.value in seen:
                yield f"{file}, line {key.start_mark.line + 1}, {where}: given twice"
            seen.add(key.value)
            yield from _duplicates(value, file, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicates(item, file, (*path, i))


def load_mapping(path: Path) -> TabularMapping:
    """Read and check a mapping file; MappingError names the file, line and field."""
    file = str(path)
    try:
        loader = _Loader(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{file}: cannot be read: {exc}") from exc
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise MappingError(f"{file}{line}: not valid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"{file}: not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    if root is None or not isinstance(data, dict):
        raise MappingError(f"{file}, line 1: a mapping file is a YAML mapping (version, fields...)")
    duplicates = list(_duplicates(root, file))
    if duplicates:
        raise MappingError("\n".join(duplicates))
    return _validate(data, _Origin(file, root))


def mapping_from_dict(data: dict[str, object], name: str = "mapping") -> TabularMapping:
    """A mapping given as a dict (errors name ``name`` and the field, without lines)."""
    return _validate(data, _Origin(name, None))


def _validate(data: dict[str, object], origin: _Origin) -> TabularMapping:
    try:
        return TabularMapping.model_validate(data, context=origin)
    except ValidationError as exc:
        problems = [(tuple(e["loc"]), _message(e["type"], e["msg"])) for e in exc.errors()]
        problems += _check(_Parts.of_data(data))
        raise MappingError(_report(origin, problems)) from exc


def _message(kind: str, msg: str) -> str:
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "string_type":
        return f'{msg} (quote codes such as "10324": unquoted, YAML reads a number)'
    return msg.removeprefix("Value error, ")
