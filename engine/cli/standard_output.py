"""Standard output that says when it cannot be written, for the `trialsieve` entry point.

`guard` puts in place, before a command runs, a standard output on the same descriptor whose
write failures raise `StandardOutputError`, so that the entry tells a failed write to standard
output (`> /dev/full`, a closed pipe) from any other OSError, wherever the command wrote
(rich's consoles, `sys.stdout.buffer`). `stop` ends the command for it: `error: standard
output: cannot write: No space left on device` and exit 1; for a closed pipe (`| head`) the
conventional quiet exit 1, as Python's documentation advises (signal module, "Note on
SIGPIPE"): standard output is pointed at the null device, so that the interpreter's last
flush at exit fails no more.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from engine.cli.console import print_error

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class StandardOutputError(OSError):
    """Writing standard output failed: raised by the stream `guard` puts in place."""


class _GuardedOutput(io.FileIO):
    """Standard output's descriptor, whose write failures are `StandardOutputError`s."""

    def write(self, data: ReadableBuffer, /) -> int:
        try:
            return super().write(data)
        except OSError as error:
            raise StandardOutputError(error.errno, error.strerror) from None


def guard() -> None:
    """Replace `sys.stdout` by one that raises `StandardOutputError` (same descriptor,
    encoding, errors and buffering); nothing when `sys.stdout` is not the process's own (a
    test's capture) or has no descriptor."""
    stream = sys.stdout
    if stream is None or stream is not sys.__stdout__ or not isinstance(stream, io.TextIOWrapper):
        return
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):
        return
    stream.flush()
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(_GuardedOutput(descriptor, "w", closefd=False)),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=stream.line_buffering,
        write_through=stream.write_through,
    )


def stop(error: StandardOutputError) -> NoReturn:
    """End the command for a failed write to standard output: a message (none for a closed
    pipe) and exit 1; what is left to write goes to the null device."""
    if error.errno != errno.EPIPE:
        with contextlib.suppress(OSError):  # standard error cannot be written either
            print_error(f"standard output: cannot write: {error.strerror}")
    if sys.__stdout__ is not None:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, sys.__stdout__.fileno())
        finally:
            os.close(null)
    raise SystemExit(1)
