"""A plugin's model type runs at a site only when its policy allowlists the installed
distribution by name, version and the SHA-256 of its files; nothing of an unlisted or changed
plugin is imported. ``oncofed edge plugins`` prints what to copy into the policy."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

import oncofed.edge.policy as edge_policy
from oncofed.cli.main import app
from oncofed.edge import EdgePolicy, LocalStore
from oncofed.edge.config import parse_policy
from oncofed.edge.errors import PolicyFileError, PolicyViolation
from oncofed.edge.ledger import Ledger
from oncofed.edge.policy import check_task
from oncofed.edge.runner import TaskRunner
from oncofed.learning.data import standardization
from oncofed.learning.registry import initial_weights, parameter_shapes
from oncofed.wire import tensors
from oncofed.wire.messages import Decline, StatsResult, TaskAssignment
from oncofed.wire.spec import JobSpec
from tests.plugin_dist import Site
from tests.support import SITE_KEY, make_spec, save_columns

ALLOWED = ["logistic", "acme_wide"]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    site = Site(tmp_path, monkeypatch)
    yield site
    site.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=120), rng.normal(size=120)
    y = (x1 + rng.normal(size=120) > 0).astype(int)
    return save_columns(tmp_path / "datasets", "data", {"x1": x1, "x2": x2, "y": y})


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "edge")
    yield ledger
    ledger.close()


def wide_spec() -> JobSpec:
    return make_spec(model={"type": "acme_wide"})


def task(spec: JobSpec, kind: str = "stats", number: int = 0, **extra: object) -> TaskAssignment:
    return TaskAssignment.model_validate(
        {"task_id": f"t{number}", "job_id": "j1", "round": number, "kind": kind, "spec": spec,
         **extra}
    )  # fmt: skip


def train(runner: TaskRunner, spec: JobSpec) -> object:
    """The job's statistics round, then its first training round, at this site alone."""
    stats = runner.run(task(spec), never_fetch)
    if not isinstance(stats, StatsResult):
        return stats
    model = tensors.encode(initial_weights(spec.model, spec.n_inputs, spec.seed))
    extra = {"model_sha256": tensors.sha256(model), "standardization": standardization(stats),
             "pooled": stats}  # fmt: skip
    return runner.run(task(spec, "train", 1, **extra), lambda sha: model)


def never_fetch(sha: str) -> bytes:
    raise AssertionError("a declined task must not download anything")


def test_an_allowlisted_plugin_model_trains_at_the_edge(
    site: Site, store: LocalStore, ledger: Ledger
) -> None:
    plugin = site.install()
    allowlisted = EdgePolicy(allowed_models=ALLOWED, plugins=[plugin.pin()])
    update = train(TaskRunner(store, allowlisted, "alpha", ledger, SITE_KEY), wide_spec())
    assert isinstance(update, bytes)
    shapes = parameter_shapes(wide_spec().model, 2)
    tensors.check_weights(tensors.decode(update), shapes)
    assert shapes["layers.1.weight"] == (3, 5)  # the plugin's layers, not a built-in's


def test_a_task_naming_an_installed_but_unlisted_plugin_is_refused_unloaded(
    site: Site, store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: an orchestrator sends a task naming a plugin model type the site installed
    (for another consortium, say) but never allowlisted. Under the defaults the task is
    declined and nothing of the plugin is imported, even with its model type in
    allowed_models; without the check (the naive set-up) the site imports the plugin and runs
    its code on its rows."""
    plugin = site.install()
    unlisted = EdgePolicy(allowed_models=ALLOWED)  # no plugins pinned
    with Ledger(tmp_path / "edge") as ledger:
        refused = train(TaskRunner(store, unlisted, "alpha", ledger, SITE_KEY), wide_spec())
    assert isinstance(refused, Decline)
    assert refused.reason == (
        "model type 'acme_wide' comes from the plugin acme-models 1.0, which this site has not "
        "allowlisted: policy plugins is []"
    )
    assert plugin.package not in sys.modules
    monkeypatch.setattr(edge_policy, "_check_plugin", lambda *args: None)
    with Ledger(tmp_path / "naive") as ledger:
        update = train(TaskRunner(store, unlisted, "alpha", ledger, SITE_KEY), wide_spec())
    assert isinstance(update, bytes)  # it ran
    assert plugin.package in sys.modules


@pytest.mark.parametrize(
    ("pinned", "said"),
    [
        ({"version": "0.9"}, "acme-models 1.0 is installed, but version 0.9 is allowlisted"),
        ({"sha256": "0" * 64}, "are not those allowlisted: their SHA-256 is"),
        ({"name": "other-models"}, "which this site has not allowlisted"),
    ],
)
def test_a_pin_that_does_not_match_the_installed_plugin_is_refused(
    site: Site, pinned: dict[str, str], said: str
) -> None:
    plugin = site.install()
    pin = plugin.pin().model_copy(update=pinned)
    with pytest.raises(PolicyViolation, match=said) as caught:
        check_task(EdgePolicy(allowed_models=ALLOWED, plugins=[pin]), task(wide_spec()))
    assert "policy plugins is [" in str(caught.value)
    assert plugin.package not in sys.modules


def test_a_plugin_changed_since_it_was_allowlisted_is_refused(site: Site) -> None:
    """Name and version still match; the files do not."""
    plugin = site.install()
    allowlisted = EdgePolicy(allowed_models=ALLOWED, plugins=[plugin.pin()])
    plugin.tamper()
    with pytest.raises(PolicyViolation, match="changed since it was allowlisted"):
        check_task(allowlisted, task(wide_spec()))
    assert plugin.package not in sys.modules


def test_a_pinned_plugin_still_needs_its_model_type_in_allowed_models(site: Site) -> None:
    plugin = site.install()
    pinned = EdgePolicy(plugins=[plugin.pin()])  # allowed_models: the built-ins
    with pytest.raises(PolicyViolation, match="model type 'acme_wide' is not allowed here"):
        check_task(pinned, task(wide_spec()))


def test_a_type_this_site_did_not_install_cannot_even_be_read(site: Site) -> None:
    """The orchestrator has the plugin, this site does not: the task does not parse (the agent
    declines what it cannot read), and a policy cannot allow a type not installed here."""
    site.install()
    sent = task(wide_spec()).model_dump(mode="json")
    site.close()
    with pytest.raises(ValidationError, match="'acme_wide' is not an installed model type"):
        TaskAssignment.model_validate(sent)
    with pytest.raises(ValidationError, match=r"'acme_wide' is not a model type \(logistic"):
        EdgePolicy(allowed_models=ALLOWED)


def test_the_policy_file_takes_plugin_pins(site: Site, tmp_path: Path) -> None:
    plugin = site.install()
    pin = plugin.pin()
    text = yaml.safe_dump(
        {"allowed_models": ALLOWED, "plugins": [pin.model_dump()]}, sort_keys=False
    )
    assert parse_policy(text, tmp_path / "policy.yaml").plugins == [pin]
    broken = text.replace(pin.sha256, pin.sha256[:40])
    with pytest.raises(PolicyFileError, match=r"line \d+: plugins.0.sha256: String should"):
        parse_policy(broken, tmp_path / "policy.yaml")


def test_the_plugins_command_prints_what_to_allowlist(site: Site, tmp_path: Path) -> None:
    plugin = site.install()
    home = tmp_path / "edge"
    home.mkdir()
    (home / "policy.yaml").write_text(yaml.safe_dump({"allowed_models": ALLOWED}))
    result = CliRunner().invoke(app, ["edge", "plugins", "--dir", str(home)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\x1b" not in out and max(len(line) for line in out.splitlines()) <= 80
    assert out.startswith("acme-models 1.0: not allowlisted\n")
    assert "acme_wide (binary), acme_cox (survival, not in allowed_models)" in out
    entry = out.split("policy entry (under plugins:):\n")[1]
    pasted = "allowed_models: [logistic, acme_wide]\nplugins:\n" + entry
    (home / "policy.yaml").write_text(pasted)
    assert parse_policy(pasted, home / "policy.yaml").plugins == [plugin.pin()]
    out = CliRunner().invoke(app, ["edge", "plugins", "--dir", str(home)]).output
    assert out.startswith("acme-models 1.0: allowlisted\n")
    plugin.tamper()
    out = CliRunner().invoke(app, ["edge", "plugins", "--dir", str(home)]).output
    assert "files changed since allowlisted" in out
    assert plugin.package not in sys.modules  # listing runs none of its code
