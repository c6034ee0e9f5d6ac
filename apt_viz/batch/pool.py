"""The worker pool: one task per input, in the main process or in worker processes, with a clean stop.

The main process owns the progress display and collects the outcomes in input order; each input
is handled by a picklable task (for ``run``: :class:`ImageJob`, which analyses the image and writes
its folder). A first SIGINT/SIGTERM stops submitting work and lets the inputs in flight finish; a
second one aborts at once. An unusable input becomes a one-line :class:`Failure`; any other error
is a bug in apt-viz and is reported as an internal error (with its traceback under ``--debug``).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..core.config import APTConfig
from ..report.records import StatsRecord
from ..report.summary import Failure
from .inputs import InputItem
from .layout import existing_stats, write_image_folder

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ..analysis import ImageAnalysis

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    """The result of one input: the task's value, or a failure."""

    item: InputItem
    value: T | None = None
    failure: Failure | None = None
    skipped: bool = False


Task = Callable[[InputItem], "Outcome[T]"]


def failure_of(path: str, exc: BaseException, debug: bool = False) -> Failure:
    """The one-line failure of an input: an unusable input, or an internal error (a bug in apt-viz)."""
    from ..imaging import INPUT_ERRORS

    if isinstance(exc, INPUT_ERRORS):
        message = str(exc)
        return Failure(path, message if message.startswith(path) else f"{path}: {message}")
    detail = f"\n{traceback.format_exc()}" if debug else " (rerun with --debug for the traceback)"
    return Failure(path, f"{path}: internal error: {type(exc).__name__}: {exc}{detail}", kind="internal")


def analyze_input(
    path: str, config: APTConfig, max_image_pixels: int | None = None, debug: bool = False
) -> tuple[Image.Image, ImageAnalysis] | Failure:
    """Load and analyse one input: ``(original, analysis)``, or its :class:`Failure`."""
    from ..analysis import analyze_image
    from ..imaging import load_image

    try:
        original = load_image(path, max_image_pixels)
        return original, analyze_image(original, config, source=path)
    except Exception as exc:
        return failure_of(path, exc, debug)


@dataclass(frozen=True)
class ImageJob:
    """The ``run`` task: analyse one image and write its folder (picklable: sent to the workers)."""

    config: APTConfig
    output: str
    stats_only: bool = False
    max_image_pixels: int | None = None
    debug: bool = False

    def folder(self, item: InputItem) -> str:
        return os.path.join(self.output, item.name)

    def previous(self, item: InputItem) -> Outcome[StatsRecord] | None:
        """The outcome of an earlier complete run of ``item`` (for ``--skip-existing``), if any."""
        stats = existing_stats(self.folder(item))
        return None if stats is None else Outcome(item, stats, skipped=True)

    def __call__(self, item: InputItem) -> Outcome[StatsRecord]:
        analysed = analyze_input(item.path, self.config, self.max_image_pixels, self.debug)
        if isinstance(analysed, Failure):
            return Outcome(item, failure=analysed)
        original, analysis = analysed
        folder = self.folder(item)
        try:
            record = write_image_folder(analysis, original, folder, item.name, stats_only=self.stats_only)
        except OSError as exc:  # disk full, permissions: this input fails, the run goes on
            reason = f"{item.path}: cannot write {folder}: {exc.strerror or exc}"
            return Outcome(item, failure=Failure(item.path, reason))
        except Exception as exc:
            return Outcome(item, failure=failure_of(item.path, exc, self.debug))
        return Outcome(item, record)


@dataclass
class BatchResult(Generic[T]):
    outcomes: list[Outcome[T]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def values(self) -> list[T]:
        return [outcome.value for outcome in self.outcomes if outcome.value is not None]

    @property
    def failures(self) -> list[Failure]:
        return [outcome.failure for outcome in self.outcomes if outcome.failure is not None]

    @property
    def skipped(self) -> int:
        return sum(outcome.skipped for outcome in self.outcomes)


class StopFlag:
    """Set by the first SIGINT/SIGTERM (finish what is running, start nothing new); a second one aborts."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """Route SIGINT and SIGTERM to a :class:`StopFlag` for the duration (main thread only)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.signal(sig, flag.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


ProgressCallback = Callable[[Outcome[Any]], None]
Advance = Callable[..., None]  # advance(n=1, description=None)


@contextlib.contextmanager
def progress_bar(console: Any, total: int, label: str = "apt-viz", enabled: bool = True) -> Iterator[Advance]:
    """A rich progress bar with images/s and ETA on ``console``; yields ``advance(n=1, description=None)``."""
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
            rate = f"{done / max(time.perf_counter() - started, 1e-9):.1f} images/s"
            if description:
                progress.update(task, description=description)
            progress.update(task, advance=n, rate=rate)

        yield advance


@contextlib.contextmanager
def progress_display(console: Any, total: int, enabled: bool = True) -> Iterator[ProgressCallback]:
    """:func:`progress_bar` as the per-outcome callback of :func:`run_batch` (shows the input's name)."""
    with progress_bar(console, total, enabled=enabled) as advance:
        yield lambda outcome: advance(1, outcome.item.name[:40])


def run_batch(
    items: Sequence[InputItem],
    task: Task[T],
    *,
    workers: int = 1,
    done: Sequence[Outcome[T]] = (),
    on_done: ProgressCallback | None = None,
    stop: StopFlag | None = None,
    uses_cuda: bool = False,
) -> BatchResult[T]:
    """Run ``task`` on every item (in a process pool when ``workers > 1``); outcomes keep the input order.

    Args:
        items: The inputs to process.
        task: Picklable callable, item -> :class:`Outcome` (it must not raise).
        workers: Worker processes; 1 runs everything in this process.
        done: Outcomes known beforehand (e.g. skipped inputs); their items are not run again.
        on_done: Called in the main process after each input (for a progress bar).
        stop: When it becomes true no new input is started and the result is marked interrupted.
        uses_cuda: The task uses CUDA, which cannot survive a fork: workers are spawned.

    Returns:
        The :class:`BatchResult` of every item.
    """
    stop = stop if stop is not None else StopFlag()
    known = {outcome.item: outcome for outcome in done}
    results: dict[int, Outcome[T]] = {}
    todo: list[int] = []
    for index, item in enumerate(items):
        if item in known:
            results[index] = known[item]
            if on_done:
                on_done(known[item])
        else:
            todo.append(index)

    def finished(index: int, outcome: Outcome[T]) -> None:
        results[index] = outcome
        if on_done:
            on_done(outcome)

    if workers <= 1 or len(todo) <= 1:
        for index in todo:
            if stop:
                break
            finished(index, task(items[index]))
    else:
        _run_pool(items, todo, task, workers, finished, stop, uses_cuda)
    interrupted = bool(stop) and len(results) < len(items)
    return BatchResult([results[i] for i in sorted(results)], interrupted=interrupted)


def _run_pool(
    items: Sequence[InputItem],
    todo: Sequence[int],
    task: Task[T],
    workers: int,
    finished: Callable[[int, Outcome[T]], None],
    stop: StopFlag,
    uses_cuda: bool,
) -> None:
    """Keep at most ``2 * workers`` inputs in flight, so a stop request waits for only a few."""
    import concurrent.futures as futures
    import multiprocessing

    from .. import analysis  # noqa: F401 - imported once here (torch), inherited by forked workers

    # fork is fast (workers inherit the imported torch); CUDA cannot be used after a fork.
    context = multiprocessing.get_context("spawn" if uses_cuda else "fork")
    pending = iter(todo)
    in_flight: dict[futures.Future, int] = {}
    with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        while True:
            while not stop and len(in_flight) < 2 * workers:
                index = next(pending, None)
                if index is None:
                    break
                in_flight[pool.submit(task, items[index])] = index
            if not in_flight:
                break
            ready, _ = futures.wait(in_flight, timeout=0.2, return_when=futures.FIRST_COMPLETED)
            for future in ready:
                index = in_flight.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:
                    path = items[index].path
                    outcome = Outcome(items[index], failure=Failure(path, f"{path}: worker failed: {exc}"))
                finished(index, outcome)


def _worker_init() -> None:
    """Workers ignore SIGINT/SIGTERM (the main process decides when to stop, so an input in flight
    always finishes) and use one torch thread each: the pool is the parallelism."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)
