"""The CPU entropy paths (apt_viz/core/_entropy.py) against the dense formula, bit for bit.

The dense formula is the one every earlier release computed: per cell, a histogram of ``bins``
counts over the zero-padded cell, the terms ``-p log2(p + 1e-10)`` (float64, rounded to float32)
of all ``bins`` counts, and ``torch.sum`` over that row. The fast paths change how the counts are
made (one pass at the base grid, coarser grids as sums of children) and how the terms are looked
up; the row and its reduction are the same, so the floats must be the same to the last bit
(``torch.equal``), not merely close. Every test runs on both CPU paths: the C kernel
(apt_viz/core/_cellhist.c) and the torch ops that stand in for it where it is not built.
"""
from __future__ import annotations

import math

import pytest
import torch

from apt_viz.core import _entropy
from apt_viz.core.scoring import compute_patch_entropy_batched

from helpers import PHOTO_NAMES, load_photo_tensor

WEIGHTS = (0.2989, 0.5870, 0.1140)


@pytest.fixture(autouse=True, params=["kernel", "torch ops"])
def cpu_path(request, monkeypatch):
    """Each test once with the C kernel and once with the torch path (``_native`` is None there)."""
    if request.param == "kernel" and not _entropy.native_kernel():
        pytest.skip("the C kernel is not built here (apt_viz/core/_cellhist.c; pip install -e . builds it)")
    if request.param == "torch ops":
        monkeypatch.setattr(_entropy, "_native", None)
    return request.param


def dense_reference(images: torch.Tensor, patch_size: int = 14, num_scales: int = 3, bins: int = 512,
                    pad_value: float = 1e6) -> dict[int, torch.Tensor]:
    """The dense formula, written independently of the fast path: every grid histogrammed from the pixels."""
    images = images.to(torch.float32)
    if images.shape[1] == 3:  # float32 products, summed R + G then + B, as the contract's code does
        w = [torch.tensor(x, dtype=torch.float32) for x in WEIGHTS]
        gray = (images[:, 0] * w[0] + images[:, 1] * w[1]) + images[:, 2] * w[2]
    else:
        gray = images[:, 0]
    levels = torch.floor(gray * torch.tensor(bins / 256.0, dtype=torch.float32)).clamp(0, bins - 1).long()
    batch, height, width = levels.shape
    maps = {}
    for i in range(num_scales):
        size = patch_size * 2**i
        rows, cols = math.ceil(height / size), math.ceil(width / size)
        padded = torch.zeros(batch, rows * size, cols * size, dtype=torch.long)
        padded[:, :height, :width] = levels
        # b (r s) (c t) -> (b r c) (s t): one row of pixels per cell
        cells = padded.view(batch, rows, size, cols, size).permute(0, 1, 3, 2, 4).reshape(-1, size * size)
        counts = torch.zeros(cells.shape[0], bins, dtype=torch.long).scatter_add_(1, cells, torch.ones_like(cells))
        p = torch.arange(size * size + 1, dtype=torch.float64) / (size * size)
        table = (-(p * torch.log2(p + 1e-10))).to(torch.float32)
        entropy = torch.sum(table[counts], dim=-1).view(batch, rows, cols)
        if height % size:
            entropy[:, -1, :] = pad_value
        if width % size:
            entropy[:, :, -1] = pad_value
        maps[size] = entropy
    return maps


def assert_bit_identical(got: dict[int, torch.Tensor], expected: dict[int, torch.Tensor]) -> None:
    assert list(got) == list(expected)
    for size in expected:
        assert got[size].dtype == torch.float32 and got[size].shape == expected[size].shape
        differing = (got[size] != expected[size]).sum().item()
        assert differing == 0, f"{differing} cells of the {size} px map differ"


def _random_images(batch: int, height: int, width: int, seed: int, low: float = 0.0, high: float = 256.0,
                   channels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(batch, channels, height, width, generator=generator)


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_photos_equal_the_dense_formula_bit_for_bit(name):
    image = load_photo_tensor(name)
    assert_bit_identical(compute_patch_entropy_batched(image), dense_reference(image))


@pytest.mark.parametrize("height,width", [(1008, 1008), (100, 131), (57, 85), (250, 97), (14, 14), (13, 29)])
def test_odd_sizes_equal_the_dense_formula(height, width):
    image = load_photo_tensor("coffee", size=(height, width))
    assert_bit_identical(compute_patch_entropy_batched(image), dense_reference(image))


def test_a_batch_equals_the_dense_formula_and_each_image_alone():
    images = torch.cat([load_photo_tensor(name, size=(230, 301)) for name in PHOTO_NAMES])
    batched = compute_patch_entropy_batched(images)
    assert_bit_identical(batched, dense_reference(images))
    for b in range(len(PHOTO_NAMES)):
        alone = compute_patch_entropy_batched(images[b : b + 1])
        assert all(torch.equal(batched[size][b], alone[size][0]) for size in alone)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_images_equal_the_dense_formula(seed):
    # Uniform noise fills many bins per cell (up to 196 distinct counts), and the range beyond
    # [0, 255] exercises the clamp at both ends.
    images = _random_images(2, 181, 263, seed, low=-20.0, high=300.0)
    assert_bit_identical(compute_patch_entropy_batched(images), dense_reference(images))


@pytest.mark.parametrize("bins", [16, 64, 255, 256, 511, 512, 1024])
def test_every_level_used_for_any_bins(bins):
    """A ramp through every level (and beyond both ends), with flat and noisy cells beside it."""
    height, width = 126, 196
    ramp = torch.linspace(-2.0, 258.0, height * width).view(height, width)
    noise = _random_images(1, height, width, 7, channels=1)[0, 0]
    flat = torch.full((height, width), 77.0)  # one count of 196 at the base grid: the byte 196 >= 128
    gray = torch.cat([ramp, noise, flat], dim=1)
    image = gray.expand(1, 3, *gray.shape).clone()
    levels = torch.floor(gray * torch.tensor(bins / 256.0)).clamp(0, bins - 1).long()
    assert torch.unique(levels).numel() == bins  # every level occurs
    assert_bit_identical(compute_patch_entropy_batched(image, bins=bins), dense_reference(image, bins=bins))


@pytest.mark.parametrize("patch_size,num_scales", [(14, 1), (14, 4), (16, 2), (8, 3), (15, 2)])
def test_other_cell_sizes_equal_the_dense_formula(patch_size, num_scales):
    # 16 px cells hold 256 pixels: their counts do not fit a byte and take the single-lookup path.
    image = load_photo_tensor("rocket", size=(227, 311))
    got = compute_patch_entropy_batched(image, patch_size=patch_size, num_scales=num_scales)
    assert_bit_identical(got, dense_reference(image, patch_size, num_scales))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64])
def test_input_dtypes_equal_the_dense_formula(dtype):
    image = load_photo_tensor("chelsea", size=(140, 213))
    if dtype == torch.uint8:
        image = image.round().clamp(0, 255)
    image = image.to(dtype)
    assert_bit_identical(compute_patch_entropy_batched(image), dense_reference(image))


def test_a_single_channel_equals_the_dense_formula():
    image = _random_images(1, 99, 140, 3, channels=1)
    assert_bit_identical(compute_patch_entropy_batched(image), dense_reference(image))


def _all_counts(area: int, cells: int, bins: int, seed: int) -> torch.Tensor:
    """uint8 histograms of ``area`` pixels each, from one level to ``bins`` levels per cell."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.zeros(cells, bins, dtype=torch.uint8)
    for cell in range(cells):
        distinct = 1 + cell % min(area, bins)
        levels = torch.randint(0, distinct, (area,), generator=generator) * (bins // distinct)
        counts[cell] = torch.bincount(levels, minlength=bins).to(torch.uint8)
    return counts.view(1, 1, cells, bins)


@pytest.mark.parametrize("area", [196, 255, 64, 1])
def test_pair_lookups_equal_single_lookups_bit_for_bit(area):
    """The GPU-style dense path (one lookup per count) and the CPU pair lookups give the same floats."""
    counts = _all_counts(area, 600, 512, seed=area)
    dense = _entropy.dense_entropy(counts, area)
    assert torch.equal(_entropy.pair_entropy(counts, area), dense)
    assert torch.equal(_entropy.pair_entropy(counts, area, chunk=7), dense)  # chunk edges
    # ... and both equal the formula on those counts.
    p = torch.arange(area + 1, dtype=torch.float64) / area
    table = (-(p * torch.log2(p + 1e-10))).to(torch.float32)
    assert torch.equal(dense, torch.sum(table[counts.long()], dim=-1))


def test_pair_table_holds_every_pair_of_counts():
    area = 196
    terms = _entropy.entropy_table(area, torch.device("cpu"))
    table = _entropy.pair_table(area, torch.device("cpu")).view(torch.float32).view(-1, 2)
    first, second = torch.meshgrid(torch.arange(area + 1), torch.arange(area + 1), indexing="ij")
    pairs = torch.stack([first.reshape(-1), second.reshape(-1)], 1).to(torch.uint8).contiguous()
    index = _entropy._pair_index(pairs.view(-1)).long()
    assert torch.equal(table[index, 0], terms[first.reshape(-1)])
    assert torch.equal(table[index, 1], terms[second.reshape(-1)])


def test_torch_without_uint16_reads_the_same_pairs(monkeypatch):
    """torch < 2.3 has no uint16: the pair indices are then read as int16 and masked to 16 bits."""
    counts = _all_counts(196, 300, 512, seed=5)
    expected = _entropy.pair_entropy(counts, 196)
    monkeypatch.setattr(_entropy, "_UINT16", None)
    _entropy.pair_table.cache_clear()
    try:
        assert torch.equal(_entropy.pair_entropy(counts, 196), expected)
    finally:
        _entropy.pair_table.cache_clear()


def test_the_dense_path_of_the_maps_equals_the_pair_path(monkeypatch):
    """What a GPU runs (every grid by :func:`dense_entropy`) gives the CPU's maps bit for bit."""
    images = torch.cat([load_photo_tensor(name, size=(196, 252)) for name in PHOTO_NAMES])
    expected = compute_patch_entropy_batched(images)
    monkeypatch.setattr(_entropy, "pair_entropy", lambda counts, area: _entropy.dense_entropy(counts, area))
    assert_bit_identical(compute_patch_entropy_batched(images), expected)


def test_bit_identity_is_a_real_constraint():
    """Why the tests above compare with ``torch.equal``: summing the same terms in another order (here
    the two halves of each row, then their sum) already changes the last bits of some cells."""
    counts = _all_counts(196, 600, 512, seed=11)
    terms = _entropy.entropy_table(196, torch.device("cpu"))[counts.long()]
    halves = terms.view(-1, 2, 256).sum(-1).sum(-1)
    differing = (halves != torch.sum(terms, dim=-1).view(-1)).sum().item()
    assert differing > 0
