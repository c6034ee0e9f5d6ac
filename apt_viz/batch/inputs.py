"""Input discovery: files and folders on the command line -> images with unique output-folder names."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

NAME_SEPARATOR = "__"  # replaces "/" in a folder-relative path: sub/cat.jpg -> sub__cat.jpg


def image_extensions() -> frozenset[str]:
    """Extensions Pillow can open (".jpg", ".png", ".gif", ...): what a folder scan picks up."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


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
    extensions: frozenset[str] | None = None  # every Pillow plugin is loaded (~50 ms) only to scan a folder
    excluded = os.path.realpath(exclude) if exclude is not None else None
    found: list[tuple[str, str]] = []
    any_folder = False
    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            any_folder = True
            extensions = extensions or image_extensions()
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
