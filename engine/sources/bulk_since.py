"""Apply an incremental Bulk Data export (`_since`) onto the complete export in a folder.

An export with `_since` holds only the resources whose state changed after that instant,
and its manifest's `deleted` array lists files of Bundles whose DELETE requests name the
resources deleted since (Bulk Data Access IG v2.0.0, "Query Parameters", `_since`, and
"Response - Complete Status", `deleted`). `apply_since_export` exports the changes into a
folder next to the complete export (`.<name>.since`, resumable as any export), then merges
them: each resource replaced by `Type/id` (the newest wins), those deleted removed, one
`<Type>.000.ndjson` per type.

The merge is applied so that a failure leaves a complete export: the merged files are
written under temporary names (not `*.ndjson`) and fsynced; then a journal
(`export-merge.json`: the renames, the removals, the new state) is written atomically, the
commit point; then the files are renamed, the old ones removed, `export.json` replaced and
the journal removed. A failure before the journal leaves the earlier export as it was (the
temporary files are removed); a failure after it is finished by the next call
(`finish_interrupted_merge`), and a cohort run refuses the folder meanwhile. The
incremental export's error files are kept as `export-errors/since-<n>.<name>`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import orjson

from engine.atomic_write import write_atomically
from engine.errors import BulkExportError, Location
from engine.sources.bulk_export import (
    DELETED_FOLDER,
    ERRORS_FOLDER,
    MERGE_JOURNAL,
    STATE_FILE,
    BulkExportResult,
    ExportRequest,
    _folder_lock,
    _recorded_state,
    _State,
    export_to_folder,
)

_MERGED_SUFFIX = ".merged"


def staging_folder(folder: Path) -> Path:
    """Where the incremental export of `folder` goes before it is merged."""
    return folder.parent / f".{folder.name}.since"


def apply_since_export(
    base_url: str,
    folder: Path,
    since: str,
    **options: Any,
) -> BulkExportResult:
    """Export what changed since `since` from the server of the complete export in `folder`
    and merge it into that export (see the module docstring); the incremental export's
    result. `options` go to `export_to_folder` (types, level, group_id, auth, ...); the
    request must be the complete export's but for `_since`. BulkExportError when the folder
    holds no such complete export."""
    folder = Path(folder)
    with _folder_lock(folder):
        finish_interrupted_merge(folder)
    base = _recorded_state(folder)
    if base is None or not base.complete or base.request.since is not None:
        raise BulkExportError(
            f"--since {since}: the folder holds no complete export to apply the changes to",
            Location(file=str(folder)),
        )
    asked = ExportRequest.build(
        base_url,
        level=options.get("level", "system"),
        group_id=options.get("group_id"),
        types=options.get("types"),
    )
    differences = base.request.differences(asked)
    if differences:
        raise BulkExportError(
            "--since: the folder holds an export of another request ("
            + "; ".join(differences)
            + "); the changes can only be applied onto the same export",
            Location(file=str(folder / STATE_FILE)),
        )
    staging = staging_folder(folder)
    result = export_to_folder(base_url, staging, since=since, **options)
    with _folder_lock(folder):
        _merge(folder, base, staging, result)
        _keep_error_files(folder, staging, len(base.increments))
    shutil.rmtree(staging, ignore_errors=True)
    return result


def _keep_error_files(folder: Path, staging: Path, index: int) -> None:
    """Move the incremental export's error files into the folder's `export-errors/`, named
    `since-<index>.<name>`, before the staging folder goes."""
    errors = staging / ERRORS_FOLDER
    if not errors.is_dir():
        return
    target = folder / ERRORS_FOLDER
    target.mkdir(exist_ok=True)
    for path in sorted(errors.iterdir()):
        shutil.move(path, target / f"since-{index}.{path.name}")


def finish_interrupted_merge(folder: Path) -> None:
    """Finish a merge whose journal was written (the commit point) but not fully applied."""
    journal_path = Path(folder) / MERGE_JOURNAL
    if not journal_path.is_file():
        return
    journal = orjson.loads(journal_path.read_bytes())
    for temporary, final in journal["renames"]:
        if (folder / temporary).is_file():
            os.replace(folder / temporary, folder / final)
    for name in journal["removals"]:
        (folder / name).unlink(missing_ok=True)
    write_atomically(
        folder / STATE_FILE, orjson.dumps(journal["state"], option=orjson.OPT_INDENT_2) + b"\n"
    )
    journal_path.unlink()


def _deleted_references(staging: Path) -> set[str]:
    """`Type/id` of every DELETE request in the deleted Bundles of the export in `staging`."""
    references: set[str] = set()
    for path in sorted((staging / DELETED_FOLDER).glob("*.ndjson.txt")):
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                bundle = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise BulkExportError(
                    "a deleted file's line is not JSON", Location(file=str(path), line=number)
                ) from None
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                raise BulkExportError(
                    "a deleted file's line is not a Bundle", Location(file=str(path), line=number)
                )
            for entry in bundle.get("entry") or ():
                request = entry.get("request") if isinstance(entry, dict) else None
                if not isinstance(request, dict) or request.get("method") != "DELETE":
                    continue
                url = str(request.get("url") or "").split("?", 1)[0].rstrip("/")
                parts = url.split("/")
                if len(parts) >= 2:
                    references.add(f"{parts[-2]}/{parts[-1]}")
    return references


def _read_lines(path: Path, into: dict[str, dict[str, bytes]]) -> int:
    """Add the resources of an NDJSON file to `into` (type -> id -> line), replacing those
    with the same `Type/id`; how many lines were read."""
    count = 0
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            resource = orjson.loads(line)
            resource_type, resource_id = resource["resourceType"], resource["id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise BulkExportError(
                "cannot merge a line without resourceType and id",
                Location(file=str(path), line=number),
            ) from None
        into.setdefault(str(resource_type), {})[str(resource_id)] = line
        count += 1
    return count


def _merge(folder: Path, base: _State, staging: Path, result: BulkExportResult) -> None:
    resources: dict[str, dict[str, bytes]] = {}
    old_names = [file.name for file in base.files if file.kind == "output"]
    for name in old_names:
        _read_lines(folder / name, resources)
    replaced = sum(_read_lines(file.path, resources) for file in result.files)
    deleted = _deleted_references(staging)
    removed = 0
    for reference in deleted:
        resource_type, resource_id = reference.split("/", 1)
        if resources.get(resource_type, {}).pop(resource_id, None) is not None:
            removed += 1
    renames: list[tuple[str, str]] = []
    files = []
    try:
        for resource_type in sorted(resources):
            lines = resources[resource_type].values()
            if not lines:
                continue
            final = f"{resource_type}.000.ndjson"
            temporary = f".{final}{_MERGED_SUFFIX}"
            data = b"".join(line + b"\n" for line in lines)
            write_atomically(folder / temporary, data)
            renames.append((temporary, final))
            files.append(
                {
                    "kind": "output",
                    "type": resource_type,
                    "url": "merged",
                    "name": final,
                    "count": None,
                    "done": True,
                    "resources": len(lines),
                    "bytes": len(data),
                }
            )
    except BaseException:
        for temporary, _final in renames:
            (folder / temporary).unlink(missing_ok=True)
        raise
    state = base.to_json()
    state["files"] = files + [file.to_json() for file in base.files if file.kind != "output"]
    state["types_left_out"] = sorted({*base.types_left_out, *result.types_left_out})
    state["increments"] = [
        *base.increments,
        {
            "since": result.request.since,
            "transaction_time": result.transaction_time,
            "resources_changed": replaced,
            "deleted": removed,
        },
    ]
    new_names = {final for _temporary, final in renames}
    journal = {
        "renames": renames,
        "removals": [name for name in old_names if name not in new_names],
        "state": state,
    }
    write_atomically(folder / MERGE_JOURNAL, orjson.dumps(journal))
    finish_interrupted_merge(folder)
