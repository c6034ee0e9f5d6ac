"""Image preparation (docs/contract.md, section 1): smart_resize and convert_to_rgb against transformers, load_image's
orientation / first frame / one-line errors, and the BICUBIC resize."""
from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from apt_viz.core.qwen2vl import ResizeSpec, smart_resize
from apt_viz.imaging import ImageLoadError, convert_to_rgb, load_image, pil_to_tensor, resize_for_qwen2vl

from helpers import PHOTO_PATHS

transformers_qwen2vl = pytest.importorskip("transformers.models.qwen2_vl.image_processing_qwen2_vl")
transformers_transforms = pytest.importorskip("transformers.image_transforms")


# --- smart_resize == transformers' -------------------------------------------------------------

def _smart_resize_cases() -> list[tuple[int, int, int, int, int]]:
    """(height, width, factor, min_pixels, max_pixels): extremes written out, plus 400 seeded random ones."""
    qwen = (28, 56 * 56, 28 * 28 * 1280)
    cases = [
        (1, 1, *qwen),
        (3, 500, *qwen),
        (500, 3, *qwen),
        (20000, 15000, *qwen),
        (15000, 20000, *qwen),
        (1, 200, *qwen),  # aspect ratio exactly 200: allowed
        (200, 1, *qwen),
        (2, 400, *qwen),
        (1, 201, *qwen),  # just over 200: ValueError
        (201, 1, *qwen),
        (100, 20001, *qwen),  # 200.01
        (28, 28, *qwen),
        (56, 56, *qwen),
        (1008, 1008, *qwen),
        (512, 512, *qwen),
        (300, 451, *qwen),
        (14, 14, 14, 14 * 14, 14 * 14 * 4),
        (41, 41, 28, 56 * 56, 28 * 28),  # max_pixels of a single merged patch
        (27, 29, 28, 28 * 28, 28 * 28),
    ]
    rng = random.Random(20251018)
    for _ in range(400):
        height = round(10 ** rng.uniform(0, 4.4))
        width = round(10 ** rng.uniform(0, 4.4))
        factor = rng.choice([14, 16, 28, 32, 56])
        min_pixels = rng.choice([factor * factor, 56 * 56, 128 * 28 * 28, 512 * 512])
        max_pixels = rng.choice([28 * 28 * 1280, 16384 * 28 * 28, 1003520, max(min_pixels, 64 * 64)])
        cases.append((height, width, factor, min(min_pixels, max_pixels), max_pixels))
    return cases


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ValueError as exc:
        return ("ValueError", str(exc))


@pytest.mark.parametrize("case", _smart_resize_cases(), ids=lambda c: "x".join(map(str, c)))
def test_smart_resize_is_transformers(case):
    ours = _outcome(smart_resize, *case)
    theirs = _outcome(transformers_qwen2vl.smart_resize, *case)
    assert ours == theirs


def test_smart_resize_extremes_behave_as_documented():
    assert smart_resize(1, 200) == transformers_qwen2vl.smart_resize(1, 200)  # ratio 200 is allowed
    for height, width in [(1, 201), (201, 1)]:
        with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
            smart_resize(height, width)
    h, w = smart_resize(20000, 15000)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 28 * 28 * 1280
    h, w = smart_resize(1, 1)
    assert h % 28 == 0 and w % 28 == 0 and h * w >= 56 * 56


def test_smart_resize_rejects_non_positive_sizes_with_one_line():
    # transformers would divide by zero here; apt-viz says what is wrong instead.
    for height, width in [(0, 10), (10, 0), (-5, 10)]:
        with pytest.raises(ValueError, match="must be positive") as info:
            smart_resize(height, width)
        assert "\n" not in str(info.value)


# --- convert_to_rgb == transformers' -----------------------------------------------------------

def _noise(shape, seed: int, high: int = 256, dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


def _image_in_mode(mode: str) -> Image.Image:
    size = (23, 17)
    if mode == "RGBA":  # alpha covering 0 (fully transparent) to 255
        return Image.fromarray(_noise((17, 23, 4), 1))
    if mode == "LA":
        return Image.fromarray(_noise((17, 23, 3), 2)).convert("LA").copy()
    if mode in ("P", "P+transparency"):
        image = Image.fromarray(_noise((17, 23, 3), 3)).quantize(colors=16)
        if mode == "P+transparency":
            image.info["transparency"] = int(np.asarray(image)[0, 0])
        return image
    if mode == "L":
        return Image.fromarray(_noise((17, 23), 4))
    if mode == "CMYK":
        return Image.frombytes("CMYK", size, _noise((17, 23, 4), 5).tobytes())
    if mode == "I;16":  # values above 255 exercise Pillow's clipping
        return Image.frombytes("I;16", size, _noise((17, 23), 6, high=65536, dtype="<u2").tobytes())
    if mode == "1":
        return Image.fromarray(_noise((17, 23), 7) > 127)
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P+transparency", "P", "L", "CMYK", "I;16", "1"])
def test_convert_to_rgb_is_transformers(mode):
    image = _image_in_mode(mode)
    before = image.tobytes()
    ours = convert_to_rgb(image)
    theirs = transformers_transforms.convert_to_rgb(image.copy(), return_numpy=True)
    assert ours.mode == "RGB" and ours.size == image.size
    np.testing.assert_array_equal(np.asarray(ours), theirs)
    assert image.tobytes() == before  # input untouched


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert np.all(np.asarray(convert_to_rgb(rgba)) == 255)


# --- load_image ----------------------------------------------------------------------------------

def _two_color_image(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation 6: the camera was turned, show it rotated 90 degrees clockwise
    _two_color_image().save(path, exif=exif.tobytes(), quality=95)
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
    loaded = np.asarray(load_image(path)).astype(int)
    assert loaded.shape == (40, 20, 3)  # width and height swapped
    # Rotating clockwise puts the left (red) half on top and the right (blue) half at the bottom.
    top, bottom = loaded[:18].mean(axis=(0, 1)), loaded[22:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 50
    assert bottom[2] > 200 and bottom[0] < 50


def test_first_frame_of_animated_gif(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 6), color) for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    loaded = np.asarray(load_image(path))
    assert loaded.shape == (6, 8, 3)
    assert np.all(loaded == (255, 0, 0))


def test_loaded_photo_is_rgb_and_matches_pillow(photo_paths):
    path = photo_paths["chelsea"]
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (451, 300)
    with Image.open(path) as raw:
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(raw.convert("RGB")))


def _write_bad_inputs(tmp_path) -> dict[str, tuple]:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    truncated = tmp_path / "truncated.jpg"
    data = PHOTO_PATHS["coffee"].read_bytes()
    truncated.write_bytes(data[: len(data) * 6 // 10])
    return {
        "zero-byte": (empty, "empty file"),
        "non-image": (text, "not a readable image"),
        "truncated": (truncated, "truncated"),
        "missing": (tmp_path / "nowhere.jpg", "no such file"),
    }


@pytest.mark.parametrize("kind", ["zero-byte", "non-image", "truncated", "missing"])
def test_bad_inputs_raise_one_line_naming_the_file(tmp_path, kind):
    path, reason = _write_bad_inputs(tmp_path)[kind]
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and reason in message
    assert "\n" not in message
    error = info.value  # no chained traceback behind the one line
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_decompression_bomb_limit(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    previous = Image.MAX_IMAGE_PIXELS
    # Pillow errors past twice the limit: 10,000 pixels > 2 * 1,000.
    with pytest.raises(ImageLoadError, match="too large") as info:
        load_image(path, max_image_pixels=1000)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert previous == Image.MAX_IMAGE_PIXELS  # the global guard is restored
    assert load_image(path, max_image_pixels=None).size == (100, 100)
    assert previous == Image.MAX_IMAGE_PIXELS


# --- resize ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PHOTO_PATHS))
def test_pil_backend_is_smart_resize_with_pillow_bicubic(name):
    image = load_image(PHOTO_PATHS[name])
    before = image.tobytes()
    resized = resize_for_qwen2vl(image, backend="pil")
    height, width = transformers_qwen2vl.smart_resize(image.height, image.width)
    assert resized.size == (width, height)
    expected = image.resize((width, height), resample=Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(resized), np.asarray(expected))
    assert image.tobytes() == before


def test_resize_spec_variants():
    image = Image.fromarray(_noise((100, 131, 3), 9))
    assert resize_for_qwen2vl(image, ResizeSpec(resize=False)).size == (131, 100)
    small = resize_for_qwen2vl(image, ResizeSpec(min_pixels=56 * 56, max_pixels=56 * 56))
    assert small.size[::-1] == smart_resize(100, 131, 28, 56 * 56, 56 * 56)
    assert resize_for_qwen2vl(image, ResizeSpec(patch_size=16)).size[::-1] == smart_resize(100, 131, 32)


def test_pil_to_tensor_layout_and_range():
    array = _noise((5, 7, 3), 10)
    tensor = pil_to_tensor(Image.fromarray(array))
    assert tuple(tensor.shape) == (1, 3, 5, 7) and str(tensor.dtype) == "torch.float32"
    np.testing.assert_array_equal(tensor[0].permute(1, 2, 0).numpy(), array.astype(np.float32))
