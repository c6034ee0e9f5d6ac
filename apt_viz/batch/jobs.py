"""Jobs over inputs: one task per input, in this process or on the worker engine, outcomes in input order.

The main process owns the progress display and collects the outcomes; each input is handled by a
picklable :class:`Job` (for ``run``: :class:`ImageJob`, which analyses the image and writes its
folder; ``sweep`` and ``compare`` have theirs in :mod:`apt_viz.batch.analysis_jobs`). With
``workers > 1`` the jobs run on :class:`~apt_viz.batch.workers.WorkerPool`: bounded submission,
workers that die with this process, and a worker that dies is replaced while the input it was
handling becomes an internal error (its half-done files are removed by :meth:`Job.discard`). Every
failure is classified by :func:`~apt_viz.batch.failures.failure_of`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..core.config import APTConfig
from ..report.records import StatsRecord
from ..report.summary import Failure
from .failures import failure_of, output_failure
from .inputs import InputItem
from .layout import discard_partial_files, existing_stats, write_image_folder
from .workers import StopFlag, WorkerPool

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


class Job(Protocol[T]):
    """What :func:`run_batch` runs on each input (picklable: sent to the workers)."""

    @property
    def debug(self) -> bool:
        """Internal errors carry their traceback."""

    def __call__(self, item: InputItem) -> Outcome[T]:
        """Handle one input; an unusable input or a bug becomes the outcome's failure (it never raises)."""

    def discard(self, item: InputItem) -> None:
        """Remove what a worker that died while handling ``item`` left half-written (in the main process)."""


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
    fidelity: bool = False  # measure it (stats.json's ``fidelity``) and draw 04_fidelity/ (``run``'s default)

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
            record = write_image_folder(analysis, original, folder, item.name, stats_only=self.stats_only,
                                        fidelity=self.fidelity)
        except OSError as exc:  # disk full, permissions: this input fails, the run goes on
            return Outcome(item, failure=output_failure(item.path, folder, exc))
        except Exception as exc:
            return Outcome(item, failure=failure_of(item.path, exc, self.debug))
        return Outcome(item, record)

    def discard(self, item: InputItem) -> None:
        discard_partial_files(self.folder(item))


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
    def internal_errors(self) -> int:
        """Failures that are bugs in apt-viz, a dead worker included (exit 3)."""
        return sum(failure.kind == "internal" for failure in self.failures)

    @property
    def skipped(self) -> int:
        return sum(outcome.skipped for outcome in self.outcomes)


ProgressCallback = Callable[[Outcome[Any]], None]


def run_batch(
    items: Sequence[InputItem],
    job: Job[T],
    *,
    workers: int = 1,
    done: Sequence[Outcome[T]] = (),
    on_done: ProgressCallback | None = None,
    stop: StopFlag | None = None,
    uses_cuda: bool = False,
) -> BatchResult[T]:
    """Run ``job`` on every item (on the worker engine when ``workers > 1``); outcomes keep the input order.

    Args:
        items: The inputs to process.
        job: The picklable :class:`Job`.
        workers: Worker processes; 1 runs everything in this process.
        done: Outcomes known beforehand (e.g. skipped inputs); their items are not run again.
        on_done: Called in the main process after each input (for a progress bar).
        stop: When it becomes true no new input is started and the result is marked interrupted.
        uses_cuda: The job uses CUDA, which cannot survive a fork: workers are spawned.

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
            finished(index, job(items[index]))
    else:
        from .. import analysis  # noqa: F401 - torch and Pillow imported once here, inherited by forked workers

        pool: WorkerPool[InputItem, Outcome[T]]
        with WorkerPool(job, min(workers, len(todo)), start_method="spawn" if uses_cuda else "fork") as pool:
            for result in pool.imap(todo, payload=items.__getitem__, go_on=lambda: not stop):
                item = items[result.item]
                if result.error is not None:
                    job.discard(item)
                    finished(result.item, Outcome(item, failure=failure_of(item.path, result.error, job.debug)))
                elif result.value is not None:
                    finished(result.item, result.value)
    interrupted = bool(stop) and len(results) < len(items)
    return BatchResult([results[i] for i in sorted(results)], interrupted=interrupted)
