"""``policy.yaml`` as the edge reads it: every mistake named by line and setting, never the
defaults in its place, and a change seen at the next read however it was made."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from oncofed.edge import EdgeConfig, EdgeHome, EdgePolicy
from oncofed.edge.config import SETTLE_NS, PolicyFile, parse_policy, read_policy
from oncofed.edge.errors import PolicyFileError, PolicyViolation
from oncofed.edge.ledger import Ledger
from oncofed.privacy.secagg import fingerprint, new_identity, public_bytes

POLICY = Path("/opt/edge/policy.yaml")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "# what this site runs\nallowed_tasks: [stats]\nmax_rounds: 10\n\n\n\n"
            "min_cohort_size: fifty\n",
            "line 7: min_cohort_size: Input should be a valid integer",
        ),
        (
            "max_rounds: 10\nmin_cohrt_size: 50\n",
            "line 2: min_cohrt_size: not a policy setting (did you mean min_cohort_size?)",
        ),
        ("min_eval_size: 0\n", "line 1: min_eval_size: Input should be greater than or equal to 1"),
        (
            "allowed_tasks:\n  - stats\n  - trian\n",
            "line 3: allowed_tasks.1: Input should be 'stats', 'train', 'evaluate' or 'analysis'",
        ),
        (
            "allowed_models: [logistic, mpl]\n",
            "line 1: allowed_models.1: 'mpl' is not a model type (logistic, mlp, cox, cox_mlp)",
        ),
        (
            "trusted_peers:\n  beta: 66687aadf862bd77\n  gamma: 66687AADF862BD77\n",
            "line 3: trusted_peers.gamma: String should match pattern",
        ),
        (
            "max_rounds: 5\nmin_cohort_size: 20\nmax_rounds: 5000\n",
            "line 3: max_rounds: given twice (first on line 1; only one can count)",
        ),
        ("max_rounds: 5\n  min_cohort_size: 20\n", "line 2: not YAML: mapping values are not"),
        ("- max_rounds: 5\n", "line 1: expected settings, one 'key: value' per line"),
        ("", "is empty (a site never assumes the default policy): write its settings"),
        ("# every line a comment\n", "is empty (a site never assumes the default policy)"),
        (b"max_rounds: \xff\n", "is not UTF-8 text"),
    ],
)
def test_a_mistake_is_named_by_its_line_and_setting(text: str | bytes, problem: str) -> None:
    with pytest.raises(PolicyFileError) as raised:
        parse_policy(text, POLICY)
    assert raised.value.problems[0].startswith(problem)
    assert str(raised.value).startswith(f"{POLICY} {problem}")
    assert "\n" not in str(raised.value)


def test_every_mistake_is_listed_first_line_first_and_the_message_is_one_line() -> None:
    text = "min_cohort_size: 20\nmax_rnds: 3\nmin_eval_size: many\nmin_cohort_size: 30\n"
    with pytest.raises(PolicyFileError) as raised:
        parse_policy(text, POLICY)
    assert [problem.split(":")[0:2] for problem in raised.value.problems] == [
        ["line 2", " max_rnds"],
        ["line 3", " min_eval_size"],
        ["line 4", " min_cohort_size"],
    ]
    assert str(raised.value) == (
        f"{POLICY} line 2: max_rnds: not a policy setting (did you mean max_rounds?) "
        "(and 2 more; 'oncofed edge check' lists them)"
    )


def test_a_partial_policy_takes_the_defaults_for_what_it_does_not_set() -> None:
    policy = parse_policy("min_cohort_size: 50\n", POLICY)
    assert policy.min_cohort_size == 50 and policy.max_rounds == EdgePolicy().max_rounds


def test_a_setting_is_quoted_with_its_value_in_force_and_its_file() -> None:
    policy = parse_policy("min_cohort_size: 50\nallowed_tasks: [stats, train]\n", POLICY)
    assert policy.quote("min_cohort_size") == f"min_cohort_size is 50 in {POLICY}"
    assert policy.quote("allowed_tasks") == f"allowed_tasks is [stats, train] in {POLICY}"
    assert policy.quote("max_parameters") == (
        f"max_parameters is 50,000,000 (the default: {POLICY} does not set it)"
    )
    assert EdgePolicy(max_clip_norm=0.5).quote("max_clip_norm") == "max_clip_norm is 0.5"


def test_the_policy_edge_init_writes_is_read_back_whole(tmp_path: Path) -> None:
    home = EdgeHome(tmp_path)
    home.create(EdgeConfig.model_validate({"orchestrator": "http://o.test", "site": "a"}), "c")
    assert home.policy().model_dump() == EdgePolicy().model_dump()
    decided_later = {"projects"}  # written below the marker by `edge approve` and `decline`
    assert home.policy().model_fields_set == set(EdgePolicy.model_fields) - decided_later


# -- the file as it changes ----------------------------------------------------------------


def write(path: Path, text: str, mtime_ns: int | None = None) -> None:
    path.write_text(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_an_unchanged_file_is_not_parsed_again(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "max_rounds: 10\n")
    live = PolicyFile(path)
    first = live.current()
    assert live.current() is first
    os.utime(path)  # touched, same content: the same policy
    assert live.current() is first


def test_a_rewrite_of_the_same_size_and_modification_time_is_seen(tmp_path: Path) -> None:
    """A file system keeps modification times coarsely: two writes within one tick, of the
    same size, look the same to a stat. Until the file has settled, its hash decides."""
    path = tmp_path / "policy.yaml"
    write(path, "max_rounds: 10\n")
    stamp = path.stat().st_mtime_ns
    live = PolicyFile(path)
    assert live.current().max_rounds == 10
    write(path, "max_rounds: 20\n", mtime_ns=stamp)
    assert path.stat().st_size == len("max_rounds: 10\n")
    assert live.current().max_rounds == 20


def test_a_settled_file_is_only_stat_while_it_stays_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its modification time is well past, a stat per task is all the file costs."""
    path = tmp_path / "policy.yaml"
    settled = path.parent.stat().st_mtime_ns - 2 * SETTLE_NS
    write(path, "max_rounds: 10\n", mtime_ns=settled)
    live = PolicyFile(path)
    first = live.current()
    with monkeypatch.context() as patched:
        patched.setattr(Path, "read_bytes", lambda _: pytest.fail("read again"))
        assert live.current() is first
    write(path, "max_rounds: 200\n", mtime_ns=settled)  # another size
    assert live.current().max_rounds == 200


def test_a_copy_that_keeps_the_old_modification_time_is_seen(tmp_path: Path) -> None:
    """``cp -p`` or ``rsync -t`` of a same-size file over a settled one: the modification
    time and size are the old ones, the change time (or inode) is not."""
    path = tmp_path / "policy.yaml"
    settled = path.parent.stat().st_mtime_ns - 2 * SETTLE_NS
    write(path, "max_rounds: 10\n", mtime_ns=settled)
    live = PolicyFile(path)
    assert live.current().max_rounds == 10
    time.sleep(0.01)  # a later change time than the first write's, on any file system
    write(path, "max_rounds: 30\n", mtime_ns=settled)
    assert live.current().max_rounds == 30


def test_a_deleted_or_broken_file_is_an_error_until_it_is_restored(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    write(path, "max_rounds: 10\n")
    live = PolicyFile(path)
    assert live.current().max_rounds == 10
    path.unlink()
    with pytest.raises(PolicyFileError, match=r"policy\.yaml is missing: restore it"):
        live.current()
    write(path, "max_rounds: ten\n")
    with pytest.raises(PolicyFileError, match=r"policy\.yaml line 1: max_rounds: Input should"):
        live.current()
    with pytest.raises(PolicyFileError, match="line 1: max_rounds"):
        live.current()  # unchanged: the same mistake
    write(path, "max_rounds: 12\n")
    assert live.current().max_rounds == 12


def test_an_enrolled_edge_never_takes_the_defaults_for_a_missing_policy(tmp_path: Path) -> None:
    """Before ``oncofed edge init`` (an import into a new directory) the defaults apply; once
    the edge is enrolled, a deleted policy is an error."""
    home = EdgeHome(tmp_path)
    assert home.policy_or_default() == EdgePolicy()
    home.create(EdgeConfig.model_validate({"orchestrator": "http://o.test", "site": "a"}), "c")
    write(home.policy_file, "small_cell_threshold: 20\n")
    assert home.policy_or_default().small_cell_threshold == 20
    home.policy_file.unlink()
    with pytest.raises(PolicyFileError, match="is missing"):
        home.policy_or_default()
    with pytest.raises(PolicyFileError, match="is missing"):
        read_policy(home.policy_file)


def test_trusted_peers_read_again_apply_to_the_next_key_pinned(tmp_path: Path) -> None:
    """The ledger takes a re-read policy's ``trusted_peers`` (``Ledger.trust``)."""
    listed, other = public_bytes(new_identity()), public_bytes(new_identity())
    with Ledger(tmp_path) as ledger:
        ledger.trust({"beta": fingerprint(listed)})
        with pytest.raises(PolicyViolation, match="not in this site's trusted_peers"):
            ledger.pin({"beta": other})
        ledger.trust(None)  # the admin removed the list: trust on first use again
        ledger.pin({"beta": other})
        assert [site for site, _, _ in ledger.peers()] == ["beta"]


def test_a_policy_written_by_the_tests_conventions_reads_back(tmp_path: Path) -> None:
    """The attack and federation tests write ``yaml.safe_dump(policy.model_dump())``."""
    policy = EdgePolicy(allowed_models=["logistic"], max_rounds=20, trusted_peers={"b": "0" * 16})
    path = tmp_path / "policy.yaml"
    write(path, yaml.safe_dump(policy.model_dump(), sort_keys=False))
    assert read_policy(path).model_dump() == policy.model_dump()
