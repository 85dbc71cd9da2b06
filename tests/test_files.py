"""Atomic writes leave no temporary file and give the permissions a plain open() would."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ranker.files import write_atomic


def test_write_atomic_replaces_the_file_with_umask_permissions(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.bin"
    old = os.umask(0o022)
    try:
        write_atomic(path, b"first")
        write_atomic(path, b"second")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["out.bin"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    write_atomic(path, b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
