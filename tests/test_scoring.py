"""Importance scorers (docs/contract.md, section 3) against hand-computed cells and slow direct per-cell implementations."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from apt_viz.core.scoring import (
    compute_importance_maps,
    compute_patch_entropy_batched,
    compute_patch_laplacian_batched,
    compute_patch_upsample_mse_batched,
    single_threaded,
)

from helpers import PHOTO_NAMES, load_photo_tensor

SIZES = (14, 28, 56)


def _gray_image(gray: np.ndarray) -> torch.Tensor:
    """(H, W) values -> (1, 3, H, W) float tensor with R = G = B."""
    return torch.from_numpy(np.asarray(gray, dtype=np.float32)).expand(1, 3, *gray.shape).clone()


# --- slow references, written straight from docs/contract.md --------------------------------------------

def _gray_np(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) -> float32 gray, same float32 operations as the formula of docs/contract.md."""
    r, g, b = (image[0, c].numpy().astype(np.float32) for c in range(3))
    return np.float32(0.2989) * r + np.float32(0.5870) * g + np.float32(0.1140) * b


def _cells(values: np.ndarray, size: int):
    """Yield (row, col, cell values) of the zero-padded grid of ``size`` cells."""
    height, width = values.shape
    rows, cols = math.ceil(height / size), math.ceil(width / size)
    padded = np.zeros((rows * size, cols * size), dtype=values.dtype)
    padded[:height, :width] = values
    for r in range(rows):
        for c in range(cols):
            yield r, c, padded[r * size : (r + 1) * size, c * size : (c + 1) * size]


def reference_entropy(image: torch.Tensor, size: int, bins: int = 512, pad_value: float = 1e6) -> np.ndarray:
    gray = _gray_np(image)
    levels = np.clip(np.floor(gray * np.float32(bins / 256)), 0, bins - 1).astype(np.int64)
    height, width = gray.shape
    out = np.zeros((math.ceil(height / size), math.ceil(width / size)))
    for r, c, cell in _cells(levels, size):
        p = np.bincount(cell.ravel(), minlength=bins) / size**2
        out[r, c] = -(p * np.log2(p + 1e-10)).sum()
    if height % size:
        out[-1, :] = pad_value
    if width % size:
        out[:, -1] = pad_value
    return out


def _aggregate(cell: np.ndarray, aggregate: str) -> float:
    cell = cell.astype(np.float64).ravel()
    return {"mean": cell.mean(), "max": cell.max(), "std": cell.std(ddof=1)}[aggregate]


def reference_laplacian(image: torch.Tensor, size: int, aggregate: str = "mean") -> np.ndarray:
    gray = _gray_np(image).astype(np.float64) / 255.0
    padded = np.pad(gray, 1, mode="reflect")
    height, width = gray.shape
    response = -9.0 * gray  # kernel of ones with -8 at the centre = (3x3 sum) - 9 * centre
    for dy in range(3):
        for dx in range(3):
            response = response + padded[dy : dy + height, dx : dx + width]
    response = np.abs(response)
    out = np.zeros((math.ceil(height / size), math.ceil(width / size)))
    for r, c, cell in _cells(response, size):
        out[r, c] = _aggregate(cell, aggregate)
    return out


def _bilinear_axis(length_in: int, length_out: int, scale: float):
    """Source indices and weights of PyTorch's bilinear (align_corners=False) along one axis."""
    dst = np.arange(length_out, dtype=np.float64)
    src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, length_in - 1)
    return low, high, src - low


def _bilinear(array: np.ndarray, out_h: int, out_w: int, scale_h: float, scale_w: float) -> np.ndarray:
    """(C, H, W) bilinear resize; ``scale`` = source pixels per output pixel, as PyTorch uses it."""
    low, high, frac = _bilinear_axis(array.shape[1], out_h, scale_h)
    rows = array[:, low] * (1 - frac)[None, :, None] + array[:, high] * frac[None, :, None]
    low, high, frac = _bilinear_axis(array.shape[2], out_w, scale_w)
    return rows[:, :, low] * (1 - frac)[None, None, :] + rows[:, :, high] * frac[None, None, :]


def reference_upsample_mse(image: torch.Tensor, level: int, aggregate: str = "mean") -> np.ndarray:
    """The official compute_patch_mse_batched with its default scale factors, written from its steps."""
    rgb = image[0].numpy().astype(np.float64) / 255.0
    _, height, width = rgb.shape
    factor = (0.5, 0.5, 0.25)[min(level, 2)]  # the official defaults; the last one repeats
    # interpolate(scale_factor=f): output floor(n * f), and PyTorch maps coordinates with 1 / f.
    down = _bilinear(rgb, math.floor(height * factor), math.floor(width * factor), 1 / factor, 1 / factor)
    up_h, up_w = math.floor(down.shape[1] / factor), math.floor(down.shape[2] / factor)
    up = _bilinear(down, up_h, up_w, factor, factor)
    if (up_h, up_w) != (height, width):  # rounding left it off the image size: resize once more
        up = _bilinear(up, height, width, up_h / height, up_w / width)
    error = ((rgb - up) ** 2).mean(axis=0)
    size = 14 * 2**level
    out = np.zeros((math.ceil(height / size), math.ceil(width / size)))
    for r, c, cell in _cells(error, size):
        out[r, c] = _aggregate(cell, aggregate)
    return out


# --- entropy: hand cases -------------------------------------------------------------------------

def test_constant_cells_have_zero_entropy():
    maps = compute_patch_entropy_batched(_gray_image(np.full((56, 112), 100.0)))
    for size in SIZES:
        assert maps[size].shape == (1, 56 // size, 112 // size)
        # -1 * log2(1 + 1e-10) = -1.4e-10: zero bits.
        assert torch.allclose(maps[size], torch.zeros_like(maps[size]), atol=1e-6)


def test_half_and_half_cells_have_one_bit():
    gray = np.zeros((56, 56))  # columns 0-6 of every 14-px cell stay 0 (bin 0)
    for start in range(0, 56, 14):
        gray[:, start + 7 : start + 14] = 200  # columns 7-13: gray 199.98 -> bin 399
    maps = compute_patch_entropy_batched(_gray_image(gray))
    for size in SIZES:  # every cell at every scale holds 50% bin 0 and 50% bin 399
        assert torch.allclose(maps[size], torch.ones_like(maps[size]), atol=1e-6)


def test_four_equal_groups_have_two_bits():
    cell = np.zeros((14, 14))
    cell[:7, 7:], cell[7:, :7], cell[7:, 7:] = 60, 120, 240  # four 7x7 quadrants: 0, 60, 120, 240
    maps = compute_patch_entropy_batched(_gray_image(np.tile(cell, (4, 4))))
    for size in SIZES:
        assert torch.allclose(maps[size], torch.full_like(maps[size], 2.0), atol=1e-6)


def test_bins_change_the_histogram():
    # R = G = B = v gives gray 0.9999 v: 100.2 -> 100.19, 100.8 -> 100.79. With 512 bins (width 0.5)
    # those are bins 200 and 201 (1 bit); with 256 bins (width 1) both fall in bin 100 (0 bits).
    gray = np.zeros((14, 14))
    gray[:, :7], gray[:, 7:] = 100.2, 100.8
    assert compute_patch_entropy_batched(_gray_image(gray), num_scales=1, bins=512)[14].item() == pytest.approx(1.0, abs=1e-6)
    assert compute_patch_entropy_batched(_gray_image(gray), num_scales=1, bins=256)[14].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("height,width", [(56, 70), (42, 56), (30, 45), (112, 112), (14, 14), (15, 200)])
@pytest.mark.parametrize("pad_value", [1e6, -7.5])
def test_pad_value_exactly_on_padded_last_row_and_column(height, width, pad_value):
    image = torch.from_numpy(np.random.default_rng(height * width).uniform(0, 255, (1, 3, height, width))).float()
    maps = compute_patch_entropy_batched(image, pad_value=pad_value)
    for size in SIZES:
        rows, cols = math.ceil(height / size), math.ceil(width / size)
        expected = torch.zeros(rows, cols, dtype=torch.bool)
        if height % size:
            expected[-1, :] = True
        if width % size:
            expected[:, -1] = True
        assert maps[size].shape == (1, rows, cols)
        assert torch.equal(maps[size][0] == pad_value, expected)
        assert bool((maps[size][0][~expected] <= math.log2(512) + 1e-5).all())  # real entropies elsewhere


# --- entropy: direct per-cell reference on real photos ---------------------------------------------

def _photo_cases():
    cases = [(name, None) for name in PHOTO_NAMES]  # smart_resize sizes
    cases += [("astronaut", (100, 131)), ("coffee", (57, 85)), ("rocket", (250, 97))]  # odd sizes
    cases += [("chelsea", "original")]  # 451x300 as loaded
    return cases


@pytest.mark.parametrize("bins", [512, 256])
@pytest.mark.parametrize("name,size", _photo_cases(), ids=str)
def test_entropy_matches_direct_formula_on_photos(name, size, bins):
    if size == "original":
        image = load_photo_tensor(name, resize=False)
    else:
        image = load_photo_tensor(name, size=size)
    before = image.clone()
    maps = compute_patch_entropy_batched(image, bins=bins)
    assert torch.equal(image, before)  # input untouched
    for size_px in SIZES:
        expected = reference_entropy(image, size_px, bins=bins)
        np.testing.assert_allclose(maps[size_px][0].numpy(), expected, rtol=0, atol=1e-4)


def test_entropy_batch_equals_one_by_one():
    images = [load_photo_tensor(name, size=(168, 238)) for name in PHOTO_NAMES]
    batched = compute_patch_entropy_batched(torch.cat(images))
    for b, image in enumerate(images):
        single = compute_patch_entropy_batched(image)
        for size in SIZES:
            assert torch.equal(batched[size][b], single[size][0])
    assert not torch.equal(batched[14][0], batched[14][1])  # the photos really differ


# --- entropy: one thread on the CPU, the caller's count kept ----------------------------------------

OPENMP = "parallel backend: OpenMP" in torch.__config__.parallel_info()
needs_openmp = pytest.mark.skipif(not OPENMP, reason="the thread count is per thread only under OpenMP")


class ThreadCounts(TorchDispatchMode):
    """Records torch's thread count as each op runs; raises on ``fail_on`` (an aten op) when given."""

    def __init__(self, fail_on=None) -> None:
        super().__init__()
        self.seen: set[int] = set()
        self.fail_on = fail_on

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(torch.get_num_threads())
        if func is self.fail_on:
            raise RuntimeError("injected failure")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@needs_openmp
def test_entropy_runs_every_op_on_one_thread_and_restores_the_count(two_threads):
    image = load_photo_tensor("astronaut", size=(252, 378))
    with ThreadCounts() as counts:
        maps = compute_patch_entropy_batched(image)
    assert counts.seen == {1}
    assert torch.get_num_threads() == 2
    for size in SIZES:  # the same numbers as the direct formula (and as with 2 threads before)
        np.testing.assert_allclose(maps[size][0].numpy(), reference_entropy(image, size), rtol=0, atol=1e-4)


@needs_openmp
def test_entropy_restores_the_thread_count_when_it_fails(two_threads):
    # The sums of the terms: torch ops on both CPU paths (C kernel or not).
    with ThreadCounts(fail_on=torch.ops.aten.sum.IntList_out), pytest.raises(RuntimeError, match="injected"):
        compute_patch_entropy_batched(load_photo_tensor("coffee", size=(56, 84)))
    assert torch.get_num_threads() == 2


def test_single_threaded_changes_nothing_for_other_devices(two_threads):
    with single_threaded("cuda"):
        assert torch.get_num_threads() == 2
    with single_threaded(torch.device("cpu")):
        assert torch.get_num_threads() == (1 if OPENMP else 2)
    assert torch.get_num_threads() == 2


@needs_openmp
def test_threads_scoring_at_once_keep_their_own_thread_counts(two_threads):
    image = load_photo_tensor("rocket", size=(168, 238))
    expected = compute_patch_entropy_batched(image)
    results: dict[int, tuple[int, bool]] = {}

    def work(count: int) -> None:
        torch.set_num_threads(count)  # this thread's own setting
        same = True
        for _ in range(3):
            got = compute_patch_entropy_batched(image)
            same = same and all(torch.equal(got[size], expected[size]) for size in SIZES)
        results[count] = (torch.get_num_threads(), same)

    threads = [threading.Thread(target=work, args=(count,)) for count in (1, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {1: (1, True), 3: (3, True), 4: (4, True)}
    assert torch.get_num_threads() == 2


# --- laplacian and upsample_mse against direct formulas ---------------------------------------------

@pytest.mark.parametrize("aggregate", ["mean", "max", "std"])
@pytest.mark.parametrize("name,size", [("chelsea", (112, 168)), ("rocket", (100, 131))], ids=str)
def test_laplacian_matches_direct_formula(name, size, aggregate):
    image = load_photo_tensor(name, size=size)
    maps = compute_patch_laplacian_batched(image, aggregate=aggregate)
    for size_px in SIZES:
        expected = reference_laplacian(image, size_px, aggregate)
        np.testing.assert_allclose(maps[size_px][0].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_laplacian_of_a_flat_image_is_zero_and_of_a_dot_is_known():
    gray = np.full((28, 28), 50.0)
    assert float(compute_patch_laplacian_batched(_gray_image(gray))[14].abs().max()) < 1e-6
    gray[5, 5] = 50.0 + 255.0  # one bright pixel: |-8| at it, |1| at its 8 neighbours (in gray/255 units)
    maps = compute_patch_laplacian_batched(_gray_image(gray), num_scales=1, aggregate="mean")
    assert maps[14][0, 0, 0].item() == pytest.approx(0.9999 * 16 / 196, rel=1e-4)  # gray weights sum 0.9999
    assert maps[14][0, 1, 1].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("aggregate", ["mean", "max"])
@pytest.mark.parametrize("name,size", [("coffee", (112, 168)), ("astronaut", (100, 131)), ("rocket", None)], ids=str)
def test_upsample_mse_matches_the_official_function_within_1e_5(name, size, aggregate):
    # (112, 168) divides evenly; (100, 131) and rocket's 420x644 need the official re-resize at 56 px
    # (131 * 0.25 -> 32 -> 128 != 131); the reference follows compute_patch_mse_batched step by step.
    image = load_photo_tensor(name, size=size) if size else load_photo_tensor(name)
    maps = compute_patch_upsample_mse_batched(image, aggregate=aggregate)
    assert float(maps[14].max()) > 1e-4  # factor 0.5 at 14 px: the base map shows detail (1.0 left it zero)
    for level, size_px in enumerate(SIZES):
        expected = reference_upsample_mse(image, level, aggregate)
        # float32 against this float64 reference: a cell whose error is one grey level (~1.5e-5) may
        # round 3e-10 apart, hence the absolute floor (against the official float32 code: < 1e-6 relative).
        np.testing.assert_allclose(maps[size_px][0].numpy(), expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("scorer", ["laplacian", "upsample_mse"])
def test_other_scorers_batch_equals_one_by_one(scorer):
    images = [load_photo_tensor(name, size=(84, 140)) for name in PHOTO_NAMES]
    batched = compute_importance_maps(torch.cat(images), scorer)
    for b, image in enumerate(images):
        single = compute_importance_maps(image, scorer)
        for size in SIZES:
            torch.testing.assert_close(batched[size][b], single[size][0], rtol=1e-5, atol=1e-7)


# --- dispatch ---------------------------------------------------------------------------------------

def test_compute_importance_maps_dispatches_and_rejects():
    image = load_photo_tensor("chelsea", size=(56, 84))
    entropy = compute_importance_maps(image, "entropy", bins=256)
    assert all(torch.equal(entropy[s], compute_patch_entropy_batched(image, bins=256)[s]) for s in SIZES)
    laplacian = compute_importance_maps(image, "laplacian", aggregate="max")
    assert all(torch.equal(laplacian[s], compute_patch_laplacian_batched(image, aggregate="max")[s]) for s in SIZES)
    with pytest.raises(ValueError, match="unknown scorer"):
        compute_importance_maps(image, "sobel")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        compute_importance_maps(image[0], "entropy")
    with pytest.raises(ValueError, match="unknown aggregate"):
        compute_importance_maps(image, "laplacian", aggregate="median")


# --- CUDA == CPU -------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("scorer", ["entropy", "laplacian", "upsample_mse"])
def test_cuda_maps_and_masks_equal_cpu(scorer):
    from apt_viz.core.selection import select_patches

    images = torch.cat([load_photo_tensor(name, size=(252, 378)) for name in PHOTO_NAMES])
    cpu = compute_importance_maps(images, scorer)
    gpu = compute_importance_maps(images.cuda(), scorer)
    for size in SIZES:
        assert gpu[size].is_cuda
        if scorer == "entropy":  # integer histograms: identical up to the last float sum
            torch.testing.assert_close(gpu[size].cpu(), cpu[size], rtol=0, atol=1e-5)
        else:
            torch.testing.assert_close(gpu[size].cpu(), cpu[size], rtol=1e-4, atol=1e-6)
    for method, alpha in [("v1", 1.0), ("v2", 1.0), ("budget", 0.4)]:
        # The same maps selected on either device pick the same cells ...
        on_cpu = select_patches(cpu, method, alpha=alpha, image_size=(252, 378)).masks
        moved = select_patches({s: m.cuda() for s, m in cpu.items()}, method, alpha=alpha, image_size=(252, 378))
        # ... and so do the GPU's own maps (the whole pipeline on the GPU).
        own = select_patches(gpu, method, alpha=alpha, image_size=(252, 378))
        for size in SIZES:
            assert torch.equal(moved.masks[size].cpu(), on_cpu[size])
            assert torch.equal(own.masks[size].cpu(), on_cpu[size])
