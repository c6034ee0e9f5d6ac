"""The local ``stats`` engine: a streaming pipeline on one machine, on the worker engine.

On the CPU (``--device cpu``) the CPU is the device, so the ``workers`` processes do all of an
image: decode, resize, maps (once), every setting, the rows; the main process only writes. This
spreads the heavy work over every core, as ``apt-viz run`` does, without its files.

With a GPU the work is split where the hardware is:

    inputs --> worker processes --> size groups --> GPU --> one writer
               (decode, resize)     (batches)       (score once, select every setting)

- the workers decode and resize and write the pixels into slots of a shared memory block
  (:class:`~apt_viz.stats.slots.PixelSlots`): the main process reads them in place instead of
  receiving 3 MB per image through a pipe. The slots are the memory budget: an input is started
  only when one is free;
- the main process scores each batch of same-size images in one call on the GPU and selects every
  setting from the same maps (:class:`~apt_viz.stats.scoring.BatchScorer`).

Either way the workers are a :class:`~apt_viz.batch.workers.WorkerPool`, as for ``run``: at most
``2 x workers`` inputs are in flight (and, batched, ``2 x batch size`` wait for their batch), so
memory does not grow with the dataset; a worker that dies (killed, out of memory, a decoder's
crash) is replaced, and the input it was handling gets error rows marked internal (exit 3) while
every other input completes. One writer (:class:`~apt_viz.stats.table.StatsTable`) commits row
groups as it goes and merges them into the output file at the end. A first Ctrl-C / SIGTERM stops
taking new inputs, finishes the images in flight and writes the table of what is done (exit 130);
a second one aborts at once, keeping the committed rows. ``--resume`` completes either, and
retries the error rows.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..batch.failures import failure_of
from ..batch.workers import WorkerPool
from .decode import Decoded, decode
from .rows import Row, error_row, record_row
from .scoring import BatchScorer, Pending, SizeBatcher, failed_rows
from .settings import StatsPlan
from .slots import PixelSlots
from .table import StatsTable

Advance = Callable[[int], None]
Scoring = Literal["workers", "batched"]
Item = tuple[str, tuple[int, ...]]  # (path, indices of the settings it still needs)


@dataclass
class RunReport:
    """What a run did (the table itself holds the results)."""

    inputs: int  # inputs given
    processed: int = 0  # inputs handled in this run
    failed: int = 0  # of those, inputs with an error row (bad input or internal error)
    internal_errors: int = 0  # failures that are bugs in apt-viz (exit 3)
    skipped: int = 0  # inputs whose every setting was already in the table (--resume)
    rows: int = 0  # rows in the table written
    seconds: float = 0.0  # wall time of the run (start-up included)
    interrupted: bool = False

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def run_local(
    plan: StatsPlan,
    paths: Sequence[str],
    output: str,
    *,
    workers: int = 1,
    batch_size: int = 8,
    resume: bool = False,
    row_group_size: int = 4096,
    progress: Callable[[int], contextlib.AbstractContextManager[Advance]] | None = None,
    stop: Any = None,
    started: float | None = None,
    scoring: Scoring | None = None,
) -> RunReport:
    """Compute the rows of every (path, setting) and write them to ``output`` (one Parquet file).

    Args:
        plan: Image settings, device and selection settings.
        paths: The inputs (local files).
        output: The Parquet file.
        workers: Worker processes.
        batch_size: Images per scoring call (same-size images; batched scoring only).
        resume: Add to ``output`` and to an interrupted run's parts instead of starting over.
        row_group_size: Rows per committed part (the most a kill can lose is about this many).
        progress: ``progress(total)`` -> context manager yielding ``advance(n)`` (e.g. a progress bar).
        stop: Truthy once the run should stop taking new inputs (a :class:`~apt_viz.batch.workers.StopFlag`).
        started: ``time.perf_counter()`` at the start of the command (for images/s; default: now).
        scoring: ``workers`` (each worker does all of an image) or ``batched`` (the main process
            scores batches on the device); None: batched on a GPU, workers on the CPU.

    Returns:
        The :class:`RunReport`.

    Raises:
        StatsTableError: the output cannot be written as asked (before any work is done).
    """
    from .. import analysis  # noqa: F401 - torch and Pillow, imported before the workers fork: they inherit them

    started = time.perf_counter() if started is None else started
    report = RunReport(inputs=len(paths))
    workers = max(1, workers)
    # the fidelity baselines resize the original image, which only the workers hold
    scoring = scoring or ("workers" if plan.config.device == "cpu" or plan.fidelity else "batched")
    slots = PixelSlots(2 * workers + 3 * batch_size, 3 * plan.config.max_pixels) if scoring == "batched" else None
    task: Callable[[Any], Any] = DecodeTask(plan, slots) if slots is not None else RowsTask(plan)
    # The workers are forked now, with torch and Pillow imported, before the table opens (pyarrow
    # threads) or a CUDA context exists.
    with WorkerPool(task, workers) as pool, StatsTable(output, plan, resume=resume,
                                                       row_group_size=row_group_size) as table:
        done = table.done()
        todo: list[Item] = []
        for path in paths:
            needed = tuple(i for i, label in enumerate(plan.labels) if (path, label) not in done)
            if needed:
                todo.append((path, needed))
            else:
                report.skipped += 1
        del done
        progress = progress or _no_progress
        with progress(len(todo)) as advance, _threads_for(plan, workers, scoring):
            try:
                if slots is not None:
                    _run_batched(plan, todo, pool, slots, table, report, advance, batch_size, stop)
                else:
                    _run_in_workers(plan, todo, pool, table, report, advance, stop)
            except KeyboardInterrupt:  # a second Ctrl-C: the committed parts stay for --resume
                report.interrupted = True
                report.seconds = time.perf_counter() - started
                raise
        report.interrupted = bool(stop) and report.processed < len(todo)
        if report.processed != len(todo) and not report.interrupted:
            raise RuntimeError(f"the pipeline handled {report.processed} of {len(todo)} inputs")
        report.rows = table.finish()
    report.seconds = time.perf_counter() - started
    return report


# --- each worker does all of an image (the CPU) -----------------------------------------------------

@dataclass
class ImageRows:
    """A worker's result for one input: its rows, and whether it failed (and why)."""

    path: str
    rows: list[Row] = field(default_factory=list)
    failed: bool = False
    internal: bool = False


def image_rows(path: str, needed: Sequence[int], plan: StatsPlan) -> ImageRows:
    """The rows of one input (the worker task on the CPU).

    The image is analysed once (:func:`apt_viz.analysis.analyze_image`, as ``apt-viz run`` does) and
    every needed setting is selected from its maps (:meth:`~apt_viz.analysis.ImageAnalysis.reselect`).

    Args:
        path: The input.
        needed: Indices into ``plan.settings`` of the settings to compute.
        plan: The run.

    Returns:
        The :class:`ImageRows`; a bad input (or a bug) gives error rows, it never raises.
    """
    from ..analysis import analyze_image
    from ..fidelity import measure_fidelity
    from ..imaging import load_image
    from ..report.records import stats_record
    from .masks import encode_masks

    original_hw = None
    try:
        image = load_image(path, plan.max_image_pixels)
        original_hw = (image.height, image.width)
        first = analyze_image(image, plan.configs[needed[0]], source=path)
        rows = []
        for index in needed:
            setting = plan.settings[index]
            analysis = first if index == needed[0] else first.reselect(
                method=setting.method, alpha=plan.configs[index].alpha, thresholds=setting.thresholds,
                budget_unit=setting.budget_unit)
            masks = encode_masks({size: m[None] for size, m in analysis.masks.items()})[0] if plan.save_masks else None
            fidelity = measure_fidelity(analysis, image).to_dict() if plan.fidelity else None
            rows.append(record_row(stats_record(analysis, fidelity), setting, masks))
        return ImageRows(path, rows)
    except Exception as exc:
        failure = failure_of(path, exc, plan.debug)
        rows = [error_row(path, failure.error, plan.settings[index], plan, original_hw) for index in needed]
        return ImageRows(path, rows, failed=True, internal=failure.kind == "internal")


@dataclass(frozen=True)
class RowsTask:
    """The worker task on the CPU: :func:`image_rows` of one (path, needed settings)."""

    plan: StatsPlan

    def __call__(self, item: Item) -> ImageRows:
        return image_rows(item[0], item[1], self.plan)


def _run_in_workers(plan: StatsPlan, todo: Sequence[Item], pool: WorkerPool[Item, ImageRows], table: StatsTable,
                    report: RunReport, advance: Advance, stop: Any) -> None:
    for done in pool.imap(todo, go_on=lambda: not stop):
        path, needed = done.item
        result = done.value
        if done.error is not None or result is None:  # the worker died on it (or the task raised): a bug
            error = failure_of(path, done.error or RuntimeError("no result"), plan.debug).error
            result = ImageRows(path, [error_row(path, error, plan.settings[index], plan) for index in needed],
                               failed=True, internal=True)
        table.add(result.rows)
        report.processed += 1
        report.failed += result.failed
        report.internal_errors += result.internal
        advance(1)


# --- workers decode, the main process scores batches (a GPU) ----------------------------------------

@dataclass(frozen=True)
class DecodeTask:
    """The worker task of batched scoring: decode and resize one path, its pixels into a shared slot.

    Workers are forked, so the slots' memory is the parent's (the task is never pickled).
    """

    plan: StatsPlan
    slots: PixelSlots

    def __call__(self, payload: tuple[str, int]) -> Decoded:
        path, slot = payload
        decoded = decode(path, self.plan.config, self.plan.max_image_pixels, None, self.plan.debug)
        return self.slots.put(decoded, slot)


def _run_batched(plan: StatsPlan, todo: Sequence[Item], pool: WorkerPool[tuple[str, int], Decoded],
                 slots: PixelSlots, table: StatsTable, report: RunReport, advance: Advance, batch_size: int,
                 stop: Any) -> None:
    # At most 2 * batch_size images wait for their batch, and 2 per worker are in flight: together
    # fewer than the slots, so an input can always be started.
    batcher = SizeBatcher(batch_size, max_waiting=2 * batch_size)
    scorer = BatchScorer(plan)

    def payload(item: Item) -> tuple[str, int] | None:
        slot = slots.take()
        return None if slot is None else (item[0], slot)

    def emit(batch: list[Pending]) -> None:
        rows = scorer(batch)
        slots.release(item.slot for item in batch)
        table.add(rows)
        report.processed += len(batch)
        report.failed += len({row["path"] for row in rows if row["error"] is not None})
        advance(len(batch))

    for done in pool.imap(todo, payload=payload, go_on=lambda: not stop):
        (path, needed), (_, slot) = done.item, done.payload
        decoded = done.value
        if done.error is not None or decoded is None:  # the worker died on it (or the task raised): a bug
            error = failure_of(path, done.error or RuntimeError("no result"), plan.debug).error
            decoded = Decoded(path, error=error, internal=True, slot=slot)
        pixels = slots.pixels(decoded)
        if pixels is None or decoded.original_hw is None:
            slots.release([slot])
            table.add(failed_rows(decoded, needed, plan))
            report.processed += 1
            report.failed += 1
            report.internal_errors += decoded.internal
            advance(1)
            continue
        for batch in batcher.add(Pending(decoded.path, decoded.original_hw, pixels, needed, slot)):
            emit(batch)
    for batch in batcher.drain():
        emit(batch)
    report.internal_errors += scorer.internal_errors


@contextlib.contextmanager
def _threads_for(plan: StatsPlan, workers: int, scoring: Scoring) -> Iterator[None]:
    """When the main process scores on the CPU, it uses the cores the workers leave free (at least one):
    more threads than free cores only spin against the workers."""
    import torch

    if plan.config.device != "cpu" or scoring != "batched":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _no_progress(_total: int) -> Iterator[Advance]:
    yield lambda _n: None
