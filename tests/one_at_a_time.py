"""One process at a time for the tests' installs (`npm ci`, `apt-get install`): `make test`
runs the tests in several processes (pytest-xdist), and two of them starting the same
session fixture would otherwise install into the same folder, or wait on dpkg's lock and
fail, at once. The second to come waits, then finds the install done."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from filelock import FileLock

INSTALL_WAIT_SECONDS = 1200.0
"""Longer than any install the tests make may take (apt-get's own time-outs are 900 s)."""


def install_lock(what: str) -> FileLock:
    """A lock shared by every test process of this machine for installing `what` (a name or
    a folder's path), in the system's temporary folder."""
    name = hashlib.sha256(what.encode()).hexdigest()[:16]
    return FileLock(
        Path(tempfile.gettempdir()) / f"trialsieve-install-{name}.lock",
        timeout=INSTALL_WAIT_SECONDS,
    )
