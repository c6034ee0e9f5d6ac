"""The local ``stats`` engine: a streaming pipeline on one machine.

On the CPU (``--device cpu``) the CPU is the device, so the ``workers`` processes do all of an
image: decode, resize, maps (once), every setting, the rows; the main process only writes. This
spreads the heavy work over every core, as ``apt-viz run`` does, without its files.

With a GPU the work is split where the hardware is:

    inputs --> worker processes --> size groups --> GPU --> one writer
               (decode, resize)     (batches)       (score once, select every setting)

- the workers decode and resize and write the pixels into slots of a shared memory block
  (:class:`PixelSlots`): the main process reads them in place instead of receiving 3 MB per image
  through a pipe. The slots are the memory budget: an input is started only when one is free;
- the main process scores each batch of same-size images in one call on the GPU and selects every
  setting from the same maps (:class:`~apt_viz.stats.scoring.BatchScorer`).

Either way memory does not grow with the dataset: at most ``2 x workers`` inputs are in flight
(and, batched, ``2 x batch size`` wait for their batch). One writer
(:class:`~apt_viz.stats.table.StatsTable`) commits row groups as it goes and merges them into the
output file at the end. A first Ctrl-C / SIGTERM stops taking new inputs, finishes the images in
flight and writes the table of what is done (exit 130); a second one aborts at once, keeping the
committed rows. ``--resume`` completes either.
"""
from __future__ import annotations

import concurrent.futures as futures
import contextlib
import math
import mmap
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .decode import Decoded, decode
from .rows import Row, error_row, record_row
from .scoring import BatchScorer, Pending, SizeBatcher, failed_rows
from .settings import StatsPlan
from .table import StatsTable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

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
        stop: Truthy once the run should stop taking new inputs (a :class:`~apt_viz.batch.pool.StopFlag`).
        started: ``time.perf_counter()`` at the start of the command (for images/s; default: now).
        scoring: ``workers`` (each worker does all of an image) or ``batched`` (the main process
            scores batches on the device); None: batched on a GPU, workers on the CPU.

    Returns:
        The :class:`RunReport`.

    Raises:
        StatsTableError: the output cannot be written as asked (before any work is done).
    """
    started = time.perf_counter() if started is None else started
    report = RunReport(inputs=len(paths))
    workers = max(1, workers)
    scoring = scoring or ("workers" if plan.config.device == "cpu" else "batched")
    slots = PixelSlots(2 * workers + 3 * batch_size, 3 * plan.config.max_pixels) if scoring == "batched" else None
    with _worker_pool(workers, slots) as pool, StatsTable(output, plan, resume=resume,
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
                if scoring == "batched":
                    _run_batched(plan, todo, pool, table, report, advance, batch_size, stop)
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
    from ..batch.pool import failure_of
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
                method=setting.method, alpha=plan.configs[index].alpha, thresholds=setting.thresholds)
            masks = encode_masks({size: m[None] for size, m in analysis.masks.items()})[0] if plan.save_masks else None
            rows.append(record_row(stats_record(analysis), setting, masks))
        return ImageRows(path, rows)
    except Exception as exc:
        failure = failure_of(path, exc, plan.debug)
        rows = [error_row(path, failure.error, plan.settings[index], plan, original_hw) for index in needed]
        return ImageRows(path, rows, failed=True, internal=failure.kind == "internal")


def _run_in_workers(plan: StatsPlan, todo: Sequence[Item], pool: _WorkerPool, table: StatsTable,
                    report: RunReport, advance: Advance, stop: Any) -> None:
    def submit(item: Item) -> tuple[futures.Future[Any], None]:
        return pool.submit(image_rows, item[0], item[1], plan), None

    for (path, needed), _, result, error in pool.imap(iter(todo), submit, lambda: not stop, 2 * pool.workers):
        if error is not None:
            result = ImageRows(path, [error_row(path, _worker_error(path, error), plan.settings[index], plan)
                                      for index in needed], failed=True, internal=True)
        table.add(result.rows)
        report.processed += 1
        report.failed += result.failed
        report.internal_errors += result.internal
        advance(1)


# --- workers decode, the main process scores batches (a GPU) ----------------------------------------

def _run_batched(plan: StatsPlan, todo: Sequence[Item], pool: _WorkerPool, table: StatsTable,
                 report: RunReport, advance: Advance, batch_size: int, stop: Any) -> None:
    slots = pool.slots
    if slots is None:
        raise RuntimeError("batched scoring needs the shared-memory slots")
    # At most 2 * batch_size images wait for their batch, and 2 per worker are in flight: together
    # fewer than the slots, so an input can always be started.
    batcher = SizeBatcher(batch_size, max_waiting=2 * batch_size)
    scorer = BatchScorer(plan)

    def submit(item: Item) -> tuple[futures.Future[Any], int] | None:
        slot = slots.take()
        return None if slot is None else (pool.submit(_decode_into_slot, item[0], slot, plan), slot)

    def emit(batch: list[Pending]) -> None:
        rows = scorer(batch)
        slots.release(item.slot for item in batch)
        table.add(rows)
        report.processed += len(batch)
        report.failed += len({row["path"] for row in rows if row["error"] is not None})
        advance(len(batch))

    for (path, needed), slot, decoded, error in pool.imap(iter(todo), submit, lambda: not stop, 2 * pool.workers):
        if error is not None:
            decoded = Decoded(path, error=_worker_error(path, error), internal=True, slot=slot)
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


class PixelSlots:
    """Fixed-size slots of anonymous shared memory for the decoded pixels.

    The block is mapped before the workers are forked, so they inherit it (no name in /dev/shm that
    a killed run could leave behind; the kernel frees it with the last process). A worker writes an
    image into the slot it was given; the main process reads it there and releases the slot once
    the image is scored. An image larger than a slot (``--no-resize``) travels through the pipe.

    Args:
        count: Number of slots.
        slot_bytes: Bytes per slot (3 per pixel).
    """

    def __init__(self, count: int, slot_bytes: int) -> None:
        self.count = count
        self.slot_bytes = slot_bytes
        self.buffer = mmap.mmap(-1, count * slot_bytes)
        self._free = list(range(count - 1, -1, -1))

    def take(self) -> int | None:
        """A free slot, or None when all are in use."""
        return self._free.pop() if self._free else None

    def release(self, slots: Iterable[int | None]) -> None:
        self._free.extend(slot for slot in slots if slot is not None)

    def view(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        """The uint8 array of ``shape`` in ``slot`` (no copy)."""
        import numpy as np

        return np.frombuffer(self.buffer, dtype=np.uint8, count=math.prod(shape),
                             offset=slot * self.slot_bytes).reshape(shape)

    def put(self, decoded: Decoded, slot: int) -> Decoded:
        """In a worker: move ``decoded``'s pixels into ``slot`` when they fit."""
        if decoded.pixels is not None and decoded.pixels.nbytes <= self.slot_bytes:
            self.view(slot, decoded.pixels.shape)[...] = decoded.pixels
            decoded.shape, decoded.pixels = decoded.pixels.shape, None
        decoded.slot = slot
        return decoded

    def pixels(self, decoded: Decoded) -> np.ndarray | None:
        """In the main process: the pixels of ``decoded``, in its slot or sent along."""
        if decoded.pixels is not None or decoded.shape is None or decoded.slot is None:
            return decoded.pixels
        return self.view(decoded.slot, decoded.shape)


_SLOTS: PixelSlots | None = None  # set in the main process before the workers fork; inherited by them


def _decode_into_slot(path: str, slot: int, plan: StatsPlan) -> Decoded:
    """The worker task of batched scoring: decode and resize ``path``, pixels into ``slot``."""
    decoded = decode(path, plan.config, plan.max_image_pixels, None, plan.debug)
    return _SLOTS.put(decoded, slot) if _SLOTS is not None else decoded


# --- the worker processes -----------------------------------------------------------------------------

class _WorkerPool:
    """Worker processes (forked, so they start at once with everything imported) and a bounded imap."""

    def __init__(self, workers: int, slots: PixelSlots | None) -> None:
        self.workers = workers
        self.slots = slots
        self._executor = self._start()

    def _start(self) -> futures.ProcessPoolExecutor:
        global _SLOTS
        from .. import analysis  # noqa: F401 - torch and Pillow imported once here, inherited by the forks

        # Started now, before the main process opens the table (pyarrow threads) or a CUDA context;
        # they inherit the slots.
        _SLOTS = self.slots
        executor = futures.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                               initializer=_worker_init)
        executor.submit(int).result()
        return executor

    def submit(self, function: Callable[..., Any], *args: Any) -> futures.Future[Any]:
        return self._executor.submit(function, *args)

    def imap(
        self,
        items: Iterator[Item],
        submit: Callable[[Item], tuple[futures.Future[Any], Any] | None],
        go_on: Callable[[], bool],
        limit: int,
    ) -> Iterator[tuple[Item, Any, Any, BaseException | None]]:
        """``(item, context, result, error)`` as tasks complete.

        ``submit(item)`` starts a task and returns its future and a context (None: not now, e.g. no
        free slot). Items are submitted while ``go_on()`` and fewer than ``limit`` are in flight.
        Ends when every item is done, or when ``go_on()`` turned false and those in flight are. When
        a worker dies (a decoder crash, or killed) every task of its pool fails with that error and
        a new pool goes on.
        """
        in_flight: dict[futures.Future[Any], tuple[Item, Any]] = {}
        exhausted = False
        waiting: Item | None = None
        while True:
            while not exhausted and go_on() and len(in_flight) < limit:
                item = waiting or next(items, None)
                if item is None:
                    exhausted = True
                    break
                started = submit(item)
                if started is None:
                    waiting = item
                    break
                waiting = None
                in_flight[started[0]] = (item, started[1])
            if not in_flight:
                return
            ready, _ = futures.wait(in_flight, timeout=0.2, return_when=futures.FIRST_COMPLETED)
            broken = False
            for future in ready:
                item, context = in_flight.pop(future)
                error = future.exception()
                broken = broken or isinstance(error, futures.process.BrokenProcessPool)
                yield item, context, None if error is not None else future.result(), error
            if broken:
                for future, (item, context) in in_flight.items():
                    error = future.exception() if future.done() else futures.process.BrokenProcessPool()
                    yield item, context, None, error
                in_flight.clear()
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._start()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _worker_error(path: str, error: BaseException) -> str:
    reason = ("the worker process handling it died" if isinstance(error, futures.process.BrokenProcessPool)
              else f"{type(error).__name__}: {error}")
    return f"{path}: internal error: {reason}"


@contextlib.contextmanager
def _worker_pool(workers: int, slots: PixelSlots | None) -> Iterator[_WorkerPool]:
    pool = _WorkerPool(workers, slots)
    try:
        yield pool
    finally:
        pool.close()


def _worker_init() -> None:
    """Workers leave stopping to the main process (SIGINT/SIGTERM ignored), die with it (even when it
    is SIGKILLed), and use one torch thread each: the pool is the parallelism."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    import torch

    torch.set_num_threads(1)


def _die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this process when its parent dies (no orphaned workers)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


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
