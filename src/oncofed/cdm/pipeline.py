"""The end of every import: validate, de-identify, profile.

An importer's extract still links its rows by the source's own patient key. Here the rows that
break a rule are dropped (whole patients, counted by reason), ages above 89 become 90, every
source key is replaced by a fresh random pseudonym (128 bits from the operating system's
CSPRNG, never derived from the key, so two imports of the same data share no id), the rows are
put in pseudonym order (random, unrelated to the source's order), and the suppressed data
quality report is built.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oncofed.cdm.errors import RejectedPatient
from oncofed.cdm.fields import AGE_CAP, KEY, TABLES, TableName
from oncofed.cdm.quality import profile
from oncofed.cdm.tables import CdmData
from oncofed.cdm.validate import EXTENSIONS, ConversionErrors, validate
from oncofed.wire.profile import DataProfile, SourceFormat

PSEUDONYM_BYTES = 16
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass(frozen=True)
class Imported:
    """A dataset ready to store: pseudonymised tables and the report safe to publish, and the
    patients left out with every reason, for the site admin only (never published)."""

    data: CdmData
    profile: DataProfile
    rejections: list[RejectedPatient] = field(default_factory=list)


def finish_import(
    extract: CdmData,
    *,
    dataset: str,
    source_format: SourceFormat,
    rows_read: int,
    threshold: int = 11,
    conversion_errors: ConversionErrors | None = None,
    excluded: Mapping[str, int] | None = None,
    rejections: Sequence[RejectedPatient] = (),
    locate: Callable[[str], str] = lambda key: "patient table",
) -> Imported:
    """Validate ``extract``, cap ages, pseudonymise, and profile what is kept. ``excluded``
    counts patients the importer itself could not take (e.g. no primary cancer), by reason,
    and ``rejections`` lists them; ``locate`` says where a source key is in the source."""
    checked = validate(extract, conversion_errors)
    listed = [
        *rejections,
        *(RejectedPatient(key, locate(key), why) for key, why in checked.reasons.items()),
        *(RejectedPatient("", where, (why,)) for where, why in checked.unlinked),
    ]
    rejected = Counter(excluded or {})
    rejected.update(checked.rejected)
    data = in_pseudonym_order(pseudonymise(cap_ages(checked.data)))
    report = profile(
        data,
        dataset=dataset,
        source_format=source_format,
        rows_read=rows_read,
        rejected=dict(rejected),
        threshold=threshold,
    )
    return Imported(data, report, listed)


def cap_ages(data: CdmData) -> CdmData:
    """``data`` with every age at diagnosis above ``AGE_CAP`` stored as ``AGE_CAP`` (90 means
    90 or older)."""
    patients = data["patient"]
    age = patients["age_at_diagnosis"]
    capped = pc.if_else(pc.greater(age, AGE_CAP), AGE_CAP, age).cast(age.type)
    where = patients.schema.get_field_index("age_at_diagnosis")
    tables = {**data.tables, "patient": patients.set_column(where, "age_at_diagnosis", capped)}
    return CdmData(tables, data.extensions)


def pseudonyms(count: int) -> pa.Array:
    """``count`` random ids of 32 lower-case hex digits (128 bits each)."""
    raw = np.frombuffer(secrets.token_bytes(PSEUDONYM_BYTES * count), dtype=np.uint8)
    raw = raw.reshape(count, PSEUDONYM_BYTES)
    digits = np.empty((count, 2 * PSEUDONYM_BYTES), dtype=np.uint8)
    digits[:, 0::2] = _HEX[raw >> 4]
    digits[:, 1::2] = _HEX[raw & 0x0F]
    width = 2 * PSEUDONYM_BYTES
    offsets = np.arange(0, width * (count + 1), width, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(digits))


def in_pseudonym_order(data: CdmData) -> CdmData:
    """Every table sorted by pseudonym: a random order, so no stored row can be linked back to
    its position in the source."""
    tables: dict[TableName, pa.Table] = {
        name: data[name].sort_by([(KEY, "ascending")]) for name in TABLES
    }
    ext = data.extensions
    return CdmData(tables, None if ext is None else ext.sort_by([(KEY, "ascending")]))


def pseudonymise(data: CdmData) -> CdmData:
    """``data`` with every source patient key replaced by a fresh random pseudonym, the same
    one in every table and the extensions. ValueError for unvalidated data (a key missing, with
    no patient row, or with two patient rows)."""
    parts: dict[str, pa.Table] = {name: data[name] for name in TABLES}
    if data.extensions is not None:
        parts[EXTENSIONS] = data.extensions
    keys = [t[KEY].cast(pa.string()).combine_chunks() for t in parts.values()]
    source = keys[0]  # the patient table's
    where = pc.index_in(pa.concat_arrays(keys), value_set=source)
    first = where.slice(0, len(source)).to_numpy(zero_copy_only=False)
    if where.null_count or not np.array_equal(first, np.arange(len(source))):
        raise ValueError("every patient_id needs exactly one patient row: validate first")
    ids = pseudonyms(len(source)).take(where)
    bounds = np.cumsum([0, *(len(k) for k in keys)])
    relinked = {
        name: t.set_column(t.schema.get_field_index(KEY), KEY, ids.slice(start, len(t)))
        for (name, t), start in zip(parts.items(), bounds[:-1], strict=True)
    }
    extensions = relinked.pop(EXTENSIONS, None)
    tables: dict[TableName, pa.Table] = {name: relinked[name] for name in TABLES}
    return CdmData(tables, extensions)
