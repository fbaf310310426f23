"""write_atomic: the target is replaced whole, gets its mode exactly, and no temp file stays."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node.core.atomic_file import write_atomic


def test_replaces_with_exact_mode_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "key.json"
    old = os.umask(0o077)
    try:
        write_atomic(target, b"one", mode=0o644)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomic(target, b"two" * 100_000, mode=0o600)
    assert target.read_bytes() == b"two" * 100_000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["key.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"old")
    (tmp_path / "blocker").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "blocker", b"new")  # cannot rename a file over a directory
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "state.json"]


def test_durable_writes_fsync_file_and_directory_and_others_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    write_atomic(tmp_path / "a", b"durable")
    assert len(calls) == 2  # the temporary file, then the directory after the rename
    calls.clear()
    write_atomic(tmp_path / "b", b"refetchable", durable=False)
    assert calls == []
    assert (tmp_path / "b").read_bytes() == b"refetchable"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
