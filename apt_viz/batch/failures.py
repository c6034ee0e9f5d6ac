"""One failure classifier for every command: what went wrong with an input, and whose fault it is.

- An unusable input (:data:`apt_viz.imaging.INPUT_ERRORS`: unreadable, truncated, a refused size;
  or an output that cannot be written) is that input's failure: the run goes on and exits 1.
- Anything else is an internal error, a bug in apt-viz: the run goes on and exits 3. A worker
  process that dies while it handles an input (killed, out of memory, a crash in a decoder) is one
  too (:class:`WorkerDied`), and so is an exception a task let escape (:class:`TaskError`).
- Ctrl-C and SIGTERM are not failures of an input: they stop the run (exit 130).

:func:`failure_of` turns an exception into the input's one-line :class:`~apt_viz.report.summary.Failure`;
``run``, ``sweep``, ``compare`` and ``stats`` (its error rows) all call it. The exit code of a run
is :func:`apt_viz.cli.app.exit_code` of its counts.
"""
from __future__ import annotations

import traceback

from ..report.summary import Failure


class WorkerDied(RuntimeError):
    """The worker process running a task ended without answering: killed, out of memory, or a crash
    in native code (a decoder's segfault). Its message says how it ended."""


class TaskError(RuntimeError):
    """A task raised in a worker process (tasks report unusable inputs themselves, so this is a bug).

    Args:
        kind: The exception's type name.
        message: ``str()`` of the exception.
        details: The worker's traceback, shown with ``--debug``.
    """

    def __init__(self, kind: str, message: str, details: str = "") -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.details = kind, message, details

    def __reduce__(self) -> tuple[type[TaskError], tuple[str, str, str]]:  # sent back from the worker
        return TaskError, (self.kind, self.message, self.details)


def is_input_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the input is unusable (rather than a bug in apt-viz)."""
    from ..imaging import INPUT_ERRORS

    return isinstance(exc, INPUT_ERRORS)


def failure_of(path: str, exc: BaseException, debug: bool = False) -> Failure:
    """The one-line failure of ``path``: an unusable input, or an internal error.

    Args:
        path: The input.
        exc: What went wrong (call it inside the ``except`` block for the traceback under ``debug``).
        debug: Append the traceback to an internal error.

    Returns:
        A :class:`Failure` of kind ``input`` or ``internal``; its message starts with ``path``.
    """
    if is_input_error(exc):
        message = str(exc)
        return Failure(path, message if message.startswith(path) else f"{path}: {message}")
    if isinstance(exc, WorkerDied):
        return Failure(path, f"{path}: internal error: {exc}", kind="internal")
    if debug:
        trace = exc.details if isinstance(exc, TaskError) else traceback.format_exc()
        detail = f"\n{trace}"
    else:
        detail = " (rerun with --debug for the traceback)"
    reason = str(exc) if isinstance(exc, TaskError) else f"{type(exc).__name__}: {exc}"
    return Failure(path, f"{path}: internal error: {reason}{detail}", kind="internal")


def output_failure(path: str, folder: str, exc: OSError) -> Failure:
    """The failure of an input whose output cannot be written (disk full, permissions): an input failure."""
    return Failure(path, f"{path}: cannot write {folder}: {exc.strerror or exc}")
