"""The atomic-write helper: a reader sees the old file or the whole new one, never a part."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine.atomic_write import TEMPORARY_SUFFIX, atomic_files, atomic_write, write_atomically


def test_a_finished_write_replaces_the_target_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_bytes(b"old")
    with atomic_write(target) as handle:
        handle.write(b"new, ")
        assert target.read_bytes() == b"old"  # nothing visible before the block ends
        handle.write(b"whole")
    assert target.read_bytes() == b"new, whole"
    assert [path.name for path in tmp_path.iterdir()] == ["result.json"]


def test_an_error_while_writing_keeps_the_old_target_and_removes_the_temporary_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "result.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_write(target) as handle:
        handle.write(b"half")
        assert len(list(tmp_path.glob(f".result.json.*{TEMPORARY_SUFFIX}"))) == 1
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["result.json"]


def test_a_new_file_gets_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_atomically(tmp_path / "a.csv", b"x\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == 0o644


@pytest.mark.parametrize("durable", [True, False])
def test_durable_decides_the_fsync_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    target = tmp_path / "result.ndjson"
    write_atomically(target, b"whole", durable=durable)
    assert target.read_bytes() == b"whole"
    assert len(synced) == (1 if durable else 0)
    assert [path.name for path in tmp_path.iterdir()] == ["result.ndjson"]


def test_a_set_of_files_appears_only_when_its_block_ends_each_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    (tmp_path / "a.csv").write_bytes(b"old")
    with atomic_files() as files:
        files.open(tmp_path / "a.csv").write(b"new a")
        files.open(tmp_path / "b.csv").write(b"new b")
        assert (tmp_path / "a.csv").read_bytes() == b"old"
        assert not (tmp_path / "b.csv").exists()
    assert (tmp_path / "a.csv").read_bytes() == b"new a"
    assert (tmp_path / "b.csv").read_bytes() == b"new b"
    assert len(synced) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.csv", "b.csv"]


def test_an_error_in_a_set_of_files_keeps_every_old_target_and_removes_the_temporary_files(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.csv").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_files() as files:
        files.open(tmp_path / "a.csv").write(b"new a")
        files.open(tmp_path / "b.csv").write(b"half")
        raise RuntimeError("interrupted")
    assert (tmp_path / "a.csv").read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["a.csv"]


def test_a_failed_fsync_renames_none_of_the_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fsync(descriptor: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"), atomic_files() as files:
        files.open(tmp_path / "a.csv").write(b"a")
        files.open(tmp_path / "b.csv").write(b"b")
    assert list(tmp_path.iterdir()) == []
