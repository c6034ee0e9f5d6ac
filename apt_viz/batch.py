"""Running many images: inputs -> unique output folders -> artifacts, in a worker pool.

The main process expands the inputs, owns the progress display and collects results; each image
is analysed and written by :func:`process_image` (in the main process, or in a worker when
``workers > 1``). Every file is written atomically and ``stats.json`` last, so a folder with a
``stats.json`` is complete; that is what ``--skip-existing`` looks for. A first SIGINT/SIGTERM
stops submitting work and lets the images in flight finish; a second one aborts at once.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from .atomic import save_image, write_json
from .config import APTConfig
from .report import Failure

STATS_FILE = "stats.json"
HEATMAP_DIR = "01_heatmaps"
OVERLAY_PATH = os.path.join("02_patches_grid", "patches_visualization.jpg")
ORIGINAL_PATH = os.path.join("03_original_resized", "original_image.jpg")
RESIZED_PATH = os.path.join("03_original_resized", "resized_image.jpg")
NAME_SEPARATOR = "__"  # replaces "/" in a folder-relative path: sub/cat.jpg -> sub__cat.jpg
JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 1  # heatmaps are flat cells: level 1 is ~4x faster than 6 and nearly as small


def heatmap_path(size: int) -> str:
    return os.path.join(HEATMAP_DIR, f"importance_map_scale_{size}.png")


def image_extensions() -> frozenset[str]:
    """Extensions Pillow can open (".jpg", ".png", ".gif", ...): what a folder scan picks up."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


# --- inputs --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputItem:
    """One image to process and the name of its output folder."""

    path: str
    name: str


class InputError(ValueError):
    """A command-line input that cannot be used at all (a usage error, not a per-image failure)."""


def expand_inputs(
    paths: Sequence[str | os.PathLike], recursive: bool = False, exclude: str | os.PathLike | None = None
) -> tuple[list[InputItem], bool]:
    """Files named directly, plus the images inside folders; and whether any folder was given.

    A file is taken whatever its extension (so a broken one is reported, not skipped); a folder
    contributes its files with an image extension (sorted; subfolders with ``recursive``;
    hidden entries and the ``exclude`` folder, i.e. the output, are left out). Folder names are
    the file's path relative to the folder with ``/`` folded to ``__`` (``sub__cat.jpg``), a
    file's name is its base name; a name already taken gets ``~2``, ``~3``... in input order.
    """
    extensions = image_extensions()
    excluded = os.path.realpath(exclude) if exclude is not None else None
    found: list[tuple[str, str]] = []
    any_folder = False
    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            any_folder = True
            found.extend(
                (os.path.join(path, rel), rel.replace(os.sep, NAME_SEPARATOR))
                for rel in _folder_images(path, recursive, extensions, excluded)
            )
        elif os.path.exists(path):
            found.append((path, os.path.basename(path)))
        else:
            raise InputError(f"{path}: no such file or folder")
    return _unique_names(found), any_folder


def _folder_images(folder: str, recursive: bool, extensions: frozenset[str], excluded: str | None) -> list[str]:
    """Image files under ``folder`` as sorted relative paths."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(
            d for d in dirs
            if recursive and not d.startswith(".") and os.path.realpath(os.path.join(root, d)) != excluded
        )
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                found.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)


def _unique_names(found: Sequence[tuple[str, str]]) -> list[InputItem]:
    taken: set[str] = set()
    items = []
    for path, name in found:
        candidate, counter = name, 1
        while candidate in taken:
            counter += 1
            candidate = f"{name}~{counter}"
        taken.add(candidate)
        items.append(InputItem(path, candidate))
    return items


# --- one image -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobOptions:
    """How each image is processed (picklable: sent to the workers)."""

    config: APTConfig
    output: str
    stats_only: bool = False
    max_image_pixels: int | None = None
    debug: bool = False


@dataclass
class Outcome:
    """The result of one input: its stats dict, or a failure."""

    item: InputItem
    stats: dict[str, Any] | None = None
    failure: Failure | None = None
    skipped: bool = False


def process_image(item: InputItem, options: JobOptions) -> Outcome:
    """Analyse one image and write its folder (SPEC 7); a bad input becomes a one-line failure."""
    from .imaging import ImageLoadError, load_image
    from .pipeline import analyze_image

    folder = os.path.join(options.output, item.name)
    try:
        original = load_image(item.path, options.max_image_pixels)
        analysis = analyze_image(original, options.config, source=item.path)
    except ImageLoadError as exc:
        return Outcome(item, failure=Failure(item.path, str(exc)))
    except ValueError as exc:  # e.g. smart_resize refusing an extreme aspect ratio
        return Outcome(item, failure=Failure(item.path, f"{item.path}: {exc}"))
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop a folder run
        detail = f"\n{traceback.format_exc()}" if options.debug else ""
        return Outcome(item, failure=Failure(item.path, f"{item.path}: {type(exc).__name__}: {exc}{detail}"))

    try:
        artifacts = [] if options.stats_only else write_image_artifacts(analysis, original, folder)
        stats = {"name": item.name, **analysis.to_dict(), "artifacts": artifacts}
        write_json(os.path.join(folder, STATS_FILE), stats)  # last: marks the folder complete
    except OSError as exc:  # disk full, permissions: this input fails, the run goes on
        return Outcome(item, failure=Failure(item.path, f"{item.path}: cannot write {folder}: {exc.strerror or exc}"))
    return Outcome(item, stats=stats)


def write_image_artifacts(analysis: Any, original: Any, folder: str) -> list[str]:
    """Heatmaps, overlay, original and resized image of one analysis; returns their relative paths."""
    from .render import analysis_heatmaps, analysis_overlay

    written = []
    for size, picture in analysis_heatmaps(analysis).items():
        save_image(picture, os.path.join(folder, heatmap_path(size)), compress_level=PNG_COMPRESS_LEVEL)
        written.append(heatmap_path(size))
    save_image(analysis_overlay(analysis), os.path.join(folder, OVERLAY_PATH), quality=JPEG_QUALITY)
    save_image(original, os.path.join(folder, ORIGINAL_PATH), quality=JPEG_QUALITY)
    save_image(analysis.resized, os.path.join(folder, RESIZED_PATH), quality=JPEG_QUALITY)
    written += [OVERLAY_PATH, ORIGINAL_PATH, RESIZED_PATH]
    return [path.replace(os.sep, "/") for path in written]


def existing_stats(item: InputItem, output: str) -> dict[str, Any] | None:
    """The stats of an earlier complete run of ``item`` (None when missing or unreadable)."""
    try:
        with open(os.path.join(output, item.name, STATS_FILE), encoding="utf-8") as handle:
            stats = json.load(handle)
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) and "tokens" in stats else None


# --- many images ---------------------------------------------------------------------------------

@dataclass
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False

    @property
    def stats(self) -> list[dict[str, Any]]:
        return [outcome.stats for outcome in self.outcomes if outcome.stats is not None]

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


ProgressCallback = Callable[[Outcome], None]


@contextlib.contextmanager
def progress_display(console: Any, total: int, enabled: bool = True) -> Iterator[ProgressCallback]:
    """A rich progress bar with ETA on ``console``; yields the per-outcome callback for :func:`run_batch`."""
    if not enabled:
        yield lambda _outcome: None
        return
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("apt-viz", total=total)

        def tick(outcome: Outcome) -> None:
            progress.update(task, advance=1, description=outcome.item.name[:40])

        yield tick


def run_batch(
    items: Sequence[InputItem],
    options: JobOptions,
    *,
    workers: int = 1,
    skip_existing: bool = False,
    on_done: ProgressCallback | None = None,
    stop: StopFlag | None = None,
) -> BatchResult:
    """Process ``items`` (in a process pool when ``workers > 1``); results keep the input order.

    ``on_done`` is called in the main process after each input (for a progress bar). When
    ``stop`` becomes true no new image is started and the result is marked interrupted.
    """
    stop = stop if stop is not None else StopFlag()
    done: dict[int, Outcome] = {}
    todo: list[int] = []
    for index, item in enumerate(items):
        previous = existing_stats(item, options.output) if skip_existing else None
        if previous is not None:
            done[index] = Outcome(item, stats=previous, skipped=True)
            if on_done:
                on_done(done[index])
        else:
            todo.append(index)

    def finished(index: int, outcome: Outcome) -> None:
        done[index] = outcome
        if on_done:
            on_done(outcome)

    if workers <= 1 or len(todo) <= 1:
        for index in todo:
            if stop:
                break
            finished(index, process_image(items[index], options))
    else:
        _run_pool(items, todo, options, workers, finished, stop)
    interrupted = bool(stop) and len(done) < len(items)
    return BatchResult([done[i] for i in sorted(done)], interrupted=interrupted)


def _run_pool(
    items: Sequence[InputItem],
    todo: Sequence[int],
    options: JobOptions,
    workers: int,
    finished: Callable[[int, Outcome], None],
    stop: StopFlag,
) -> None:
    """Keep at most ``2 * workers`` images in flight, so a stop request waits for only a few."""
    import concurrent.futures as futures
    import multiprocessing

    from . import pipeline  # noqa: F401 - imported once here, inherited by forked workers

    # fork is fast (workers inherit the imported torch); CUDA cannot be used after a fork.
    method = "spawn" if options.config.device.startswith("cuda") else "fork"
    context = multiprocessing.get_context(method)
    pending = iter(todo)
    in_flight: dict[futures.Future, int] = {}
    with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        while True:
            while not stop and len(in_flight) < 2 * workers:
                index = next(pending, None)
                if index is None:
                    break
                in_flight[pool.submit(process_image, items[index], options)] = index
            if not in_flight:
                break
            ready, _ = futures.wait(in_flight, timeout=0.2, return_when=futures.FIRST_COMPLETED)
            for future in ready:
                index = in_flight.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died (e.g. out of memory)
                    path = items[index].path
                    outcome = Outcome(items[index], failure=Failure(path, f"{path}: worker failed: {exc}"))
                finished(index, outcome)


def _worker_init() -> None:
    """Workers ignore SIGINT/SIGTERM: the main process decides when to stop, so an image in flight
    always finishes (a Ctrl-C reaches the whole process group). Workers exit when the main process
    closes the pool. One torch thread each: the pool is the parallelism."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)
