"""`trialsieve version` and `trialsieve --version`."""

from __future__ import annotations

import typer

from engine import __version__


def version() -> None:
    """Print the version."""
    print(f"trialsieve {__version__}")


def print_version(asked: bool) -> None:
    """The `--version` option's callback: print the version and exit."""
    if asked:
        version()
        raise typer.Exit()
