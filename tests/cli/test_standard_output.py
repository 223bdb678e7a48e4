"""A failed write to standard output ends every command with a message, never a traceback:
`> /dev/full` is `error: standard output: cannot write: ...` and exit 1, a closed pipe
(`| head`) a quiet exit 1 (engine/cli/standard_output.py). Run as the console script runs
the app, in a fresh interpreter: only a real process has a standard output to fail."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fresh_interpreter import run_trialsieve_into

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = str(ROOT / "criteria" / "NCT05315778.yaml")
COMMANDS = {
    # the Bundle through sys.stdout.buffer
    "evaluate": (
        "evaluate",
        CRITERIA,
        "--bundle",
        str(ROOT / "examples" / "patients" / "itp-relapsed-candidate.json"),
        "--as-of",
        "2026-11-01",
    ),
    # a line through a rich console
    "lint": ("lint", CRITERIA),
}


@pytest.fixture
def full_device() -> Iterator[int]:
    """/dev/full open for writing: every write fails with ENOSPC."""
    if not Path("/dev/full").is_char_device():
        pytest.skip("no /dev/full on this system")
    descriptor = os.open("/dev/full", os.O_WRONLY)
    yield descriptor
    os.close(descriptor)


@pytest.fixture
def closed_pipe() -> Iterator[int]:
    """The writing end of a pipe whose reading end is closed: every write fails with EPIPE."""
    reading, writing = os.pipe()
    os.close(reading)
    yield writing
    os.close(writing)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_full_disk_is_an_error_naming_standard_output(full_device: int, command: str) -> None:
    code, errors = run_trialsieve_into(full_device, *COMMANDS[command])
    assert code == 1, errors
    assert "error: standard output: cannot write: No space left on device" in errors
    assert "Traceback" not in errors and "Exception ignored" not in errors


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_closed_pipe_ends_the_command_quietly(closed_pipe: int, command: str) -> None:
    code, errors = run_trialsieve_into(closed_pipe, *COMMANDS[command])
    assert code == 1, errors
    assert "Traceback" not in errors and "Exception ignored" not in errors
    assert "error:" not in errors
