"""The inputs of a ``stats`` run: image files, folders, ``@list.txt`` files of paths, and remote URIs.

Paths are kept as written (a folder's images as ``folder/relative/path``, as ``apt-viz run``
records them), so the ``path`` column of a table matches ``stats.json``'s ``input`` and
``--resume`` recognises the rows of an earlier run given the same inputs. An input listed twice is
processed once.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

LIST_PREFIX = "@"


class StatsInputError(ValueError):
    """An argument that cannot be used at all (a usage error, not a per-image failure)."""


def is_remote(path: str) -> bool:
    """``s3://...``, ``gs://...``, ``https://...``: storage that only the Ray engine reads."""
    scheme, separator, _ = path.partition("://")
    return bool(separator) and scheme.isidentifier()


def read_list(list_path: str) -> list[str]:
    """The paths in a list file: one per line; blank lines and lines starting with ``#`` are skipped.

    Args:
        list_path: The list file (the argument without its ``@``).

    Returns:
        The paths, as if typed on the command line (relative to the current folder).

    Raises:
        StatsInputError: the list cannot be read.
    """
    try:
        with open(list_path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except (OSError, UnicodeDecodeError) as exc:
        raise StatsInputError(f"{LIST_PREFIX}{list_path}: cannot read the list ({exc})") from None
    return [line for line in lines if line and not line.startswith("#")]


def expand_stats_inputs(arguments: Sequence[str], recursive: bool = False,
                        exclude: str | None = None) -> list[str]:
    """Every input of a ``stats`` command line, in order, each once.

    Args:
        arguments: Image files, folders, ``@list.txt`` files and remote URIs.
        recursive: Also scan subfolders of folders.
        exclude: A path never taken as an input (the output table).

    Returns:
        The paths. A file named on the command line must exist; a file named in a list may be
        missing (it becomes an error row, so one stale entry does not stop a long run).

    Raises:
        StatsInputError: a missing file or folder on the command line, an unreadable list.
    """
    from ..batch.inputs import InputError

    found: list[str] = []
    for argument in arguments:
        if argument.startswith(LIST_PREFIX) and len(argument) > 1:
            listed = read_list(argument[len(LIST_PREFIX):])
            found.extend(_expand(listed, recursive, exclude, must_exist=False))
            continue
        try:
            found.extend(_expand([argument], recursive, exclude, must_exist=True))
        except InputError as exc:
            raise StatsInputError(str(exc)) from None
    excluded = os.path.realpath(exclude) if exclude else None
    unique = dict.fromkeys(path for path in found if excluded is None or is_remote(path)
                           or os.path.realpath(path) != excluded)
    return list(unique)


def _expand(paths: Iterable[str], recursive: bool, exclude: str | None, must_exist: bool) -> list[str]:
    from ..batch.inputs import expand_inputs

    out: list[str] = []
    for path in paths:
        if is_remote(path):
            out.append(path)
        elif os.path.isdir(path) or must_exist:
            items, _ = expand_inputs([path], recursive, exclude=exclude)
            out.extend(item.path for item in items)
        else:
            out.append(path)  # a listed file, checked when it is loaded
    return out
