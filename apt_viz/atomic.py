"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

Every artifact is written to a temporary file in the destination folder (same file system, so the
final ``os.replace`` is atomic), flushed and fsynced, then renamed over the destination. If
anything fails or is interrupted before the rename, the temporary file is removed.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

# Temporary files are hidden and carry this suffix, so a crashed run's leftovers are easy to find.
TEMP_SUFFIX = ".apt-tmp"

PathLike = str | os.PathLike


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; artifacts get the usual 0o666 minus the umask.
FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` is given). Parent folders
    are created. On an exception (KeyboardInterrupt included) the temporary file is deleted and
    ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMP_SUFFIX, dir=folder)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise


def write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: PathLike, obj: Any, *, indent: int = 2) -> None:
    """``obj`` as JSON (strict: NaN/inf are refused rather than written as invalid JSON)."""
    write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def save_image(image: Image.Image, path: PathLike, **params: Any) -> None:
    """Save a PIL image atomically; the format comes from ``path``'s extension (Pillow's rule)."""
    from PIL import Image

    extension = os.path.splitext(os.fspath(path))[1].lower()
    Image.preinit()  # the common formats (JPEG, PNG, ...); every plugin only when needed (~50 ms)
    image_format = Image.EXTENSION.get(extension) or Image.registered_extensions().get(extension)
    if image_format is None:
        raise ValueError(f"{os.fspath(path)}: unknown image extension {extension!r}")
    with atomic_open(path, "wb") as handle:
        image.save(handle, format=image_format, **params)


def leftover_temp_files(folder: PathLike) -> list[str]:
    """Temporary files under ``folder`` that an interrupted write did not clean up (normally none)."""
    found: list[str] = []
    for root, _dirs, files in os.walk(os.fspath(folder)):
        found.extend(os.path.join(root, name) for name in files if name.endswith(TEMP_SUFFIX))
    return sorted(found)
