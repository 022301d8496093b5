"""Reference sections of the docs generated from the code, so the two never drift.

A generated section sits between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``;
``replace`` rewrites it and ``main`` is the ``python -m ... DOC.md`` entry of each generator.
``fields`` reads a pydantic model's fields as the references show them: a readable type, the
default and the meaning (the field's ``description``, else the docstring written under it,
read from the source since the models do not keep attribute docstrings).
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

END = "<!-- end generated -->"

Link = Callable[[type[BaseModel]], str]
"""How a type names a nested model: a Markdown link to its section."""


def start(name: str) -> str:
    """The marker that opens the generated section ``name``."""
    return f"<!-- generated: {name} -->"


def replace(document: str, name: str, body: str) -> str:
    """``document`` with its generated section ``name`` holding ``body``; ValueError when the
    document has no such section."""
    marker = start(name)
    head, found, rest = document.partition(marker)
    _, end, tail = rest.partition(END)
    if not found or not end:
        raise ValueError(f"the document has no {marker} ... {END} section")
    return head + marker + body + END + tail


def main(refresh: Callable[[str], str]) -> None:
    """Rewrite the document named on the command line with ``refresh``."""
    if len(sys.argv) != 2:
        sys.exit("usage: python -m oncofed.PACKAGE.reference DOC.md")
    path = Path(sys.argv[1])
    path.write_text(refresh(path.read_text()))


def cell(text: str) -> str:
    """``text`` as one Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def prose(docstring: str) -> str:
    """A docstring as Markdown: reStructuredText's double backticks become single ones."""
    return inspect.cleandoc(docstring).replace("``", "`")


# -- a model's fields ----------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDoc:
    """One field as a reference shows it."""

    name: str
    """The key as written (the field's alias, if it has one)."""
    type: str
    default: str
    """``required``, ``unset`` (None), or the default value in backticks."""
    meaning: str


def fields(model: type[BaseModel], link: Link) -> list[FieldDoc]:
    """Every field of ``model``, in declaration order."""
    docs = attribute_docstrings(model)
    return [
        FieldDoc(
            name=info.alias or name,
            type=describe(info.annotation, info.metadata, link),
            default=default(info),
            meaning=prose(info.description or docs.get(name, "")),
        )
        for name, info in model.model_fields.items()
    ]


def attribute_docstrings(model: type) -> dict[str, str]:
    """The string literal under each annotated attribute of ``model`` and of its bases (the
    nearest class wins), read from their source; classes without source give none."""
    docs: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if klass.__module__.startswith(("pydantic", "builtins")):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        node = ast.parse(source).body[0]
        if not isinstance(node, ast.ClassDef):
            continue
        for field, after in pairwise(node.body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[field.target.id] = after.value.value
    return docs


def default(info: FieldInfo) -> str:
    """The default of a field: ``required``, ``unset`` for None, else the value as YAML."""
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        tag = info.discriminator if isinstance(info.discriminator, str) else None
        dumped = value.model_dump(by_alias=True, exclude_defaults=True)
        value = {tag: getattr(value, tag), **dumped} if tag else dumped
    return f"`{yaml(value)}`"


def yaml(value: object) -> str:
    """``value`` in YAML's flow style (as a spec or a settings file would write it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


def number(value: float) -> str:
    """A bound or default: whole numbers without a decimal point, others as Python writes them."""
    if float(value).is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


_NAMES: dict[object, str] = {str: "str", int: "int", float: "float", bool: "bool", Path: "path"}


def describe(annotation: Any, constraints: Sequence[object], link: Link) -> str:
    """A readable type: ``int in [1, 1000]``, ``list of str, at least 1 item``, ``one of `a`,
    `b```, a link for a nested model (``link``); None in a union is left out (the default says
    whether the key may be left out)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return describe(args[0], [*constraints, *_constraints(args[1:])], link)
    if origin in (Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        if len(kept) == 1:
            return describe(kept[0], constraints, link)
        models = all(isinstance(a, type) and issubclass(a, BaseModel) for a in kept)
        named = [describe(a, (), link) for a in kept]
        return "one of " + ", ".join(named) if models else " or ".join(named)
    if origin is Literal:
        values = [f"`{yaml(v)}`" for v in args]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if origin is list:
        return f"list of {describe(args[0], (), link)}{_size(constraints, 'item')}"
    if origin is dict:
        key, value = (describe(a, (), link) for a in args)
        return f"map of {key} to {value}{_size(constraints, 'entry', 'entries')}"
    if origin is tuple:
        return "[" + ", ".join(describe(a, (), link) for a in args) + "]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return link(annotation)
    name = _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    if annotation in (int, float):
        return name + _bounds(constraints)
    if annotation is str:
        return name + _text(constraints)
    return name


def _constraints(metadata: Iterable[object]) -> list[object]:
    """The constraints in ``Annotated`` metadata, a ``Field(...)``'s included."""
    found: list[object] = []
    for item in metadata:
        found += _constraints(item.metadata) if isinstance(item, FieldInfo) else [item]
    return found


def _bound(constraints: Sequence[object], kind: type, attribute: str) -> float | None:
    values = [getattr(c, attribute) for c in constraints if isinstance(c, kind)]
    return values[-1] if values else None


def _bounds(constraints: Sequence[object]) -> str:
    """`` >= 1``, `` in (0, 100]``: the range of a number."""
    ge, gt = _bound(constraints, at.Ge, "ge"), _bound(constraints, at.Gt, "gt")
    le, lt = _bound(constraints, at.Le, "le"), _bound(constraints, at.Lt, "lt")
    low = ("[", ge) if ge is not None else ("(", gt) if gt is not None else None
    high = ("]", le) if le is not None else (")", lt) if lt is not None else None
    if low and high:
        return f" in {low[0]}{number(low[1])}, {number(high[1])}{high[0]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {number(low[1])}"
    if high:
        return f" {'<=' if high[0] == ']' else '<'} {number(high[1])}"
    return ""


def _size(constraints: Sequence[object], noun: str, plural: str = "") -> str:
    """``, 1 to 100 items``: how many items a list or map holds."""
    least = _bound(constraints, at.MinLen, "min_length")
    most = _bound(constraints, at.MaxLen, "max_length")
    plural = plural or noun + "s"
    if least is not None and most is not None:
        return f", {least} to {most} {plural}"
    if least is not None:
        return f", at least {least} {noun if least == 1 else plural}"
    if most is not None:
        return f", at most {most} {plural}"
    return ""


def _text(constraints: Sequence[object]) -> str:
    """`` (1 to 64 characters, matching `...`)``: a string's length and pattern."""
    parts = [_size(constraints, "character").removeprefix(", ")]
    patterns = [p for c in constraints if (p := getattr(c, "pattern", None))]
    parts += [f"matching `{patterns[-1]}`"] if patterns else []
    kept = [p for p in parts if p]
    return f" ({', '.join(kept)})" if kept else ""


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
