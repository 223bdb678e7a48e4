"""`trialsieve coverage`: what the trial's mappings match in a record set, and what they seem
to miss (the logic is `engine.coverage`).

Prints the readable table and the suggested mapping snippet; with --out, also writes
`coverage.csv`, `coverage.txt` and `suggested-mappings.yaml` there. With nothing to suggest
there is no snippet and no `suggested-mappings.yaml` (a file of comments only is no mapping
file), the table and the terminal say so, and one an earlier run left in --out is removed
(it would suggest what this run no longer does). Exit status: 0 when every
input was used, 1 when some could not be (each named; the report covers the rest), 2 for bad
criteria, mappings or arguments, among them an input folder that is missing, holds no input
file or holds a folder named like one (`cohort` refuses the same folders, with 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from engine.cli.console import fail, load_trial_and_answers, print_error
from engine.cli.options import (
    BundlesFolderOption,
    CoverageOutOption,
    CriteriaArgument,
    MinimumScoreOption,
    NdjsonOption,
)

if TYPE_CHECKING:
    from engine.criteria.model import CriteriaFile
    from engine.sources import PatientSource


def coverage(
    criteria: CriteriaArgument,
    ndjson: NdjsonOption = None,
    bundles: BundlesFolderOption = None,
    out: CoverageOutOption = None,
    min_score: MinimumScoreOption = 88.0,
) -> None:
    """Per concept the criteria use: codes matched in the data (patients per code), and
    unmapped codes that look like members, ranked by the patients they would change."""
    from engine.atomic_write import write_atomically
    from engine.coverage import (
        SUGGESTIONS_FILE,
        concepts_used,
        coverage_csv,
        coverage_report,
        coverage_table,
        mapping_names,
        mapping_snippet,
    )
    from engine.errors import InputError, TrialsieveError

    if (ndjson is None) == (bundles is None):
        raise fail("give exactly one of --ndjson DIR and --bundles DIR")
    folder = ndjson or bundles
    if folder is None or not folder.is_dir():
        raise fail(f"{folder}: no such folder")
    from engine.sources import BundleFileSource, ndjson_files

    try:  # a folder with nothing to read is refused before anything is read, as by `cohort`
        ndjson_files(folder) if ndjson is not None else BundleFileSource(folder).files()
    except InputError as error:
        raise fail(error) from None
    trial, _ = load_trial_and_answers(criteria, None)
    problems: list[str] = []
    try:
        texts = [path.read_text(encoding="utf-8") for path in _mapping_files(trial.source)]
        if ndjson is not None:
            from engine.cohort import NdjsonFolderSource

            source: PatientSource = NdjsonFolderSource(
                ndjson, on_problem=lambda problem: problems.append(str(problem))
            )
        else:

            def note(error: InputError) -> None:
                problems.append(str(error))

            source = BundleFileSource(folder, on_error=note)
        patients = ((patient.patient_id, patient.resources) for patient in source)
        report = coverage_report(
            trial.terminology,
            concepts_used(trial.source),
            patients,
            mapping_names(texts),
            minimum_score=min_score,
        )
    except (TrialsieveError, OSError) as error:
        raise fail(str(error), code=1) from None
    table, snippet = coverage_table(report), mapping_snippet(report)
    earlier_removed = False
    if out is not None:
        suggestions = out / SUGGESTIONS_FILE
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_atomically(out / "coverage.csv", coverage_csv(report).encode())
            write_atomically(out / "coverage.txt", table.encode())
            if snippet is not None:
                write_atomically(suggestions, snippet.encode())
            elif suggestions.is_symlink() or suggestions.exists():
                suggestions.unlink()
                earlier_removed = True
        except OSError as error:
            raise fail(f"{out}: cannot write the report: {error}", code=1) from None
    console = Console(highlight=False, soft_wrap=True)
    console.print(table, markup=False, end="")
    if snippet is not None:
        console.print()
        console.print(snippet, markup=False, end="")
    elif out is not None:
        removed = " (the one an earlier run wrote there is removed)" if earlier_removed else ""
        console.print(
            f"Nothing to suggest: no {out / SUGGESTIONS_FILE} written{removed}", markup=False
        )
    for problem in problems:
        print_error(problem)
    if problems:
        raise typer.Exit(1)


def _mapping_files(criteria_file: CriteriaFile) -> list[Path]:
    """The mapping files the criteria name (a folder: its *.yaml / *.yml, sorted)."""
    files: list[Path] = []
    for given in criteria_file.mapping_paths:
        path = Path(given)
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            files.append(path)
    return files
