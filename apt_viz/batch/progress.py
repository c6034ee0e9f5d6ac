"""The progress bar of every command: done / total, items/s (images/s, examples/s) and ETA on stderr (rich)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

Advance = Callable[..., None]  # advance(n=1, description=None)


@contextlib.contextmanager
def progress_bar(console: Any, total: int, label: str = "apt-viz", enabled: bool = True,
                 unit: str = "images") -> Iterator[Advance]:
    """A rich progress bar with ``unit``/s and ETA on ``console``; yields ``advance(n=1, description=None)``."""
    if not enabled:
        yield lambda n=1, description=None: None
        return
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total, rate="")
        started = time.perf_counter()
        done = 0

        def advance(n: int = 1, description: str | None = None) -> None:
            nonlocal done
            done += n
            rate = f"{done / max(time.perf_counter() - started, 1e-9):.1f} {unit}/s"
            if description:
                progress.update(task, description=description)
            progress.update(task, advance=n, rate=rate)

        yield advance
