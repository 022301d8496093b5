"""Model types from plugin distributions: discovered from metadata alone, their digest over the
files on disk, their layers shared exactly by the orchestrator's shapes and the torch module."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from oncofed.learning import plugins
from oncofed.learning.plugins import PluginError
from oncofed.learning.registry import (
    TASKS,
    initial_weights,
    parameter_count,
    parameter_shapes,
)
from oncofed.wire.spec import JobSpec, ModelSpec
from tests.plugin_dist import Site
from tests.support import make_spec

SURVIVAL = {"type": "survival", "time": "os_days", "event": "os_event"}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    site = Site(tmp_path, monkeypatch)
    yield site
    site.close()


def test_model_types_are_read_from_metadata_without_importing_code(site: Site) -> None:
    plugin = site.install()
    declared = plugins.declared()
    assert {name: m.task for name, m in declared.items()} == {
        "acme_wide": "binary",
        "acme_cox": "survival",
    }
    assert declared["acme_cox"].distribution == "acme-models"
    assert declared["acme_cox"].version == "1.0"
    assert TASKS["acme_cox"] == "survival" and "acme_wide" in TASKS
    ModelSpec(type="acme_cox")  # a valid name now
    assert plugin.package not in sys.modules  # nothing of it ran


def test_the_orchestrator_side_gets_exact_shapes_and_torch_agrees(site: Site) -> None:
    site.install()
    cox = make_spec(outcome=SURVIVAL, model={"type": "acme_cox", "hidden": [4]})
    assert parameter_shapes(cox.model, cox.n_inputs) == {
        "layers.0.weight": (4, 2),
        "layers.0.bias": (4,),
        "layers.1.weight": (1, 4),
    }
    wide = make_spec(model={"type": "acme_wide"})
    shapes = parameter_shapes(wide.model, 2)
    assert parameter_count(wide.model, 2) == (2 * 5 + 5) + (5 * 3 + 3) + (3 + 1)
    weights = initial_weights(wide.model, 2, seed=1)
    assert {k: v.shape for k, v in weights.items()} == shapes
    from oncofed.learning.torch_model import DenseStack  # the edge's side

    module = DenseStack(wide.model, 2)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == shapes


def test_a_plugin_model_must_fit_the_outcome_its_group_declares(site: Site) -> None:
    site.install()
    with pytest.raises(ValidationError, match=r"'acme_cox' does not fit outcome\.type 'binary'"):
        make_spec(model={"type": "acme_cox"})
    make_spec(outcome=SURVIVAL, model={"type": "acme_cox"})


def test_a_type_nobody_installed_is_refused_naming_the_installed_ones(site: Site) -> None:
    with pytest.raises(ValidationError, match="from plugins: none installed"):
        ModelSpec(type="acme_cox")
    site.install()
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({**make_spec().model_dump(), "model": {"type": "deep_forest"}})
    said = str(caught.value)
    assert "'deep_forest' is not an installed model type" in said
    assert "built-in 'logistic', 'mlp', 'cox', 'cox_mlp'" in said
    assert "'acme_wide' (acme-models 1.0)" in said
    with pytest.raises(ValidationError, match="String should match pattern"):
        ModelSpec(type="Acme Cox")
    schema = ModelSpec.model_json_schema()["properties"]["type"]
    assert schema["type"] == "string" and "enum" not in schema and "pattern" in schema


def test_the_digest_is_over_the_files_on_disk_as_defined(site: Site) -> None:
    plugin = site.install()
    dist = plugins.installed_distribution("Acme_Models")  # names compare as PEP 503 says
    by_hand = hashlib.sha256()
    listed = [f"{plugin.package}/__init__.py", f"{plugin.package}/layers.py"]
    notes = ("METADATA", "WHEEL", "entry_points.txt", "top_level.txt")
    listed += [f"{plugin.dist_info.name}/{name}" for name in notes]
    for path in sorted(listed):
        sha = hashlib.sha256((plugin.root / path).read_bytes()).hexdigest()
        by_hand.update(f"{path}\0{sha}\n".encode())
    first = plugins.digest(dist)
    assert first == by_hand.hexdigest()
    # bytecode and the installer's notes are not the distribution's content
    (plugin.root / plugin.package / "__pycache__" / "layers.cpython-39.pyc").write_text("x")
    (plugin.dist_info / "INSTALLER").write_text("uv\n")
    assert plugins.digest(dist) == first
    plugin.tamper()  # RECORD still holds the old hash: the digest is recomputed from disk
    assert plugins.digest(dist) != first
    plugin.layers.unlink()
    with pytest.raises(PluginError, match=r"layers\.py cannot be read"):
        plugins.digest(dist)


def test_names_taken_twice_or_by_a_built_in_are_usable_from_none(site: Site) -> None:
    site.install("a", name="acme-models", models={"acme_wide": "binary", "mlp": "binary"})
    site.install("b", name="other-models", models={"acme_wide": "binary", "BAD": "survival"})
    assert plugins.declared() == {}
    problems = {d.name: d.problems for d in plugins.distributions()}
    assert problems["acme-models"] == (
        "'acme_wide': declared more than once by the installed plugins",
        "'mlp': a built-in model type has this name",
    )
    assert "not a model type name" in problems["other-models"][1]
    assert TASKS["mlp"] == "binary"  # the built-in, untouched


def test_layers_that_break_the_dense_stack_contract_are_refused(site: Site) -> None:
    source = (
        "from oncofed.learning.registry import Dense\n"
        "def two_scores(model, n_inputs):\n    return [Dense(n_inputs, 2, True)]\n"
        "def gap(model, n_inputs):\n    return [Dense(n_inputs, 4, True), Dense(3, 1, True)]\n"
        "def biased_cox(model, n_inputs):\n    return [Dense(n_inputs, 1, True)]\n"
    )
    models = {"two_scores": "binary", "gap": "binary", "biased_cox": "survival"}
    site.install(models=models, source=source)
    cases = {
        "two_scores": "the last layer must give one score, not 2",
        "gap": "layer 1 takes 3 inputs, not 4",
        "biased_cox": "a survival model's last layer has no bias",
    }
    for name, said in cases.items():
        with pytest.raises(PluginError, match=said):
            parameter_shapes(ModelSpec(type=name), 2)


def test_a_module_shadowing_the_plugins_package_is_never_imported(site: Site) -> None:
    """Another package of the same name earlier on sys.path would be what ``import`` finds:
    the loader refuses it before running it, since it is not among the distribution's files."""
    plugin = site.install()
    shadow = site.tmp_path / "shadow" / plugin.package
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise SystemExit('the shadow ran')\n")
    site.monkeypatch.syspath_prepend(str(shadow.parent))
    with pytest.raises(PluginError, match="is not among its installed files"):
        plugins.load("acme_wide")
    assert plugin.package not in sys.modules


def test_files_changed_after_import_need_a_restart(site: Site) -> None:
    plugin = site.install()
    pin = plugin.pin()
    plugins.load("acme_wide", pin)
    plugin.tamper()
    with pytest.raises(PluginError, match="changed on disk since this process imported it"):
        plugins.load("acme_wide", plugin.pin())  # even if the policy pinned the new files
