"""Read YAML as ruamel's round-trip loader does (positions, scalar types), but faster.

The round-trip scanner spends about half its time collecting comments, which nothing here
uses. `load_round_trip` parses with ruamel's plain scanner (configured like the round-trip
one: folded block scalars and tag escapes alike) and keeps the round-trip parser, composer
and constructor, so the result is the same `CommentedMap` tree with the same line and column
of every node. When that parse fails for any reason, the caller's own round-trip parse is
run instead, so every error (message, mark, exception class) is ruamel's usual one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scanner import RoundTripScanner, Scanner

__all__ = ["load_round_trip"]


class _ScannerWithoutComments(Scanner):
    """The round-trip scanner's tokens, without its comment tokens."""

    def scan_block_scalar(self, style: Any, rt: bool | None = True) -> Any:
        return Scanner.scan_block_scalar(self, style, rt=rt)

    scan_uri_escapes = RoundTripScanner.scan_uri_escapes


def load_round_trip(text: str, fallback: Callable[[], Any]) -> Any:
    """`YAML(typ="rt").load(text)` without comments; `fallback()` if that raises anything."""
    yaml = YAML(typ="rt")
    yaml.Scanner = _ScannerWithoutComments
    try:
        return yaml.load(text)
    except Exception:
        return fallback()
