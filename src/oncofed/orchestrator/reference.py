"""The settings reference of ``docs/operations.md``, generated from ``Settings`` so the two
never drift: ``python -m oncofed.orchestrator.reference docs/operations.md`` rewrites the
marked section."""

from __future__ import annotations

from pydantic import BaseModel

from oncofed import _reference
from oncofed.orchestrator.settings import Settings

SECTION = "settings"
_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def _no_models(model: type[BaseModel]) -> str:
    raise ValueError(f"settings hold no nested models, but {model.__name__}")


def environment_variable(name: str) -> str:
    """The variable that sets the setting ``name`` (pydantic-settings ignores its case)."""
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def _bytes(name: str, default: str) -> str:
    """A byte count's default with its size in binary units: ``4294967296`` (4 GiB)."""
    value = default.strip("`")
    if not ("bytes" in name.split("_") and value.isdigit()):
        return default
    n = int(value)
    for unit, size in _UNITS:
        if n >= size and n % size == 0:
            return f"{default} ({n // size} {unit})"
    return default


def markdown() -> str:
    """One table: each setting, its environment variable, type, default and meaning."""
    rows = [
        "| setting | environment variable | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for doc in _reference.fields(Settings, _no_models):
        cells = [
            f"`{doc.name}`",
            f"`{environment_variable(doc.name)}`",
            doc.type,
            _bytes(doc.name, doc.default),
            doc.meaning,
        ]
        rows.append("| " + " | ".join(_reference.cell(c) for c in cells) + " |")
    return "\n" + "\n".join(rows) + "\n"


def refresh(document: str) -> str:
    """``document`` with its generated section replaced by the current one."""
    return _reference.replace(document, SECTION, markdown())


if __name__ == "__main__":
    _reference.main(refresh)
