"""The `trialsieve` command line: one typer app, one module per command.

    engine/cli/__init__.py   the app: registers each command (this module)
    engine/cli/options.py    every option and argument, declared once
    engine/cli/console.py    the as-of day, `error: ...` messages, exits, loading a trial
    engine/cli/tables.py     the per-criterion and summary tables `evaluate` and `demo` print
    engine/cli/standard_output.py  a failed write to standard output: an error, not a traceback
    engine/cli/<command>.py  one command each: evaluate, lint, cohort, coverage, demo,
                             serve, subscribe, version, test (cases.py), attrition

Only this package prints for a person and exits: the engine raises the errors of
`engine.errors`, and a command turns them into messages and exit codes (0 done, 1 some input
could not be used or a write or a server failed, each named; 2 bad criteria, mappings,
attestations or arguments). Standard output that cannot be written ends every command the
same way, here: `error: standard output: cannot write: ...` and 1, and quietly 1 for a closed
pipe (`| head`). A command module imports at its top only typer, rich and the options, and the
engine inside the command function, so that `trialsieve --help` loads no more than it needs.
To add a command: a module here with its function, its options in `options.py`, and a line
below.
"""

from __future__ import annotations

import atexit
import functools
import gc
import sys
from typing import Any

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


class _Trialsieve(typer.Typer):
    """The app; run as a program (`app()`), it ends a failed write to standard output with
    an error message and exit 1, never a traceback (`engine.cli.standard_output`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from engine.cli.standard_output import StandardOutputError, guard, stop

        guard()
        try:
            try:
                return super().__call__(*args, **kwargs)
            finally:
                if sys.stdout is not None:
                    sys.stdout.flush()  # what is left, before the interpreter's exit
        except StandardOutputError as error:
            stop(error)


app = _Trialsieve(
    name="trialsieve",
    help="FHIR-based clinical-trial eligibility engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(context: typer.Context, version: VersionOption = False) -> None:
    """FHIR-based clinical-trial eligibility engine."""
    context.call_on_close(_keep_unit_conversions)
    _exit_without_collecting()


def _keep_unit_conversions() -> None:
    """Once the command has ended, the unit conversions it worked out with the unit registry
    (units met in the data, such as a haemoglobin in g/dL against the concept's g/L) are
    added to the cache that loading criteria restores (`engine.compiled_cache`), as a cohort
    run adds those of each partition: the next command needs no registry for them (ucumvert
    on pint, 0.55 s of a 1.0 s `evaluate` of one Bundle). Nothing for a command that loaded
    no criteria (the cache module is not even imported then)."""
    compiled_cache = sys.modules.get("engine.compiled_cache")
    if compiled_cache is not None:
        compiled_cache.save_conversions()


@functools.cache
def _exit_without_collecting() -> None:
    """Have the interpreter's exit skip the cyclic collector's walks of the whole heap.

    A command's heap (the compiled criteria, the terminology, the models, the modules) is
    walked by the collections the interpreter's shutdown makes, 0.06-0.2 s of every command,
    for nothing: the command has closed its files and ended its work. At exit, after the
    exit handlers registered after it, what is left is frozen (`gc.freeze`); reference
    counting still frees it all as the modules are torn down. Registered once per process.
    """
    atexit.register(_freeze_what_is_left)


def _freeze_what_is_left() -> None:
    gc.disable()
    gc.freeze()


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
