"""The examples of an eval run: ``DATA`` as a JSONL file or a folder of images, read whole before any work.

A JSONL file holds one JSON object per line: ``image`` (a path relative to the file, or absolute),
``prompt`` and an optional ``answer`` (the gold answer: a string or a number); other keys are
ignored, blank lines skipped. A folder gives its images (sorted; hidden files and subfolders left
out), each with the one ``--prompt``. A line without a prompt takes ``--prompt`` too.

What makes the whole ``DATA`` unusable (no such path, a line that is not a JSON object or has no
``image``, no examples at all) is a :class:`DataError`, a usage error (exit 2). What makes one
example unusable (its image missing or unreadable, an empty prompt) is found when it runs and
gives that example error rows.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass


class DataError(ValueError):
    """``DATA`` cannot be read as examples (one line, naming the file and line)."""


@dataclass(frozen=True)
class Example:
    """One example of ``DATA``."""

    index: int  # position in DATA (0-based, blank lines not counted): the ``example`` column
    image: str  # as written in DATA (a folder's image: relative to the folder): the ``image`` column
    path: str  # where the image is read from
    prompt: str  # as given ("" when none): the ``prompt`` column
    gold: str | None  # the given answer, or None


def read_examples(data: str | os.PathLike, prompt: str | None = None) -> list[Example]:
    """The examples of a JSONL file or a folder of images.

    Args:
        data: The JSONL file or the folder.
        prompt: ``--prompt``: every image's prompt in a folder (required there); in a JSONL file,
            the prompt of lines without one.

    Returns:
        The examples, in order.

    Raises:
        DataError: ``data`` is missing, a line is not a JSON object with an ``image`` path and string
            ``prompt`` / string or number ``answer``, a folder without ``--prompt``, or no examples.
    """
    path = os.fspath(data)
    if os.path.isdir(path):
        examples = _folder_examples(path, prompt)
    elif os.path.isfile(path):
        examples = _jsonl_examples(path, prompt)
    else:
        raise DataError(f"{path}: no such file or folder (give a JSONL file or a folder of images)")
    if not examples:
        raise DataError(f"{path}: no examples in it")
    return examples


def data_fingerprint(examples: Sequence[Example]) -> str:
    """SHA-256 of the examples' images, prompts and answers: ``--resume`` adds only to a table of the same data."""
    text = json.dumps([[e.image, e.prompt, e.gold] for e in examples], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _folder_examples(folder: str, prompt: str | None) -> list[Example]:
    from ..batch.inputs import expand_inputs

    if prompt is None:
        raise DataError(f"{folder}: a folder of images needs --prompt (a JSONL file gives one per line)")
    items, _ = expand_inputs([folder])
    return [
        Example(index, os.path.relpath(item.path, folder), item.path, prompt, None)
        for index, item in enumerate(items)
    ]


def _jsonl_examples(path: str, prompt: str | None) -> list[Example]:
    folder = os.path.dirname(os.path.abspath(path))
    examples: list[Example] = []
    try:
        with open(path, encoding="utf-8") as handle:
            lines = list(handle)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc.msg}); each line is one object such as "
                            '{"image": "cat.jpg", "prompt": "What animal is this?", "answer": "cat"}') from None
        if not isinstance(item, dict):
            raise DataError(f"{where}: not a JSON object")
        image = item.get("image")
        if not isinstance(image, str) or not image:
            raise DataError(f"{where}: no image path (the key 'image')")
        text = item.get("prompt", prompt)
        if text is None:
            text = prompt or ""
        if not isinstance(text, str):
            raise DataError(f"{where}: prompt must be a string, got {text!r}")
        examples.append(Example(len(examples), image, os.path.join(folder, image), text, _gold(item, where)))
    return examples


def _gold(item: dict, where: str) -> str | None:
    answer = item.get("answer")
    if answer is None:
        return None
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise DataError(f"{where}: answer must be a string or a number, got {answer!r}")
    return str(answer)
