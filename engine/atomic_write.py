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
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMPORARY_SUFFIX = ".part"
"""Ends the name of a file being written; such a file is never a finished result."""


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
    target = Path(path)
    temporary = _temporary_path(target)
    try:
        with open(temporary, "xb", buffering=buffering) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through `atomic_write`."""
    with atomic_write(path, durable=durable) as handle:
        handle.write(data)


def _temporary_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}")


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
        target = Path(path)
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
