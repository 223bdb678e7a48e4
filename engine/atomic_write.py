"""Write a file atomically: a reader sees the old file or the whole new one, never a part.

Every file trialsieve writes for someone else to read goes through `atomic_write`: the file
sink's results, the cohort's outputs, summary, run manifest and partition results, the
partitioning marker, the Bulk export's downloads and its state file. (Scratch files that a
marker written last vouches for, such as the partition files, need not.) The data goes to a
temporary file in the target's folder (`.<name>.<random>.part`, so the rename never crosses a
file system), is flushed and fsynced, then `os.replace`d over the target. On any exception the
temporary file is removed and the target is left as it was: a crash or an error never leaves
a half-written result.

`durable=False` leaves out the fsync, for files that vouch for themselves when read: a cohort
partition's result ends with its `complete` line holding the SHA-256 of the lines before it,
and a re-run store's outcomes file is one JSON document carrying its run's key. Without the
fsync a crash (of the machine, not of trialsieve) can leave such a file empty, cut short or
with blocks never written, since the rename may reach the disk before the data; the reader then
finds no `complete` line, a digest that does not match, or no JSON, and evaluates the partition
again: the crash costs time, never a wrong result. Each fsync waits for the disk: about 8 ms
each on a shared machine, 0.35 s of a 10x re-run's 0.8 s wall for its 43 files.

`atomic_files` writes several files as one set (the cohort's outputs): each to its temporary
file, and when the block ends every one is fsynced at once, in threads, so that their waits
for the disk overlap (nine cohort outputs at 10x, 27 MB: 0.048-0.057 s of fsyncs one after
the other, 0.024-0.029 s at once), then renamed. Each file is still whole or absent.

The temporary file is created exclusively (it never overwrites another) with the permissions
any file the user writes gets (the umask applies), unlike `tempfile.mkstemp`'s owner-only ones.

What is replaced: a symbolic link is followed, as a shell's `>` follows it: the temporary file
is made beside the file the link points to (which need not exist yet), so the link stays and
that file is replaced. A link in a sticky folder writable by all (`/tmp`) is followed only
when it belongs to the user or to the folder's owner, the rule of Linux's
`fs.protected_symlinks`, else PermissionError: another user's link there must not choose
which of this user's files is replaced. A target that exists and is not a regular file (a
named pipe, a device such as `/dev/null`, a socket) raises `NotRegularFileError`, a folder
`IsADirectoryError`: renaming over such a node would delete it. Both are OSErrors, so every
writer reports them as it reports a disk that is full. The target is checked when the
temporary file is made and again just before the rename. (A hard link to the target keeps
the old contents: the rename puts a new file in its place.)
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMPORARY_SUFFIX = ".part"
"""Ends the name of a file being written; such a file is never a finished result."""
_TEMPORARY_TOKEN_BYTES = 6
_TEMPORARY_NAME = re.compile(
    rf"\..+\.[0-9a-f]{{{2 * _TEMPORARY_TOKEN_BYTES}}}{re.escape(TEMPORARY_SUFFIX)}", re.DOTALL
)

_MOST_LINKS = 40
"""Symbolic links followed from one target at most (Linux's limit, MAXSYMLINKS)."""

_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


class NotRegularFileError(OSError):
    """A write's target exists and is not a regular file (a named pipe, a device, a socket):
    it is never replaced. `filename` is the target, `strerror` says what it is."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


@contextmanager
def atomic_write(path: str | Path, buffering: int = -1, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write, renamed to `path` when the block ends without an exception.

    The target's folder must exist. `buffering` is passed to `open` (-1: the default buffer).
    `durable`: fsync before the rename (see the module docstring for when not to).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     target = Path(folder) / "result.json"
    ...     with atomic_write(target) as handle:
    ...         _ = handle.write(b"{}")
    ...     target.read_bytes(), sorted(p.name for p in Path(folder).iterdir())
    (b'{}', ['result.json'])
    """
    target = _replaceable(path)
    temporary = _temporary_path(target)
    try:
        with open(temporary, "xb", buffering=buffering) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        _check_replaceable(target)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through `atomic_write`."""
    with atomic_write(path, durable=durable) as handle:
        handle.write(data)


def _temporary_path(target: Path) -> Path:
    token = secrets.token_hex(_TEMPORARY_TOKEN_BYTES)
    return target.with_name(f".{target.name}.{token}{TEMPORARY_SUFFIX}")


def is_temporary_name(name: str) -> bool:
    """Whether `name` is that of a temporary file these writes make (`.<name>.<12 hex
    digits>.part`): one a process killed while writing left behind (a SIGKILL, a machine
    crash), never a finished file.

    >>> is_temporary_name(".cohort.csv.69b094ae04c7.part"), is_temporary_name("cohort.csv")
    (True, False)
    """
    return _TEMPORARY_NAME.fullmatch(name) is not None


def _replaceable(path: str | Path) -> Path:
    """The file a write to `path` replaces: `path`, or the file its symbolic links lead to
    (see the module docstring for what is refused)."""
    target = Path(path)
    for _ in range(_MOST_LINKS):
        try:
            status = target.lstat()
        except FileNotFoundError:
            return target
        if not stat.S_ISLNK(status.st_mode):
            _check_replaceable(target, status)
            return target
        _check_may_follow(target, status)
        target = target.parent / os.readlink(target)
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))


def _check_replaceable(target: Path, status: os.stat_result | None = None) -> None:
    """Raise unless `target` is absent or a regular file (a link too, when checked again
    before the rename: it was not one when the write began)."""
    if status is None:
        try:
            status = target.lstat()
        except FileNotFoundError:
            return
    if stat.S_ISREG(status.st_mode):
        return
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    kind = next((name for test, name in _KINDS if test(status.st_mode)), "of another kind")
    raise NotRegularFileError(None, f"not a regular file ({kind})", str(target))


def _check_may_follow(link: Path, status: os.stat_result) -> None:
    """PermissionError for a link another user made in a sticky folder writable by all."""
    folder = link.parent.stat()
    shared = folder.st_mode & stat.S_ISVTX and folder.st_mode & stat.S_IWOTH
    user = os.geteuid() if hasattr(os, "geteuid") else status.st_uid
    if shared and status.st_uid not in (user, folder.st_uid):
        raise PermissionError(
            errno.EACCES,
            f"a symbolic link of another user (uid {status.st_uid}) in a folder writable by "
            "all: not followed",
            str(link),
        )


class AtomicFiles:
    """Files written as one set (`atomic_files`); `open` adds one, `commit` makes them all
    whole at once, `discard` removes them (each at most once: then both do nothing)."""

    def __init__(self, buffering: int = -1) -> None:
        self._buffering = buffering
        self._files: list[tuple[Path, Path, BinaryIO]] = []
        self._ended = False

    def open(self, path: str | Path) -> BinaryIO:
        """A binary file to write, renamed to `path` when the set is committed (the target's
        folder must exist)."""
        if self._ended:
            raise ValueError("this set of files is committed or discarded already")
        target = _replaceable(path)
        temporary = _temporary_path(target)
        # closed when the set is committed or discarded
        handle = open(temporary, "xb", buffering=self._buffering)  # noqa: SIM115
        self._files.append((target, temporary, handle))
        return handle

    def commit(self) -> None:
        """Flush every file, fsync them at once (in threads) and rename each into place, in
        the order they were opened (on an error, the files not renamed yet are removed)."""
        if not self._ended:
            self._ended = True
            try:
                self._commit()
            except BaseException:
                self._discard()
                raise

    def discard(self) -> None:
        """Close and remove every temporary file: no target is touched."""
        if not self._ended:
            self._ended = True
            self._discard()

    def _commit(self) -> None:
        handles = [handle for _target, _temporary, handle in self._files]
        for handle in handles:
            handle.flush()
        if len(handles) > 1:
            with ThreadPoolExecutor(len(handles), thread_name_prefix="trialsieve-fsync") as pool:
                list(pool.map(os.fsync, [handle.fileno() for handle in handles]))
        else:
            for handle in handles:
                os.fsync(handle.fileno())
        for handle in handles:
            handle.close()
        for target, _temporary, _handle in self._files:
            _check_replaceable(target)  # none renamed when one is refused
        for target, temporary, _handle in self._files:
            os.replace(temporary, target)

    def _discard(self) -> None:
        for _target, temporary, handle in self._files:
            handle.close()
            temporary.unlink(missing_ok=True)


@contextmanager
def atomic_files(buffering: int = -1) -> Iterator[AtomicFiles]:
    """Several files written atomically as one set (`AtomicFiles.open` each): when the block
    ends without an exception all are flushed, fsynced at once (in threads) and renamed to
    their targets; on an exception none is, and every temporary file is removed.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with atomic_files() as files:
    ...         _ = files.open(Path(folder) / "a.csv").write(b"a")
    ...         _ = files.open(Path(folder) / "b.csv").write(b"b")
    ...     sorted(p.name for p in Path(folder).iterdir())
    ['a.csv', 'b.csv']
    """
    files = AtomicFiles(buffering)
    try:
        yield files
        files.commit()
    except BaseException:
        files.discard()
        raise
