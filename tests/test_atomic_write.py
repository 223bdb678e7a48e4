"""The atomic-write helper: a reader sees the old file or the whole new one, never a part."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine.atomic_write import (
    TEMPORARY_SUFFIX,
    NotRegularFileError,
    atomic_files,
    atomic_write,
    write_atomically,
)


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


def test_a_symbolic_link_is_followed_and_the_file_it_points_to_is_replaced(
    tmp_path: Path,
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "target.json").write_bytes(b"old")
    link = tmp_path / "link.json"
    link.symlink_to(Path("real") / "target.json")
    write_atomically(link, b"new")
    assert link.is_symlink()
    assert (tmp_path / "real" / "target.json").read_bytes() == b"new"
    assert sorted(path.name for path in (tmp_path / "real").iterdir()) == ["target.json"]


def test_a_dangling_symbolic_link_gets_the_file_it_points_to(tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to("target.json")
    with atomic_files() as files:
        files.open(link).write(b"new")
    assert link.is_symlink()
    assert (tmp_path / "target.json").read_bytes() == b"new"


def test_a_loop_of_symbolic_links_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        write_atomically(tmp_path / "a", b"new")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_named_pipe_is_refused_and_left_in_place(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)
    with pytest.raises(
        NotRegularFileError, match=r"pipe.json: not a regular file \(a named pipe\)"
    ):
        write_atomically(pipe, b"new")
    assert stat.S_ISFIFO(pipe.lstat().st_mode)
    assert [path.name for path in tmp_path.iterdir()] == ["pipe.json"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_symbolic_link_to_a_named_pipe_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link.json").symlink_to("pipe")
    with pytest.raises(NotRegularFileError, match="a named pipe"):
        write_atomically(tmp_path / "link.json", b"new")
    assert (tmp_path / "link.json").is_symlink()
    assert stat.S_ISFIFO((tmp_path / "pipe").lstat().st_mode)


def test_a_device_node_is_refused_and_left_in_place(tmp_path: Path) -> None:
    """A node like /dev/null (character device 1, 3), made where the test may: mknod needs
    privileges (root, or CAP_MKNOD)."""
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (AttributeError, PermissionError, OSError) as error:
        pytest.skip(f"cannot make a device node here: {error}")
    with pytest.raises(NotRegularFileError, match=r"not a regular file \(a character device\)"):
        write_atomically(device, b"new")
    assert stat.S_ISCHR(device.lstat().st_mode)
    assert [path.name for path in tmp_path.iterdir()] == ["null"]


def test_a_folder_is_refused_by_its_own_name(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError) as refused:
        write_atomically(tmp_path / "out", b"new")
    assert (refused.value.filename, refused.value.filename2) == (str(tmp_path / "out"), None)
    assert [path.name for path in tmp_path.iterdir()] == ["out"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_set_with_one_refused_target_renames_none(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"old")
    os.mkfifo(tmp_path / "b.csv")
    with pytest.raises(NotRegularFileError), atomic_files() as files:
        files.open(tmp_path / "a.csv").write(b"new a")
        files.open(tmp_path / "b.csv").write(b"new b")
    assert (tmp_path / "a.csv").read_bytes() == b"old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.csv", "b.csv"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_target_that_became_a_named_pipe_during_the_write_is_not_replaced(
    tmp_path: Path,
) -> None:
    target = tmp_path / "result.json"
    with pytest.raises(NotRegularFileError), atomic_write(target) as handle:
        handle.write(b"new")
        os.mkfifo(target)
    assert stat.S_ISFIFO(target.lstat().st_mode)
    assert [path.name for path in tmp_path.iterdir()] == ["result.json"]


def test_another_users_link_in_a_folder_writable_by_all_is_not_followed(tmp_path: Path) -> None:
    """/tmp's case (sticky, writable by all): another user's link there must not choose which
    of this user's files is replaced, as Linux's fs.protected_symlinks rules for `>`."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("giving a link to another user needs root")
    victim = tmp_path / "victim.json"
    victim.write_bytes(b"keep")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    link = shared / "out.json"
    link.symlink_to(victim)
    os.lchown(link, 12345, 12345)
    with pytest.raises(PermissionError, match=r"another user \(uid 12345\).*not followed"):
        write_atomically(link, b"new")
    assert victim.read_bytes() == b"keep"
    assert link.is_symlink()
    os.lchown(link, 0, 0)  # the user's own link there is followed
    write_atomically(link, b"new")
    assert victim.read_bytes() == b"new"
