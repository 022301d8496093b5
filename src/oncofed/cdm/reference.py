"""The field reference of ``docs/data-model.md``, generated from the catalogue so the two never
drift: ``python -m oncofed.cdm.reference docs/data-model.md`` rewrites the marked section."""

from __future__ import annotations

from oncofed import _reference
from oncofed.cdm.fields import BIOMARKERS, BY_TABLE, TABLES, Field

SECTION = "fields"
_TYPES = {
    "id": "id (text)",
    "category": "category",
    "code": "code",
    "text": "text",
    "integer": "integer",
    "number": "number",
    "day": "integer days",
    "flag": "0/1",
}


def _allowed(f: Field) -> str:
    if f.values is not None:
        return ", ".join(f"`{v}`" for v in f.values)
    if f.pattern is not None:
        return f"pattern `{f.pattern}`"
    if f.minimum is not None or f.maximum is not None:
        return f"{f.minimum:g} to {f.maximum:g}" + (f" {f.unit}" if f.unit else "")
    return ""


def _row(f: Field) -> str:
    name = f"`{f.name}`" + (" (required)" if f.required else "")
    cells = [name, _TYPES[f.kind], _allowed(f), f.system or "", f.standard, f.description]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def markdown() -> str:
    """One table per model table, then the supported biomarkers."""
    parts = [""]
    for table in TABLES:
        parts += [
            f"\n### `{table}`\n",
            "| field | type | allowed values | code system | standard | meaning |",
            "|---|---|---|---|---|---|",
            *(_row(f) for f in BY_TABLE[table]),
        ]
    parts += [
        "\n### Supported biomarkers\n",
        "| name in jobs | LOINC | test | usual unit |",
        "|---|---|---|---|",
        *(f"| `{b.name}` | `{b.loinc}` | {b.description} | {b.unit or ''} |" for b in BIOMARKERS),
        "",
    ]
    return "\n".join(parts)


def refresh(document: str) -> str:
    """``document`` with its generated section replaced by the current one."""
    return _reference.replace(document, SECTION, markdown())


if __name__ == "__main__":
    _reference.main(refresh)
