"""The `trialsieve` command line: one typer app, one module per command.

    engine/cli/__init__.py   the app: registers each command (this module)
    engine/cli/options.py    every option and argument, declared once
    engine/cli/console.py    the as-of day, `error: ...` messages, exits, loading a trial
    engine/cli/tables.py     the per-criterion and summary tables `evaluate` and `demo` print
    engine/cli/<command>.py  one command each: evaluate, lint, cohort, coverage, demo,
                             serve, subscribe, version, test (cases.py), attrition

Only this package prints for a person and exits: the engine raises the errors of
`engine.errors`, and a command turns them into messages and exit codes (0 done, 1 some input
could not be used or a server failed, each named; 2 bad criteria, mappings, attestations or
arguments). A command module imports at its top only typer, rich and the options, and the
engine inside the command function, so that `trialsieve --help` loads no more than it needs.
To add a command: a module here with its function, its options in `options.py`, and a line
below.
"""

from __future__ import annotations

import typer

from engine.cli.attrition import attrition
from engine.cli.cases import test
from engine.cli.cohort import cohort
from engine.cli.coverage import coverage
from engine.cli.demo import demo
from engine.cli.evaluate import evaluate
from engine.cli.lint import lint
from engine.cli.options import VersionOption
from engine.cli.serve import serve
from engine.cli.subscribe import subscribe
from engine.cli.version import version

app = typer.Typer(
    name="trialsieve",
    help="FHIR-based clinical-trial eligibility engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(version: VersionOption = False) -> None:
    """FHIR-based clinical-trial eligibility engine."""


app.command()(evaluate)
app.command()(lint)
app.command()(cohort)
app.command()(attrition)
app.command()(coverage)
app.command()(demo)
app.command()(serve)
app.command()(subscribe)
app.command()(version)
app.command()(test)

__all__ = ["app"]
