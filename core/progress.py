"""Progress of long commands on the terminal: rows done of total, rate and time left.

Domain functions that take a while accept a `ProgressCallback` and call it with
(phase, done, total) every batch or so; they know nothing of terminals. The
command line hands them a `TerminalProgress`, one bar per phase, on stderr (so a
command's own output on stdout stays machine-readable). Where stderr is not a
terminal (CI, a log file) it writes a plain line per phase every few seconds instead,
and one when the phase is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# (phase, done, total): `total` is None while it is not known yet.
ProgressCallback = Callable[[str, int, int | None], None]


class RateColumn(ProgressColumn):
    """Rows per second over rich's sliding window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


@dataclass
class _PlainPhase:
    started: float
    printed: float
    finished: bool = False


class TerminalProgress:
    """A context manager that draws one bar per phase; call it as a `ProgressCallback`."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._console = console or Console(stderr=True)
        self._plain = not self._console.is_terminal
        self._every_s = every_s
        self._clock = clock
        self._mark = clock()  # where the next phase's time is counted from
        self._plain_phases: dict[str, _PlainPhase] = {}
        self._progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=self._console,
        )
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if self._plain:
            self._plain_line(phase, done, total)
            return
        task = self._tasks.get(phase)
        if task is None:
            task = self._tasks[phase] = self._progress.add_task(phase, total=total)
        self._progress.update(task, completed=done, total=total)

    def _plain_line(self, phase: str, done: int, total: int | None) -> None:
        now = self._clock()
        seen = self._plain_phases.setdefault(phase, _PlainPhase(self._mark, self._mark))
        finished = total is not None and done >= total
        if seen.finished or (not finished and now - seen.printed < self._every_s):
            return
        seen.printed, seen.finished = now, finished
        elapsed = max(now - seen.started, 1e-9)
        rate = done / elapsed
        of = f"{done}/{total}" if total is not None else f"{done}"
        if finished:
            self._mark = now
            line = f"{phase} {of} rows in {timedelta(seconds=round(elapsed))}, {rate:,.0f} rows/s"
        else:
            line = f"{phase} {of} rows, {rate:,.0f} rows/s"
            if total is not None and rate > 0:
                left = timedelta(seconds=round((total - done) / rate))
                line += f", {left} left"
        self._console.file.write(line + "\n")
        self._console.file.flush()

    def __enter__(self) -> TerminalProgress:
        self._mark = self._clock()
        if not self._plain:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._plain:
            self._progress.stop()
