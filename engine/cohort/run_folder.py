"""A cohort run's `--out` folder as others see it: whether it holds a finished run, and the
command that resumes one that has not finished.

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

import shlex
from pathlib import Path
from typing import Any

import orjson

from engine.errors import CohortError, Location

MANIFEST = "manifest.json"
"""The run's manifest: what it evaluates (criteria, input, as-of day, ...)."""
SUMMARY = "summary.json"
"""Written last by a run that finished; names its criteria (`criteria_sha256`)."""


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
