"""Progress bars for long stages (rich), quiet when output is not a terminal or SELFPLAY_QUIET is set."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], label: str, unit_scale: int = 1) -> Iterator[T]:
    """Yields items while showing a bar; `unit_scale` items of work per yielded element (chunks)."""
    items = list(items)
    if os.environ.get("SELFPLAY_QUIET") or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=len(items) * unit_scale)
        for item in items:
            yield item
            bar.advance(task, unit_scale)
