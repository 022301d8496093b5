"""``oncofed._files``: what a file written over in place holds, and who may read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from oncofed._files import append_private, write_over


def test_a_file_written_over_holds_exactly_the_new_bytes_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "model"
    write_over(path, b"a longer first model")
    assert path.read_bytes() == b"a longer first model"
    write_over(path, b"shorter")  # cut to the new length
    assert path.read_bytes() == b"shorter"
    write_over(path, b"the longest model of the three")
    assert path.read_bytes() == b"the longest model of the three"
    os.chmod(path, 0o644)  # opened to others by hand: closed again before it is written
    write_over(path, b"x")
    assert path.read_bytes() == b"x" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_written_over_keeps_its_inode(tmp_path: Path) -> None:
    """Written in place, not replaced: no new inode (the cost it saves)."""
    path = tmp_path / "model"
    write_over(path, b"first")
    inode = path.stat().st_ino
    write_over(path, b"second")
    assert path.stat().st_ino == inode and path.read_bytes() == b"second"


def test_a_line_appended_is_added_whole_to_a_file_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "egress.jsonl"
    append_private(path, b'{"n": 1}\n')
    path.chmod(0o644)  # opened to others meanwhile: closed to them before the next line
    append_private(path, b'{"n": 2}\n')
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
