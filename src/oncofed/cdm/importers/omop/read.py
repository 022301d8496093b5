"""Reading an OMOP source (SQLAlchemy URL, DuckDB file, CSV folder) into duckdb tables typed as
``COLUMNS``; a source that lacks a table or column, or whose values do not read as the OMOP
type, raises SourceError naming it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from oncofed.cdm.errors import SourceError
from oncofed.cdm.fields import BIOMARKER_BY_LOINC
from oncofed.cdm.importers.omop.concepts import SIZE_CODES

_ID, _DATE, _NUM, _TEXT, _INT = "BIGINT", "DATE", "DOUBLE", "VARCHAR", "INTEGER"
_TIMESTAMP = "TIMESTAMP"
EPOCH_DAYS_BELOW = 100_000
"""A numeric date column whose values all lie within this of 0 holds days since 1970-01-01
(up to the year 2243); otherwise seconds since 1970-01-01 (``_Reader._cast``)."""
COLUMNS: dict[str, dict[str, str]] = {
    "person": {
        "person_id": _ID, "gender_concept_id": _ID, "year_of_birth": _INT,
        "month_of_birth": _INT, "day_of_birth": _INT, "birth_datetime": _TIMESTAMP,
    },
    "condition_occurrence": {
        "condition_occurrence_id": _ID, "person_id": _ID, "condition_concept_id": _ID,
        "condition_start_date": _DATE, "condition_source_value": _TEXT,
        "condition_source_concept_id": _ID,
    },
    "measurement": {
        "person_id": _ID, "measurement_concept_id": _ID, "measurement_date": _DATE,
        "value_as_number": _NUM, "value_as_concept_id": _ID, "unit_concept_id": _ID,
        "measurement_event_id": _ID, "meas_event_field_concept_id": _ID,
    },
    "episode": {
        "episode_id": _ID, "person_id": _ID, "episode_concept_id": _ID,
        "episode_start_date": _DATE, "episode_end_date": _DATE, "episode_object_concept_id": _ID,
    },
    "episode_event": {"episode_id": _ID, "event_id": _ID, "episode_event_field_concept_id": _ID},
    "drug_exposure": {
        "drug_exposure_id": _ID, "person_id": _ID, "drug_concept_id": _ID,
        "drug_exposure_start_date": _DATE, "drug_exposure_end_date": _DATE,
    },
    "procedure_occurrence": {
        "procedure_occurrence_id": _ID, "person_id": _ID, "procedure_concept_id": _ID,
        "procedure_date": _DATE, "procedure_end_date": _DATE,
    },
    "observation_period": {"person_id": _ID, "observation_period_end_date": _DATE},
    "death": {"person_id": _ID, "death_date": _DATE, "cause_concept_id": _ID},
    "concept": {
        "concept_id": _ID, "concept_name": _TEXT, "domain_id": _TEXT, "vocabulary_id": _TEXT,
        "concept_class_id": _TEXT, "concept_code": _TEXT,
    },
}  # fmt: skip
"""The OMOP v5.4 tables and columns read, with the type each is read as."""


def load_source(con: duckdb.DuckDBPyConnection, source: str | Path, schema: str | None) -> None:
    """Create every table of ``COLUMNS`` in ``con`` from ``source`` (see ``import_omop``)."""
    with _reader(source, schema) as reader:
        _load(con, reader)


@dataclass(frozen=True)
class _Keep:
    """Rows to keep: ``column`` in ``values``, or ``or_not_null`` set."""

    column: str
    values: tuple[object, ...]
    or_not_null: str | None = None


class _Reader(ABC):
    """One kind of source; ``load`` creates a duckdb table with the typed columns."""

    where = ""

    @abstractmethod
    def columns(self, con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str] | None:
        """The table's columns, lower-case name -> actual name; None without the table."""

    @abstractmethod
    def relation(
        self, con: duckdb.DuckDBPyConnection, table: str, names: dict[str, str], keep: _Keep | None
    ) -> tuple[str, bool]:
        """A duckdb FROM clause with the raw columns, and whether ``keep`` was applied."""

    def load(self, con: duckdb.DuckDBPyConnection, table: str, keep: _Keep | None = None) -> None:
        actual = self.columns(con, table)
        if actual is None:
            raise SourceError(f"{self.where}: the OMOP table {table!r} is missing")
        wanted = COLUMNS[table]
        missing = [c for c in wanted if c not in actual]
        if missing:
            raise SourceError(f"{self.where}: OMOP table {table!r} lacks column(s) {missing}")
        names = {c: actual[c] for c in wanted}
        raw, applied = self.relation(con, table, names, keep)
        casts = ", ".join(
            f"{self._cast(con, table, raw, names[c], c, t)} AS {c}" for c, t in wanted.items()
        )
        sql = f"CREATE TABLE {table} AS SELECT * FROM (SELECT {casts} FROM {raw}) AS t"
        if keep is not None and not applied:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE keep_values AS SELECT unnest(?) AS v",
                [list(keep.values)],
            )
            sql += f" WHERE {keep.column} IN (SELECT v FROM keep_values)"
            if keep.or_not_null:
                sql += f" OR {keep.or_not_null} IS NOT NULL"
        try:
            con.execute(sql)
        except duckdb.Error as exc:
            raise self._cast_error(con, table, raw, names, exc) from exc

    def _cast(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        raw: str,
        name: str,
        column: str,
        kind: str,
    ) -> str:
        """The expression reading one raw column as ``kind``. A date or timestamp column is
        read as the source wrote it, decided per column from its values: ISO text (or a typed
        date), or numbers, as the SQLite databases of OHDSI's tools (DatabaseConnector,
        Eunomia) hold them: seconds since 1970-01-01 when any value is 100,000 or more away
        from 0 (any date after 1970-01-02), else days since 1970-01-01."""
        value = _ident(name)
        if kind not in (_DATE, _TIMESTAMP):
            return f"CAST({value} AS {kind})"
        number = f"TRY_CAST(CAST({value} AS VARCHAR) AS DOUBLE)"
        row = con.execute(
            f"SELECT count({value}), count({number}), max(abs({number})) FROM {raw}"
        ).fetchone()
        present, numeric, largest = row if row is not None else (0, 0, None)
        if not numeric:
            return f"CAST({value} AS {kind})"
        if numeric != present:
            raise SourceError(
                f"{self.where}: {table}.{column} mixes dates written as text and as numbers"
            )
        if largest >= EPOCH_DAYS_BELOW:
            return f"CAST(to_timestamp({number}) AT TIME ZONE 'UTC' AS {kind})"
        return f"CAST(DATE '1970-01-01' + CAST(round({number}) AS INTEGER) AS {kind})"

    def _cast_error(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        raw: str,
        names: dict[str, str],
        exc: duckdb.Error,
    ) -> SourceError:
        """Name the column whose values do not read as the OMOP type."""
        for column, kind in COLUMNS[table].items():
            try:
                read = self._cast(con, table, raw, names[column], column, kind)
                con.execute(f"SELECT {read} FROM {raw}")
            except duckdb.Error as bad:
                detail = str(bad).splitlines()[0]
                return SourceError(f"{self.where}: {table}.{column} is not {kind}: {detail}")
        return SourceError(f"{self.where}: cannot read {table}: {str(exc).splitlines()[0]}")


class _CsvReader(_Reader):
    def __init__(self, folder: Path) -> None:
        self.where = str(folder)
        self.files = {p.stem.lower(): p for p in folder.iterdir() if p.suffix.lower() == ".csv"}

    def _raw(self, table: str) -> str:
        path = str(self.files[table]).replace("'", "''")
        return f"read_csv('{path}', header = true, all_varchar = true)"

    def columns(self, con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str] | None:
        if table not in self.files:
            return None
        try:
            found = con.execute(f"DESCRIBE SELECT * FROM {self._raw(table)}").fetchall()
        except duckdb.Error as exc:
            msg = str(exc).splitlines()[0]
            raise SourceError(f"{self.files[table]}: not a readable CSV file: {msg}") from exc
        return {str(row[0]).lower(): str(row[0]) for row in found}

    def relation(
        self, con: duckdb.DuckDBPyConnection, table: str, names: dict[str, str], keep: _Keep | None
    ) -> tuple[str, bool]:
        return self._raw(table), False


class _DuckReader(_Reader):
    def __init__(self, con_path: Path, schema: str | None) -> None:
        self.path, self.schema, self.where = con_path, schema or "main", str(con_path)
        self.attached = False

    def columns(self, con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str] | None:
        if not self.attached:
            path = str(self.path).replace("'", "''")
            try:
                con.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
            except duckdb.Error as exc:
                msg = str(exc).splitlines()[0]
                raise SourceError(f"{self.where}: not a readable DuckDB file: {msg}") from exc
            self.attached = True
        rows = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = 'src' AND table_schema = ? AND lower(table_name) = ?",
            [self.schema, table],
        ).fetchall()
        return {str(c).lower(): str(c) for _, c in rows} or None

    def relation(
        self, con: duckdb.DuckDBPyConnection, table: str, names: dict[str, str], keep: _Keep | None
    ) -> tuple[str, bool]:
        name = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'src' "
            "AND table_schema = ? AND lower(table_name) = ?",
            [self.schema, table],
        ).fetchall()[0][0]
        return f"src.{_ident(self.schema)}.{_ident(str(name))}", False


class _SqlReader(_Reader):
    """A SQLAlchemy database: columns are fetched as text and typed by duckdb."""

    CHUNK = 500

    def __init__(self, engine: sa.Engine, schema: str | None, where: str) -> None:
        self.engine, self.schema, self.where = engine, schema, where
        try:
            inspector = sa.inspect(engine)
            self.tables = {t.lower(): t for t in inspector.get_table_names(schema=schema)}
        except SQLAlchemyError as exc:
            raise SourceError(f"{self.where}: cannot connect: {exc.__class__.__name__}") from exc
        self.inspector = inspector

    def columns(self, con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str] | None:
        if table not in self.tables:
            return None
        found = self.inspector.get_columns(self.tables[table], schema=self.schema)
        return {str(c["name"]).lower(): str(c["name"]) for c in found}

    def relation(
        self, con: duckdb.DuckDBPyConnection, table: str, names: dict[str, str], keep: _Keep | None
    ) -> tuple[str, bool]:
        source = sa.table(
            self.tables[table], *(sa.column(n) for n in names.values()), schema=self.schema
        )
        select = sa.select(*(sa.cast(source.c[n], sa.String).label(n) for n in names.values()))
        queries = [select]
        if keep is not None:
            column = source.c[names[keep.column]]
            queries = []
            if keep.or_not_null:
                queries.append(select.where(source.c[names[keep.or_not_null]].is_not(None)))
            nulls = source.c[names[keep.or_not_null]].is_(None) if keep.or_not_null else None
            for start in range(0, len(keep.values), self.CHUNK):
                chunk = select.where(column.in_(keep.values[start : start + self.CHUNK]))
                queries.append(chunk if nulls is None else chunk.where(nulls))
        rows: list[Sequence[object]] = []
        try:
            with self.engine.connect() as conn:
                for query in queries:
                    rows.extend(conn.execute(query).all())
        except SQLAlchemyError as exc:
            detail = str(exc).splitlines()[0]
            raise SourceError(f"{self.where}: cannot read {table}: {detail}") from exc
        arrays = [pa.array([r[i] for r in rows], pa.string()) for i in range(len(names))]
        con.register(f"raw_{table}", pa.Table.from_arrays(arrays, names=list(names.values())))
        return f"raw_{table}", True


@contextmanager
def _reader(source: str | Path, schema: str | None) -> Iterator[_Reader]:
    text = str(source)
    if "://" in text and not text.startswith("duckdb:"):
        with _sql_reader(text, schema, None) as reader:
            yield reader
        return
    path = Path(text.removeprefix("duckdb:///")) if text.startswith("duckdb:") else Path(text)
    if path.is_dir():
        yield _CsvReader(path)
    elif not path.is_file():
        raise SourceError(f"{path}: no such OMOP database file or CSV folder")
    elif path.suffix.lower() in (".db", ".sqlite", ".sqlite3") and not text.startswith("duckdb:"):
        with _sql_reader(f"sqlite:///{path}", schema, text) as reader:
            yield reader
    else:
        yield _DuckReader(path, schema)


@contextmanager
def _sql_reader(url: str, schema: str | None, typed: str | None) -> Iterator[_Reader]:
    """A reader of the database at ``url``; messages name ``typed`` (the path the admin gave)
    or else ``url`` without its password, never the read-only URL actually opened."""
    try:
        where = typed or sa.engine.make_url(url).render_as_string(hide_password=True)
        engine = sa.create_engine(_read_only(url))
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise SourceError(f"{url.split('://')[0]}: not a usable database URL: {exc}") from exc
    try:
        yield _SqlReader(engine, schema, where)
    finally:
        engine.dispose()


def _read_only(url: str) -> str:
    """A SQLite URL opened read-only, so a mistyped path is an error, not a new empty file
    (an import never writes to the hospital's database)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    database = parsed.database or ""
    if not Path(database).is_file():
        raise SourceError(f"{url}: no such SQLite database file")
    return f"sqlite:///file:{Path(database).resolve()}?mode=ro&uri=true"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_MEASURED = {("LOINC", code) for code in BIOMARKER_BY_LOINC} | set(SIZE_CODES)
"""(vocabulary, code) of the measurements read without a link to an event."""


def _load(con: duckdb.DuckDBPyConnection, reader: _Reader) -> None:
    """Every table into ``con``: measurements only when linked to an event, a biomarker test or
    a tumour size of ``SIZE_CODES``, concepts only those referenced."""
    reader.load(con, "concept", _Keep("concept_code", tuple(sorted({c for _, c in _MEASURED}))))
    found = con.execute("SELECT concept_id, vocabulary_id, concept_code FROM concept").fetchall()
    con.execute("DROP TABLE concept")
    for table in COLUMNS:
        if table == "measurement":
            ids = tuple(i for i, *key in found if tuple(key) in _MEASURED)
            reader.load(con, table, _Keep("measurement_concept_id", ids, "measurement_event_id"))
        elif table != "concept":
            reader.load(con, table)
    used = con.execute(
        " UNION ".join(
            f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"
            for table, columns in COLUMNS.items()
            if table != "concept"
            for column in columns
            if column.endswith("_concept_id")
        )
    ).fetchall()
    reader.load(con, "concept", _Keep("concept_id", tuple(r[0] for r in used)))
