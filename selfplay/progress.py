"""Progress bars for the long stages (rich): the stage's name, the bar, done/total, the rate, the time spent and the
time left, plus any live fields a stage reports (training's loss). Shown on stderr, so stdout keeps only the run's
own lines; off when stderr is not a terminal or SELFPLAY_QUIET is set."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

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

T = TypeVar("T")


def bars_enabled() -> bool:
    return not os.environ.get("SELFPLAY_QUIET") and sys.stderr.isatty()


class _Rate(ProgressColumn):
    """Items per second ("3.2 prompts/s"), or seconds per item when slower than one a second ("12.5 s/step")."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        shown = f"{speed:.1f} {self.unit}/s" if speed >= 1 else f"{1 / speed:.1f} s/{self.unit}"
        return Text(shown, style="progress.data.speed")


class Bar:
    """One stage's bar: `with Bar("train", total=40, unit="step") as bar: bar.advance(1, loss=0.69)`. A no-op when
    bars are off, so callers never check."""

    def __init__(self, label: str, total: int, unit: str = "item") -> None:
        self._progress: Progress | None = None
        if not bars_enabled() or total <= 0:
            return
        columns = [
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(unit),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}", markup=False),
        ]
        self._progress = Progress(*columns, console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task(label, total=total, info="")

    def __enter__(self) -> Bar:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress:
            self._progress.stop()

    def advance(self, n: float = 1, **fields: float | str) -> None:
        if self._progress:
            info = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            if fields:
                self._progress.update(self._task, advance=n, info=info)
            else:
                self._progress.update(self._task, advance=n)


def progress(items: Iterable[T], label: str, unit: str = "item", size: Callable[[T], int] = lambda _: 1) -> Iterator[T]:
    """Yields items while a bar counts them; `size(item)` units of work each (a chunk of prompts counts its prompts)."""
    items = list(items)
    with Bar(label, total=sum(map(size, items)), unit=unit) as bar:
        for item in items:
            yield item
            bar.advance(size(item))
