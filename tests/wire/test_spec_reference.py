"""docs/spec-reference.md carries the key reference generated from the spec models, and its
examples are valid specs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from oncofed.wire.analysis import SPECS, AnalysisSpec
from oncofed.wire.reference import DEFAULT_KIND, ROOTS, Layout, markdown, refresh
from oncofed.wire.spec import JobSpec

DOC = Path(__file__).parents[2] / "docs" / "spec-reference.md"


def test_the_documented_spec_reference_is_current() -> None:
    text = DOC.read_text()
    assert refresh(text) == text, "docs/spec-reference.md is stale: run 'make docs'"


def test_every_model_and_key_has_a_section_and_a_meaning() -> None:
    text = markdown()
    sections = Layout(ROOTS).sections
    for model, section in sections.items():
        assert f" {section.heading}\n" in text
        for name, info in model.model_fields.items():
            assert f"| `{info.alias or name}` |" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows
    assert not [row for row in rows if row.endswith("|  |")], "a key without a meaning"


def test_each_choice_of_a_union_has_its_own_section() -> None:
    text = markdown()
    for tag in ("type: survival", "name: krum", "type: kaplan_meier", "type: cox", "kind: train"):
        assert f"`{tag}`\n" in text
    assert "[`type: survival`](#type-survival)" in text


def test_types_and_defaults_read_as_prose() -> None:
    text = markdown()
    assert "| `rounds` | int in [1, 10000] | `10` |" in text
    assert "| `epsilon` | float in (0, 100] | required |" in text
    assert "| `transform` | one of `none`, `log1p` | `none` |" in text
    assert "| `strategy` | one of [`name: fedavg`](#name-fedavg)" in text
    assert "`{name: fedavg}`" in text
    assert "| `in` | list of str, at least 1 item | unset |" in text
    assert "typing." not in text and "<class" not in text and "Annotated" not in text


def test_a_spec_without_kind_is_the_default_kind() -> None:
    spec = {
        "name": "x",
        "dataset": "d",
        "features": ["age_at_diagnosis"],
        "outcome": {"type": "binary", "label": "treatment.endocrine"},
        "model": {"type": "logistic"},
    }
    assert isinstance(SPECS.validate_python(spec), ROOTS[DEFAULT_KIND])
    assert isinstance(SPECS.validate_python({**spec, "kind": "train"}), ROOTS["train"])
    assert set(ROOTS.values()) == {JobSpec, AnalysisSpec}


@pytest.mark.parametrize("block", re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S))
def test_the_examples_are_valid_specs(block: str) -> None:
    assert isinstance(SPECS.validate_python(yaml.safe_load(block)), BaseModel)


def test_refresh_needs_the_markers() -> None:
    with pytest.raises(ValueError, match="no <!-- generated: spec -->"):
        refresh("# no markers\n")
