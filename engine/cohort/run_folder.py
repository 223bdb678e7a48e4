"""A cohort run's `--out` folder as others see it: one run at a time (`RunLock`), whether it
holds a finished run, and the command that resumes one that has not finished.

**One run at a time.** A run holds an exclusive lock (`fcntl.flock`) on `.lock` in the
folder from before it reads the manifest to its end (`RunLock.take`); the operating system
releases it when the process ends, however it ends. A second run on the folder is refused at
once (CohortError naming the folder and the run's pid, which the lock file holds). A reader
(`trialsieve attrition`) holds a shared lock while it reads (`reading`): it is refused while
a run writes the folder, and a run starting meanwhile waits for the read (a lock that no
living run's pid names is a reader's), up to `READ_GRACE_SECONDS`, then is refused. A run
removes the lock file at its end, while it holds the lock, and so does a reader that can
then lock it exclusively (no one else holds it); whoever locks a lock file checks that it
is still the one in the folder, else locks the new one. No lock where `fcntl` does not
exist (Windows), nor on a file system without locks.

A run is **finished** when `summary.json` is in the folder and names the criteria the
manifest names (`criteria_sha256`, the digest of the criteria and mapping files): the run
writes the summary last, after every output, and a re-run of edited criteria removes it
(and sets the earlier criteria's outputs aside, `engine.cohort.outputs.set_aside_outputs`)
before it writes the manifest naming the edited ones. Between the two, the folder holds no
output of criteria other than the manifest's, and `trialsieve attrition` (or anything else
reading the folder through `check_finished`) is told that the run has not finished and how
to resume it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from engine.atomic_write import is_temporary_name
from engine.errors import CohortError, Location

MANIFEST = "manifest.json"
"""The run's manifest: what it evaluates (criteria, input, as-of day, ...)."""
SUMMARY = "summary.json"
"""Written last by a run that finished; names its criteria (`criteria_sha256`)."""
LOCK = ".lock"
"""Locked by the run writing the folder (holding its pid), and by readers meanwhile."""
READ_GRACE_SECONDS = 1.0
"""How long a run waits for readers of its folder (a lock no run holds) before it gives up."""

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: no lock)
    fcntl = None  # type: ignore[assignment]


_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})
"""What flock raises on a file system that has no locks (some network and FUSE ones)."""


class RunLock:
    """The exclusive lock of the run writing a folder (`take`), until `release`."""

    def __init__(self, path: Path, descriptor: int | None) -> None:
        self._path = path
        self._descriptor = descriptor

    @classmethod
    def take(cls, out: Path) -> RunLock:
        """Lock `out` for a run (the folder exists); CohortError when another run holds it
        (or a reader, for longer than `READ_GRACE_SECONDS`)."""
        path = out / LOCK
        if fcntl is None:  # pragma: no cover
            return cls(path, None)
        waited_until = time.monotonic() + READ_GRACE_SECONDS
        while True:
            try:
                descriptor = _open_locked(path, exclusive=True)
            except OSError as error:
                if error.errno in _NO_LOCKS:  # a file system without locks: run unlocked
                    return cls(path, None)
                raise
            if descriptor is not None:
                break
            holder = _run_holding(path)
            if holder is not None or time.monotonic() > waited_until:
                who = (
                    f"another trialsieve cohort run (pid {holder})"
                    if holder is not None
                    else "another trialsieve process (`trialsieve attrition` reading it?)"
                )
                raise CohortError(
                    f"{who} is using this folder; wait for it to end, or choose another --out",
                    Location(file=str(out)),
                )
            time.sleep(0.05)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        return cls(path, descriptor)

    def release(self) -> None:
        """Remove the lock file (still locked: see the module's docstring) and unlock."""
        if self._descriptor is not None:
            with contextlib.suppress(OSError):  # removed with the folder, by a refused run
                self._path.unlink()
            os.close(self._descriptor)
            self._descriptor = None


@contextlib.contextmanager
def reading(out: Path) -> Iterator[None]:
    """While the block reads `out`: CohortError, at once, while a run writes it; a run that
    starts meanwhile waits for the read (see the module's docstring). Without a lock when
    the folder cannot be written (nobody can run there) or where `fcntl` does not exist."""
    descriptor = None
    if fcntl is not None and out.is_dir():
        try:
            descriptor = _open_locked(out / LOCK, exclusive=False)
        except OSError:  # a folder this user cannot write in: read it as it is
            pass
        else:
            if descriptor is None:
                holder = _run_holding(out / LOCK)
                raise CohortError(
                    f"a trialsieve cohort run{'' if holder is None else f' (pid {holder})'} is "
                    "writing this folder; try again once it has ended",
                    Location(file=str(out)),
                )
    try:
        yield
    finally:
        if descriptor is not None:
            _remove_unless_held(out / LOCK, descriptor)


def _remove_unless_held(path: Path, descriptor: int) -> None:
    """A reader's end: remove the lock file when no other process holds it (locked
    exclusively first, as a run does at its end), and close it."""
    assert fcntl is not None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
            path.unlink()
    except OSError:  # held by another reader or a run (or gone): theirs to remove
        pass
    finally:
        os.close(descriptor)


def _open_locked(path: Path, exclusive: bool) -> int | None:
    """The descriptor of the lock file at `path` (made if need be), locked; None when
    another process holds a lock that excludes this one."""
    assert fcntl is not None
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    for _ in range(100):
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, mode)
        except BlockingIOError:
            os.close(descriptor)
            return None
        except BaseException:
            os.close(descriptor)
            raise
        try:
            current = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return descriptor
        os.close(descriptor)  # a run removed it as it ended: lock the one there now
    raise OSError(f"{path}: the lock file keeps being replaced")


def _run_holding(path: Path) -> int | None:
    """The pid the lock file names, when that process is alive (a run writes its pid there;
    a reader writes nothing)."""
    try:
        pid = int(path.read_text(encoding="ascii").strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return pid
    return pid


def remove_leftover_temporary_files(out: Path) -> int:
    """Remove from `out` and the folders in it the temporary files of atomic writes that a
    process ended while writing left behind (`engine.atomic_write.is_temporary_name`: only
    files of that pattern, never following a symbolic link out of `out`); how many. Under
    the run's lock (`RunLock`): no process of another run is writing them."""
    removed = 0
    for folder, _folders, names in os.walk(out):
        for name in names:
            path = Path(folder) / name
            if is_temporary_name(name) and path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
    return removed


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest in `out`, or None when there is none (or it does not read as JSON)."""
    try:
        manifest = orjson.loads((out / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def resume_command(out: Path, manifest: dict[str, Any] | None) -> str | None:
    """The `trialsieve cohort` command that resumes the run whose manifest this is (None
    when the manifest does not say enough)."""
    if manifest is None:
        return None
    try:
        source = manifest["input"]
        words = [
            "trialsieve",
            "cohort",
            manifest["criteria"]["path"],
            f"--{source['kind']}",
            source["path"],
            "--as-of",
            manifest["as_of"],
        ]
        attestations = manifest.get("attestations")
        if isinstance(attestations, dict):
            words += ["--attestations", attestations["path"]]
    except (KeyError, TypeError):
        return None
    if manifest.get("full"):
        words.append("--full")
    if not all(isinstance(word, str) for word in words):
        return None
    return shlex.join([*words, "--out", str(out)])


def how_to_resume(out: Path) -> str:
    """`run the same command again to resume` and, when the manifest says, that command."""
    command = resume_command(out, read_manifest(out))
    if command is None:
        return "run the same command again to resume"
    return f"run the same command again to resume: {command}"


def what_is_kept(out: Path) -> str:
    """What an interrupted run leaves in `out`, and what to do: the partitions written (the
    same command resumes), or nothing (a fresh run stopped before its manifest)."""
    from engine.cohort.partition import is_complete, result_path

    manifest = read_manifest(out)
    count = None if manifest is None else manifest.get("partition_count")
    if not isinstance(count, int) or isinstance(count, bool):
        return "nothing was kept; run the same command again to start afresh"
    done = sum(is_complete(result_path(out / "partitions", index)) for index in range(count))
    return f"{done} of {count} partitions kept in {out}; run the same command again to resume"


def check_finished(out: Path) -> None:
    """Raise CohortError when `out` holds a cohort run that has not finished (interrupted,
    failed, or running; see the module's docstring), naming the command that resumes it.
    A folder without a manifest (outputs copied elsewhere) is left to the reader, which
    checks the outputs against each other."""
    manifest = read_manifest(out)
    if manifest is None:
        return
    criteria = manifest.get("criteria")
    digest = criteria.get("sha256") if isinstance(criteria, dict) else None
    summary_path = out / SUMMARY
    if summary_path.is_file():
        summary = _read_json(summary_path)  # one that does not read is the reader's to name
        if summary is None or summary.get("criteria_sha256", digest) == digest:
            return
    raise CohortError(
        "the cohort run in this folder has not finished (it was interrupted or failed, or "
        "is running): its outputs are written at its end, and none of another run's are "
        f"shown meanwhile; {how_to_resume(out)}",
        Location(file=str(out)),
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
