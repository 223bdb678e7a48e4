"""File sink: write results as JSON, atomically (a crash never leaves a half-written file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from engine.atomic_write import write_atomically
from engine.errors import Location, SinkError


def to_json(document: Any) -> bytes:
    """Pretty JSON (2-space indent, stable key order as built) with a final newline."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def write_json(path: str | Path, document: Any, inside: str | Path | None = None) -> Path:
    """Write `document` to `path` atomically (`engine.atomic_write`).

    With `inside` (a folder), the target must stay in that folder: a path built from data
    (`FOLDER/<Patient.id>.json`) that resolves elsewhere (`../x`, an absolute path, a symbolic
    link out) is refused with SinkError.
    """
    return _write(path, to_json(document), inside)


def write_text(path: str | Path, text: str, inside: str | Path | None = None) -> Path:
    """Write UTF-8 text (a report page) to `path` atomically, with `write_json`'s check."""
    return _write(path, text.encode("utf-8"), inside)


def _write(path: str | Path, data: bytes, inside: str | Path | None) -> Path:
    target = Path(path)
    if inside is not None:
        folder = Path(inside).resolve()
        resolved = (Path.cwd() / target).resolve()
        if resolved.parent != folder or target.name in ("", ".", ".."):
            raise SinkError(
                f"refusing to write outside the output folder {inside}",
                Location(file=str(target)),
            )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, data)
    except OSError as error:
        raise SinkError(f"cannot write: {error.strerror}", Location(file=str(target))) from None
    return target
