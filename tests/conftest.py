"""Shared fixtures: the real photos in ``test_img/`` (helpers and worked cases live in helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import PHOTO_NAMES, PHOTO_PATHS, load_photo_tensor


@pytest.fixture(scope="session")
def photo_paths() -> dict[str, Path]:
    """name -> path of every test photo (astronaut 512x512, chelsea 451x300, coffee 600x400, rocket 640x427)."""
    missing = [str(p) for p in PHOTO_PATHS.values() if not p.is_file()]
    if missing:
        pytest.fail(f"test photos missing: {missing}")
    return dict(PHOTO_PATHS)


@pytest.fixture(scope="session")
def photo_tensor():
    """:func:`helpers.load_photo_tensor` as a fixture: ``photo_tensor("coffee")`` -> (1, 3, H, W) in [0, 255]."""
    return load_photo_tensor


@pytest.fixture(scope="session")
def resized_photos() -> dict:
    """name -> smart-resized (1, 3, H, W) tensor of every test photo (computed once per session)."""
    return {name: load_photo_tensor(name) for name in PHOTO_NAMES}


@pytest.fixture(scope="session")
def eval_checkpoint(tmp_path_factory) -> Path:
    """A random tiny Qwen2-VL checkpoint folder with tokenizer, processor and chat template (built once)."""
    from helpers import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("eval") / "tiny-qwen2-vl")
