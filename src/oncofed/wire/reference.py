"""The key reference of ``docs/spec-reference.md``, generated from the spec models so the two
never drift: ``python -m oncofed.wire.reference docs/spec-reference.md`` rewrites the marked
section.

Every model a spec can hold gets a section headed by the key it sits at (``cohort``,
``cohort.where[]``); each choice of a discriminated union (``outcome``, ``strategy``,
``analysis``) gets its own, headed by its tag (``type: cox``).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Union, get_args, get_origin

from pydantic import BaseModel

from oncofed import _reference
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.spec import BUILTIN_MODELS, JobSpec, ModelSpec

SECTION = "spec"
ROOTS: dict[str, type[BaseModel]] = {"train": JobSpec, "analysis": AnalysisSpec}
"""The kinds of spec by their ``kind``; ``SPECS`` reads a spec without one as ``train``."""
DEFAULT_KIND = "train"


@dataclass
class Section:
    """One model's section: where it sits, and its tag when it is a choice of a union."""

    model: type[BaseModel]
    heading: str
    level: int
    tag: tuple[str, str] | None = None
    """(key, value) that selects it, for a choice of a union or a kind of spec."""
    union: str | None = None
    """Where the union it is a choice of sits (``""`` for the kind of spec)."""
    paths: list[str] = field(default_factory=list)
    """Every key it sits at, the first one its heading's."""
    untagged: bool = False
    """Whether it also sits at a key that takes only it, where its tag may be left out."""

    @property
    def link(self) -> str:
        return f"[{self.heading}](#{_reference.anchor(self.heading)})"


@dataclass
class Union_:
    """A discriminated union's heading, before the sections of its choices."""

    path: str
    key: str
    choices: list[Section]


Block = Section | Union_


def _tag(model: type[BaseModel], key: str) -> tuple[str, str]:
    (value,) = get_args(model.model_fields[key].annotation)
    return key, str(value)


def _nested(annotation: object) -> Iterator[tuple[type[BaseModel], str]]:
    """The models in an annotation, each with what its key adds to the path (``[]``)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        yield from _nested(args[0])
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _nested(arg)
    elif origin is list:
        yield from ((model, "[]" + suffix) for model, suffix in _nested(args[0]))
    elif origin is dict:
        yield from ((model, ".*" + suffix) for model, suffix in _nested(args[1]))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, ""


class Layout:
    """The sections in reading order: the kinds of spec, then depth first every model they
    hold (a union's choices together under its heading)."""

    def __init__(self, roots: dict[str, type[BaseModel]]) -> None:
        self.blocks: list[Block] = []
        self.sections: dict[type[BaseModel], Section] = {}
        kinds = [self._section(model, "", ("kind", kind), 3, "") for kind, model in roots.items()]
        for section in kinds:
            self._children(section.model, "")

    def _section(
        self,
        model: type[BaseModel],
        path: str,
        tag: tuple[str, str] | None,
        level: int,
        union: str | None,
    ) -> Section:
        """The section of ``model``, added when it is new; ``path`` recorded either way."""
        known = self.sections.get(model)
        if known is None:
            heading = f"`{tag[0]}: {tag[1]}`" if tag else f"`{path}`"
            known = Section(model, heading, level, tag, union)
            self.sections[model] = known
            self.blocks.append(known)
        if path and path not in known.paths:
            known.paths.append(path)
        known.untagged |= tag is None
        return known

    def _children(self, model: type[BaseModel], path: str) -> None:
        for name, info in model.model_fields.items():
            key = f"{path}.{info.alias or name}".lstrip(".")
            found = list(_nested(info.annotation))
            if isinstance(info.discriminator, str) and len(found) > 1:
                union = Union_(key, info.discriminator, [])
                self.blocks.append(union)
                for choice, _ in found:
                    tag = _tag(choice, info.discriminator)
                    union.choices.append(self._section(choice, key, tag, 4, key))
                for choice, _ in found:
                    self._children(choice, key)
                continue
            for nested, suffix in found:
                new = nested not in self.sections
                self._section(nested, key + suffix, None, 3, None)
                if new:
                    self._children(nested, key + suffix)

    def link(self, model: type[BaseModel]) -> str:
        return self.sections[model].link


def _model_types() -> list[str]:
    """The built-in model types, after the ``model`` section."""
    return [
        "\n#### Model types\n",
        "`model.type` names a built-in model, or one a plugin installs where the job runs\n"
        "([plugins](plugins.md)).\n",
        "| `model.type` | outcome it fits |",
        "|---|---|",
        *(f"| `{name}` | `{outcome}` |" for name, outcome in BUILTIN_MODELS.items()),
    ]


EXTRAS: dict[type[BaseModel], Callable[[], list[str]]] = {ModelSpec: _model_types}
"""Text after a model's table that its fields cannot give."""


def _shorthands(model: type[BaseModel]) -> list[str]:
    """What a model's ``before`` validators accept besides the full form, from their
    docstrings."""
    decorators = model.__pydantic_decorators__.model_validators.values()
    return [
        f"**Shorthand.** {_reference.prose(d.func.__doc__)}\n"
        for d in decorators
        if d.info.mode == "before" and d.func.__doc__
    ]


def _table(section: Section, layout: Layout) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for doc in _reference.fields(section.model, layout.link):
        default, meaning = doc.default, doc.meaning
        if section.tag is not None and doc.name == section.tag[0]:
            default = _tag_default(section)
            meaning = meaning or f"Selects this `{section.union or 'kind'}`."
        cells = [f"`{doc.name}`", doc.type, default, meaning]
        rows.append("| " + " | ".join(_reference.cell(c) for c in cells) + " |")
    return rows


def _tag_default(section: Section) -> str:
    """A choice's tag is required, except for the default kind of spec and at a key that
    takes only that choice."""
    assert section.tag is not None  # only choices have one
    value = f"`{section.tag[1]}`"
    if section.union == "":
        return value if section.tag[1] == DEFAULT_KIND else "required"
    if section.untagged:
        return f"{value} (required at `{section.union}`)"
    return "required"


def _render(section: Section, layout: Layout) -> list[str]:
    doc = section.model.__doc__
    parts = [f"\n{'#' * section.level} {section.heading}\n"]
    parts += [_reference.prose(doc) + "\n"] if doc else []
    at = [p for p in section.paths if f"`{p}`" != section.heading and p != section.union]
    parts += [f"Also at: {', '.join(f'`{p}`' for p in at)}.\n"] if at else []
    parts += _shorthands(section.model)
    parts += _table(section, layout)
    parts += EXTRAS.get(section.model, lambda: [])()
    return parts


def markdown(roots: dict[str, type[BaseModel]] = ROOTS) -> str:
    """Every key of every kind of spec, one section per model."""
    layout = Layout(roots)
    headings = [s.heading for s in layout.sections.values()]
    if len({_reference.anchor(h) for h in headings}) != len(headings):
        raise ValueError(f"two sections would share an anchor: {sorted(headings)}")
    parts: list[str] = [""]
    for block in layout.blocks:
        if isinstance(block, Union_):
            choices = ", ".join(f"`{c.tag[1]}`" for c in block.choices if c.tag)
            parts += [f"\n### `{block.path}`\n", f"Chosen by its `{block.key}`: {choices}."]
        else:
            parts += _render(block, layout)
    return "\n".join([*parts, ""])


def refresh(document: str) -> str:
    """``document`` with its generated section replaced by the current one."""
    return _reference.replace(document, SECTION, markdown())


if __name__ == "__main__":
    _reference.main(refresh)
