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

The temporary file is created exclusively (it never overwrites another) with the permissions
any file the user writes gets (the umask applies), unlike `tempfile.mkstemp`'s owner-only ones.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
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
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}")
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
