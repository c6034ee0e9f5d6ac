"""Shared test fixtures: the real photos in ``test_img/`` and a loader that goes through apt_viz.imaging."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_IMG_DIR = REPO_ROOT / "test_img"
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")
PHOTO_PATHS = {name: TEST_IMG_DIR / f"{name}.jpg" for name in PHOTO_NAMES}


def load_photo_tensor(name_or_path: str | Path, resize: bool = True, size: tuple[int, int] | None = None):
    """A test photo as a (1, 3, H, W) float32 tensor in [0, 255], prepared by apt_viz.imaging.

    ``resize``: smart_resize it as Qwen2-VL would; ``size`` (height, width): BICUBIC to exactly that
    size instead (for odd sizes); neither: the original pixels.
    """
    from PIL import Image

    from apt_viz.imaging import load_image, pil_to_tensor, resize_for_qwen2vl

    path = PHOTO_PATHS.get(str(name_or_path), Path(name_or_path))
    image = load_image(path)
    if size is not None:
        image = image.resize((size[1], size[0]), resample=Image.Resampling.BICUBIC)
    elif resize:
        image = resize_for_qwen2vl(image)
    return pil_to_tensor(image)


@pytest.fixture(scope="session")
def photo_paths() -> dict[str, Path]:
    """name -> path of every test photo (astronaut 512x512, chelsea 451x300, coffee 600x400, rocket 640x427)."""
    missing = [str(p) for p in PHOTO_PATHS.values() if not p.is_file()]
    assert not missing, f"test photos missing: {missing}"
    return dict(PHOTO_PATHS)


@pytest.fixture(scope="session")
def photo_tensor():
    """The loader above as a fixture: ``photo_tensor("coffee")`` -> (1, 3, H, W) in [0, 255]."""
    return load_photo_tensor


@pytest.fixture(scope="session")
def resized_photos() -> dict:
    """name -> smart-resized (1, 3, H, W) tensor of every test photo (computed once per session)."""
    return {name: load_photo_tensor(name) for name in PHOTO_NAMES}


def base_coverage(masks: dict) -> "torch.Tensor":
    """(B, rows, cols) base grid: how many selected cells (of any scale) cover each base cell.

    A valid selection is a partition: every entry is exactly 1.
    """
    sizes = sorted(masks)
    base = masks[sizes[0]]
    rows, cols = base.shape[-2:]
    total = base.float().clone()
    for size in sizes[1:]:
        factor = size // sizes[0]
        spread = masks[size].float().repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        total += spread[..., :rows, :cols]
    return total
