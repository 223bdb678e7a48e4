"""`trialsieve version`."""

from __future__ import annotations

from engine import __version__


def version() -> None:
    """Print the version."""
    print(f"trialsieve {__version__}")
