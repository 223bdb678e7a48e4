"""The cohort command's progress bar (rich.progress, imported only when a run shows one)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Patients per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} patients/s")


class ProgressBar:
    """A rich progress bar on standard error: patients done, rate, time left."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("evaluating"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("patients", total=None)

    def start(self, total_patients: int) -> None:
        self.progress.update(self.task, total=total_patients)
        self.progress.start()

    def advance(self, patients: int) -> None:
        self.progress.advance(self.task, patients)

    def stop(self) -> None:
        self.progress.stop()
