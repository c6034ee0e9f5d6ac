"""The worker engine: one pool of worker processes for ``run``, ``sweep``, ``compare`` and ``stats``.

A :class:`WorkerPool` runs one picklable task on many payloads in worker processes:

- **Bounded submission.** Each worker holds at most ``per_worker`` tasks (the one it runs and the
  next), so at most ``per_worker x workers`` inputs are in flight: memory does not grow with the
  dataset, and a stop request waits for only a few inputs.
- **Workers die with their parent**, even when it is SIGKILLed (Linux ``PR_SET_PDEATHSIG``), and
  leave stopping to it: they ignore SIGINT and SIGTERM, so an input in flight always finishes.
  Each uses one torch thread: the pool is the parallelism.
- **A dead worker is replaced.** Each worker has its own pipe and runs its tasks in the order it
  got them, so when one dies (killed, out of memory, a segfault in a decoder) the pool knows which
  input it was handling: that one input is reported as :class:`~apt_viz.batch.failures.WorkerDied`
  (an internal error, exit 3), the task queued behind it goes to another worker, a new worker takes
  the dead one's place, and the run goes on with every other input.
- A task that raises is reported as :class:`~apt_viz.batch.failures.TaskError` (tasks turn unusable
  inputs into results themselves, so an escaped exception is a bug).

Workers are forked by default: they start at once with everything the parent imported. CUDA
cannot survive a fork, so a pool whose tasks use it spawns them (the task is then pickled once).

:class:`StopFlag` and :func:`graceful_stop` give every command the same Ctrl-C semantics: the
first SIGINT/SIGTERM stops submitting (the inputs in flight finish, exit 130); a second one raises
``KeyboardInterrupt`` at once and the pool kills its workers.
"""
from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from .failures import TaskError, WorkerDied

if TYPE_CHECKING:  # pragma: no cover
    from multiprocessing.context import ForkContext, SpawnContext
    from multiprocessing.process import BaseProcess

I = TypeVar("I")  # noqa: E741 - an input as the caller knows it
P = TypeVar("P")  # the payload sent to a worker
R = TypeVar("R")  # what the task returns

StartMethod = Literal["fork", "spawn"]
_POLL_SECONDS = 0.2  # how often a waiting pool looks at its stop flag


@dataclass
class Done(Generic[I, P, R]):
    """One finished input: the task's value, or why there is none (``error``)."""

    item: I
    payload: P
    value: R | None = None
    error: WorkerDied | TaskError | None = None


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    queue: deque[int] = field(default_factory=deque)  # ids of the tasks sent to it, oldest (running) first


class WorkerPool(Generic[P, R]):
    """Worker processes that run ``task`` on payloads (see the module docstring).

    Args:
        task: Picklable callable, payload -> result; it should not raise (a raise is a :class:`TaskError`).
        workers: Number of worker processes.
        start_method: ``fork`` (default; workers inherit the parent's imports and memory, e.g. shared
            pixel buffers) or ``spawn`` (for tasks that use CUDA).
        per_worker: Tasks sent to a worker before it answers (the one it runs, and the next ones).
    """

    def __init__(self, task: Callable[[P], R], workers: int, *, start_method: StartMethod = "fork",
                 per_worker: int = 2) -> None:
        self.task = task
        self.size = max(1, workers)
        self.per_worker = max(1, per_worker)
        self.restarts = 0  # workers replaced after dying
        self._idle_deaths = 0  # workers that died holding no task, since the last result
        self._context: ForkContext | SpawnContext = (
            multiprocessing.get_context("fork") if start_method == "fork" else multiprocessing.get_context("spawn"))
        self._ids = itertools.count()
        self._tasks: dict[int, tuple[Any, P]] = {}  # id -> (item, payload) of every task sent, not yet done
        self._retry: deque[int] = deque()  # ids to send again: they were queued behind a task that killed a worker
        self._workers: list[_Worker] = []
        try:
            for _ in range(self.size):
                self._workers.append(self._start())
        except BaseException:
            self.close(kill=True)
            raise

    @property
    def pids(self) -> list[int]:
        """The process ids of the current workers."""
        return [worker.process.pid for worker in self._workers if worker.process.pid is not None]

    @property
    def in_flight(self) -> int:
        return sum(len(worker.queue) for worker in self._workers)

    def imap(self, items: Iterable[I], *, payload: Callable[[I], P | None] | None = None,
             go_on: Callable[[], bool] = lambda: True) -> Iterator[Done[I, P, R]]:
        """Run the task on every item; yields a :class:`Done` per item as it finishes (in any order).

        Args:
            items: The inputs (read lazily, as workers have room).
            payload: item -> what is sent to the task, or None for "not now" (e.g. no free buffer;
                asked again after the next result). Default: the item itself.
            go_on: Items are submitted while it returns true; once false, the tasks in flight finish
                and the iteration ends (the items not started are not yielded).

        Yields:
            One :class:`Done` per item started. An item whose worker died has ``error``
            :class:`WorkerDied`; one whose task raised has :class:`TaskError`.
        """
        source = iter(items)
        held: Any = _END  # the next item, when its payload said "not now"
        more = True  # the source may hold more items
        while True:
            while go_on() and (worker := self._roomiest()) is not None:
                if self._retry:
                    yield from self._send(worker, self._retry.popleft())
                    continue
                if held is _END:
                    held = next(source, _END) if more else _END
                    if held is _END:
                        more = False
                        break
                sent = held if payload is None else payload(held)
                if sent is None:
                    break
                task_id = next(self._ids)
                self._tasks[task_id] = (held, sent)
                held = _END
                yield from self._send(worker, task_id)
            if not self.in_flight:
                if not go_on() or (not more and held is _END and not self._retry):
                    for task_id in self._retry:  # stopped before they could be sent again: not started
                        del self._tasks[task_id]
                    self._retry.clear()
                    return
                if held is not _END and not self._retry:
                    raise RuntimeError("the payload of an input was refused with no task in flight")
                continue
            yield from self._collect()

    def _collect(self) -> Iterator[Done[Any, P, R]]:
        """Wait for results (or a worker's death) and yield what finished."""
        waited = [worker.conn for worker in self._workers] + [worker.process.sentinel for worker in self._workers]
        ready = set(wait(waited, timeout=_POLL_SECONDS))
        for worker in list(self._workers):
            if worker.conn in ready:
                yield from self._receive(worker)
            if worker.process.sentinel in ready or not worker.process.is_alive():
                yield from self._receive(worker)  # what it sent before it ended
                yield from self._lost(worker)

    def _receive(self, worker: _Worker) -> Iterator[Done[Any, P, R]]:
        while worker.queue:
            try:
                if not worker.conn.poll():
                    return
                task_id, ok, value = worker.conn.recv()
            except (EOFError, OSError):  # it died, maybe in the middle of a message
                return
            if task_id != worker.queue[0]:
                raise RuntimeError(f"worker {worker.process.pid} answered task {task_id}, expected {worker.queue[0]}")
            worker.queue.popleft()
            self._idle_deaths = 0
            item, sent = self._tasks.pop(task_id)
            yield Done(item, sent, value if ok else None, None if ok else value)

    def _lost(self, worker: _Worker) -> Iterator[Done[Any, P, R]]:
        """Replace a dead worker; its running task failed, the ones queued behind it are sent again."""
        worker.process.join(timeout=5)
        if worker.process.is_alive():  # its pipe broke but it still runs: it cannot be used any more
            worker.process.kill()
            worker.process.join()
        code = worker.process.exitcode
        worker.conn.close()
        if not worker.queue:
            self._idle_deaths += 1
            if self._idle_deaths > 2 * self.size + 2:  # not an input's doing: starting workers is broken
                raise RuntimeError(f"worker processes keep dying before they take an input (exit code {code})")
        self._workers[self._workers.index(worker)] = self._start()
        self.restarts += 1
        if not worker.queue:
            return
        how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 and -code in _SIGNALS
               else f"exit code {code}")
        killer = worker.queue.popleft()
        self._retry.extend(worker.queue)
        item, sent = self._tasks.pop(killer)
        yield Done(item, sent, error=WorkerDied(f"the worker process handling it died ({how})"))

    def _roomiest(self) -> _Worker | None:
        worker = min(self._workers, key=lambda w: len(w.queue))
        return worker if len(worker.queue) < self.per_worker else None

    def _send(self, worker: _Worker, task_id: int) -> Iterator[Done[Any, P, R]]:
        """Send a task; a worker found dead on the way is replaced and the task goes to the retries."""
        try:
            worker.conn.send((task_id, self._tasks[task_id][1]))
        except OSError:
            self._retry.appendleft(task_id)
            yield from self._lost(worker)
            return
        worker.queue.append(task_id)

    def _start(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        # A forked child inherits the parent's ends of the other workers' pipes: it closes them.
        inherited = [worker.conn for worker in self._workers] if self._context.get_start_method() == "fork" else []
        process = self._context.Process(target=_worker_main, args=(child_end, self.task, os.getpid(), inherited),
                                        daemon=True, name="apt-viz worker")
        process.start()
        child_end.close()
        return _Worker(process, parent_end)

    def close(self, *, kill: bool = False) -> None:
        """Stop the workers: ask them to exit (``kill``: SIGKILL them at once), then reap them."""
        for worker in self._workers:
            with contextlib.suppress(OSError, ValueError):
                if kill:
                    worker.process.kill()
                else:
                    worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=None if kill else 10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []

    def __enter__(self) -> WorkerPool[P, R]:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(kill=exc_type is not None)


_END: Any = object()
_SIGNALS = {int(sig) for sig in signal.Signals}


def _worker_main(conn: Connection, task: Callable[[Any], Any], parent: int, inherited: list[Connection]) -> None:
    """A worker process: run tasks in the order they come until told to stop (None) or orphaned."""
    for other in inherited:
        other.close()
    _setup_worker(parent)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task_id, payload = message
        try:
            answer = (task_id, True, task(payload))
        except Exception as exc:
            answer = (task_id, False, TaskError(type(exc).__name__, str(exc), traceback.format_exc()))
        try:
            conn.send(answer)
        except Exception as exc:  # a result that cannot be pickled
            conn.send((task_id, False, TaskError(type(exc).__name__, str(exc), traceback.format_exc())))


def _setup_worker(parent: int) -> None:
    """Ignore SIGINT/SIGTERM (the parent decides when to stop), die with the parent, one torch thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(1)


def _die_with_parent(parent: int) -> None:
    """Linux: ask the kernel to SIGKILL this process when its parent dies (no orphaned workers)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


# --- stopping ----------------------------------------------------------------------------------------

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
