"""The C kernel of the entropy scorer (apt_viz/core/_cellhist.c): the torch path's maps bit for bit on
any shape, type and layout, NaN as a one-line ValueError on both paths, and arguments the kernel
refuses rather than reading or writing out of bounds."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_viz.core import _entropy
from apt_viz.core.scoring import compute_patch_entropy_batched

from helpers import PHOTO_NAMES, load_photo_tensor

pytestmark = pytest.mark.skipif(not _entropy.native_kernel(),
                                reason="the C kernel is not built here (pip install -e . builds it)")


@contextlib.contextmanager
def torch_path() -> Iterator[None]:
    """Score with torch ops, as an install without the kernel does."""
    kernel = _entropy._native
    _entropy._native = None
    try:
        yield
    finally:
        _entropy._native = kernel


def both_paths(images: torch.Tensor, **kwargs) -> tuple[dict, dict]:
    kernel = compute_patch_entropy_batched(images, **kwargs)
    with torch_path():
        reference = compute_patch_entropy_batched(images, **kwargs)
    return kernel, reference


def assert_same_maps(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for size in expected:
        assert got[size].dtype == expected[size].dtype and torch.equal(got[size], expected[size]), size


@st.composite
def scoring_cases(draw):
    """Images of any size, channel count, type and layout, with grids of any cell size, depth and bins."""
    batch, channels = draw(st.integers(1, 2)), draw(st.sampled_from([1, 3, 4]))
    height, width = draw(st.integers(1, 90)), draw(st.integers(1, 90))
    dtype = draw(st.sampled_from([torch.float32, torch.uint8, torch.float64]))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        images = torch.randint(0, 256, (batch, channels, height, width), generator=generator, dtype=torch.uint8)
    else:  # beyond [0, 255] at both ends: the clamp
        images = (torch.rand(batch, channels, height, width, generator=generator) * 300 - 20).to(dtype)
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    if layout == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # every other column of a wider image: a pixel step of two elements
        wide = images.repeat_interleave(2, dim=-1)
        images = wide[..., ::2]
    kwargs = {"patch_size": draw(st.integers(2, 20)), "num_scales": draw(st.integers(1, 4)),
              "bins": draw(st.sampled_from([2, 7, 64, 256, 300, 512, 1000]))}
    return images, kwargs


@settings(max_examples=150, deadline=None)
@given(case=scoring_cases())
def test_the_kernel_gives_the_torch_path_bit_for_bit(case):
    images, kwargs = case
    assert_same_maps(*both_paths(images, **kwargs))


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_photos_as_uint8_hwc_views(name):
    """How stats and the processors hand pixels over: uint8, channels last."""
    image = load_photo_tensor(name).round().to(torch.uint8)
    hwc = image.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # b h w c -> b c h w, a view
    assert_same_maps(*both_paths(hwc))
    assert_same_maps(compute_patch_entropy_batched(hwc), compute_patch_entropy_batched(image.contiguous()))


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "torch ops"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nan_is_a_one_line_value_error_on_both_paths(kernel, dtype):
    images = load_photo_tensor("coffee", size=(60, 90)).to(dtype)
    images[0, 1, 31, 47] = float("nan")
    with contextlib.nullcontext() if kernel else torch_path(), \
            pytest.raises(ValueError, match=r"^images contain NaN: the entropy scorer needs finite pixel values$"):
        compute_patch_entropy_batched(images)


def test_infinities_clamp_to_the_end_levels_on_both_paths():
    images = load_photo_tensor("coffee", size=(60, 90))
    images[0, 0, :5, :7] = float("inf")
    images[0, 2, 40:, 50:] = float("-inf")
    assert_same_maps(*both_paths(images))


def test_threads_scoring_at_once_get_what_each_gets_alone():
    """The kernel releases the GIL and each thread has its own buffers."""
    images = [load_photo_tensor(name, size=(336, 448)) for name in PHOTO_NAMES] * 3
    alone = [compute_patch_entropy_batched(image) for image in images]
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(compute_patch_entropy_batched, images))
    for got, expected in zip(together, alone):
        assert_same_maps(got, expected)


# --- arguments the kernel refuses ----------------------------------------------------------------

kernel = _entropy._native


def test_counts_that_do_not_cover_the_image_are_refused():
    pixels = np.zeros((1, 3, 30, 30), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        kernel.base_counts(pixels, np.zeros((1, 2, 3, 16), np.uint8), (1.0, 1.0, 1.0), 1.0, 14)  # 3 rows needed
    with pytest.raises(ValueError, match="do not fit"):  # 16 x 16 = 256 pixels do not fit a byte
        kernel.base_counts(pixels, np.zeros((1, 2, 2, 16), np.uint8), (1.0, 1.0, 1.0), 1.0, 16)


@pytest.mark.parametrize("pixels,counts", [
    (np.zeros((1, 3, 28, 28), np.float64), np.zeros((1, 2, 2, 16), np.uint8)),  # float64 pixels
    (np.zeros((1, 3, 28, 28), np.float32), np.zeros((1, 2, 2, 16), np.int64)),  # int64 counts
    (np.zeros((3, 28, 28), np.float32), np.zeros((1, 2, 2, 16), np.uint8)),  # no batch axis
])
def test_unsupported_types_and_shapes_are_refused(pixels, counts):
    with pytest.raises(ValueError, match="base_counts"):
        kernel.base_counts(pixels, counts, (1.0, 1.0, 1.0), 1.0, 14)


def test_a_count_outside_the_table_is_refused():
    table = np.zeros(197, np.float32)
    with pytest.raises(ValueError, match="outside the table"):
        kernel.lookup(np.array([3, 197], np.int16), table, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="outside the table"):  # negative: wraps to a huge index
        kernel.lookup(np.array([-1, 0], np.int32), table, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="as many elements"):
        kernel.lookup(np.array([1, 2], np.uint8), table, np.zeros(3, np.float32))


def test_merges_into_the_wrong_shape_or_a_narrower_type_are_refused():
    counts = np.ones((1, 4, 4, 8), np.int16)
    with pytest.raises(ValueError, match="merge_children"):
        kernel.merge_children(counts, np.zeros((1, 2, 3, 8), np.int16))
    with pytest.raises(ValueError, match="merge_children"):
        kernel.merge_children(counts, np.zeros((1, 2, 2, 8), np.uint8))
    merged = np.zeros((1, 2, 2, 8), np.int32)
    kernel.merge_children(counts, merged)
    assert (merged == 4).all()  # four children of one each


@pytest.mark.slow
def test_apt_viz_native_0_selects_the_torch_path():
    code = "from apt_viz.core._entropy import native_kernel; print(native_kernel())"
    for value, expected in (("0", "False"), ("1", "True")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "APT_VIZ_NATIVE": value})
        assert done.returncode == 0 and done.stdout.strip() == expected, done.stderr
