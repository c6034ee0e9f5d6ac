"""Fidelity (docs/fidelity.md, docs/contract.md section 9): the APT reconstruction, the uniform and random
baselines at equal cost, and the metrics, against hand computations, scikit-image and transformers' processor."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

from apt_viz.analysis import analyze_image
from apt_viz.core.config import APTConfig
from apt_viz.core.qwen2vl import MIN_PIXELS, smart_resize
from apt_viz.core.scoring import compute_patch_entropy_batched
from apt_viz.fidelity import (
    FIDELITY_KEYS,
    detail_mask,
    fidelity_views,
    matched_max_pixels,
    measure_fidelity,
    psnr,
    reconstruct,
    ssim,
    uniform_view,
)
from apt_viz.hf.image_processing import unpatchify
from apt_viz.imaging import load_image, pil_to_tensor

from helpers import grid

SCORE_KEYS = ["psnr", "ssim", "psnr_detail", "vision_tokens", "llm_tokens"]
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


@pytest.fixture(scope="module")
def originals(photo_paths) -> dict[str, Image.Image]:
    return {name: load_image(path) for name, path in photo_paths.items()}


# --- reconstruction -----------------------------------------------------------------------------------

def test_a_56_and_a_28_px_cell_give_the_hand_computed_reconstruction():
    """A 56 x 84 image: one 56 px cell (columns 0-55), one 28 px cell (rows 0-27, columns 56-83) and four
    base cells (rows 28-55, columns 56-83).

    56 px cell, value x / 100 (x: column): its row is the image downsampled by 4 (bilinear, no antialias:
    column j reads columns 4j + 1 and 4j + 2), (4j + 1.5) / 100. Upsampled back by 4 (source
    (x + 0.5) / 4 - 0.5, clamped to [0, 13]) the ramp comes back as x / 100, but columns 0, 1 read
    the first sample (1.5 / 100) and columns 54, 55 the last (53.5 / 100).
    28 px cell, value y / 100 (y: row): downsampled by 2 (rows 2i, 2i + 1), (2i + 0.5) / 100; back by 2,
    y / 100 except row 0 (0.5 / 100) and row 27 (26.5 / 100).
    Base cells: copied exactly. Each channel adds its own offset (0, 0.1, 0.2), which every step keeps.
    """
    columns = torch.arange(84, dtype=torch.float32)
    rows = torch.arange(56, dtype=torch.float32)
    offset = torch.tensor([0.0, 0.1, 0.2]).view(1, 3, 1, 1)
    image = torch.zeros(1, 3, 56, 84)
    image[..., :, :56] = columns[:56] / 100
    image[..., :28, 56:] = rows[:28, None] / 100
    image[..., 28:, 56:] = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    image += offset
    masks = {
        14: grid([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]]),
        28: grid([[0, 0, 1], [0, 0, 0]]),
        56: grid([[1, 0]]),
    }
    expected = image.clone()
    ramp = columns[:56].clone()
    ramp[:2], ramp[54:] = 1.5, 53.5
    expected[..., :, :56] = ramp / 100 + offset
    column = rows[:28].clone()
    column[0], column[27] = 0.5, 26.5
    expected[..., :28, 56:] = column[:, None] / 100 + offset

    rebuilt = reconstruct(image, masks, 14)
    torch.testing.assert_close(rebuilt, expected, rtol=0, atol=1e-6)
    assert torch.equal(rebuilt[..., 28:, 56:], image[..., 28:, 56:])  # base patches: bit for bit


@pytest.mark.parametrize("name", ["astronaut", "rocket"])
def test_budget_alpha_one_reconstructs_the_resized_image_exactly(name, originals):
    analysis = analyze_image(originals[name], APTConfig(method="budget", alpha=1.0))
    views = fidelity_views(analysis, originals[name])
    assert torch.equal(views.apt, views.reference)
    fidelity = measure_fidelity(analysis, originals[name])
    assert fidelity.apt.psnr is None and fidelity.apt.psnr_detail is None
    assert fidelity.apt.ssim == 1.0  # every step of the formula gives the same value on both sides
    assert fidelity.apt.vision_tokens == analysis.stats.base_tokens


def test_reconstruction_without_resize_covers_partial_cells():
    image = torch.rand(1, 3, 70, 99, generator=torch.Generator().manual_seed(1))
    maps = compute_patch_entropy_batched(image * 255)
    from apt_viz.core.selection import select_patches_by_budget

    for alpha in (1.0, 0.3):
        masks, _ = select_patches_by_budget(maps, alpha, image_size=(70, 99))
        rebuilt = reconstruct(image, masks, 14)
        assert rebuilt.shape == image.shape
        if alpha == 1.0:
            assert torch.equal(rebuilt, image)
        else:  # every pixel is covered by some cell: nothing left at the canvas' zero
            base = masks[14][0].bool().repeat_interleave(14, 0).repeat_interleave(14, 1)[:70, :99]
            assert torch.equal(rebuilt[..., base], image[..., base]) and not torch.equal(rebuilt, image)


# --- uniform baselines --------------------------------------------------------------------------------

def _achievable(original_hw, spec, top):
    """count -> smallest max_pixels giving it, by trying every max_pixels from the lowest allowed to ``top``."""
    factor = spec.patch_size * spec.merge_size
    found: dict[int, int] = {}
    for max_pixels in range(max(spec.min_pixels, factor * factor), top + 1):
        height, width = smart_resize(*original_hw, factor, spec.min_pixels, max_pixels)
        found.setdefault((height // 14) * (width // 14), max_pixels)
    return found


@pytest.mark.parametrize("original_hw", [(120, 190), (500, 333), (20, 3000), (30, 30)])
def test_matched_max_pixels_gives_the_closest_count_by_brute_force(original_hw):
    """Every max_pixels tried: the count returned is the closest (ties to fewer), from its smallest max_pixels.
    (20, 3000) is a case where shrinking gives more patches than the rounded size (a side clamped to 28)."""
    spec = APTConfig().resize_spec
    height, width = original_hw
    top = max(round(height / 28) * 28 * round(width / 28) * 28, 56 * 56) + 28 * 28
    found = _achievable(original_hw, spec, top)
    for target in range(1, max(found) + 6):
        best = min(found, key=lambda count: (abs(count - target), count))
        assert matched_max_pixels(original_hw, target, spec) == found[best], target


def test_matched_max_pixels_refuses_a_target_of_nothing():
    with pytest.raises(ValueError, match="target_patches must be a positive"):
        matched_max_pixels((100, 100), 0, APTConfig())


@pytest.mark.parametrize("stock_class, backend", [(Qwen2VLImageProcessor, "torchvision"),
                                                  (Qwen2VLImageProcessorPil, "pil")])
def test_uniform_baselines_are_the_stock_processor_at_the_matched_max_pixels(originals, stock_class, backend):
    for name in ("coffee", "chelsea"):
        original = originals[name]
        analysis = analyze_image(original, APTConfig(method="budget", alpha=0.3, backend=backend))
        for target in (analysis.stats.vision_tokens, 4 * analysis.stats.llm_tokens):
            view = uniform_view(original, target, analysis.config, analysis.resized_hw)
            stock = stock_class(size={"shortest_edge": MIN_PIXELS, "longest_edge": view.max_pixels})
            out = stock(original, return_tensors="pt")
            (_, grid_h, grid_w), = out["image_grid_thw"].tolist()
            assert grid_h * grid_w == view.vision_tokens and view.llm_tokens == view.vision_tokens // 4
            assert (grid_h * 14, grid_w * 14) == view.resized_hw
            found = _achievable((original.height, original.width), analysis.config.resize_spec, view.max_pixels)
            assert abs(view.vision_tokens - target) == min(abs(count - target) for count in found)
            # the pixels it sees: the stock pixel_values, un-normalized
            pixels = unpatchify(out["pixel_values"], grid_h, grid_w, 14, 2, 2)[0] * CLIP_STD + CLIP_MEAN
            torch.testing.assert_close(pixels, pil_to_tensor(view.resized)[0] / 255, rtol=0, atol=2e-6)
            assert view.image.shape[-2:] == analysis.resized_hw


# --- metrics ------------------------------------------------------------------------------------------

def test_psnr_by_hand():
    reference = torch.zeros(1, 3, 2, 2)
    candidate = reference.clone()
    assert psnr(reference, candidate) is None  # exact
    candidate[0, 1, 0, 0] = 0.1  # one channel of one pixel: MSE = 0.01 / 12
    assert psnr(reference, candidate) == pytest.approx(10 * math.log10(1200), abs=1e-5)
    corner = torch.tensor([[True, False], [False, False]])
    assert psnr(reference, candidate, corner) == pytest.approx(10 * math.log10(300), abs=1e-5)  # 0.01 / 3
    assert psnr(reference, candidate, ~corner) is None


def test_ssim_of_flat_images_by_hand():
    # No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2, on every pixel and channel.
    a, b, c1 = 0.5, 0.25, 0.01**2
    reference, candidate = torch.full((1, 3, 20, 30), a), torch.full((1, 3, 20, 30), b)
    (value,) = ssim(reference, [candidate])
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-12)
    assert ssim(torch.zeros(1, 3, 10, 40), [torch.zeros(1, 3, 10, 40)]) == [None]  # under the 11 px window


def test_metrics_equal_scikit_image_on_a_photo_and_its_uniform_baseline(originals):
    analysis = analyze_image(originals["astronaut"], APTConfig(method="budget", alpha=0.2))
    views = fidelity_views(analysis, originals["astronaut"])
    candidates = [views.apt, views.uniform_equal_vision.image]
    as_array = [image[0].permute(1, 2, 0).double().numpy() for image in [views.reference, *candidates]]
    expected = [structural_similarity(as_array[0], other, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1, channel_axis=-1)
                for other in as_array[1:]]
    assert ssim(views.reference, candidates, threads=1) == expected  # the library's own numbers
    assert ssim(views.reference, candidates, threads=2) == ssim(views.reference, candidates, threads=1)
    mse = [float(np.mean((as_array[0] - other) ** 2)) for other in as_array[1:]]
    got = [psnr(views.reference, image) for image in candidates]
    assert got == pytest.approx([10 * math.log10(1 / m) for m in mse], abs=1e-5)


def test_detail_mask_keeps_a_quarter_of_the_whole_cells_with_ties():
    # 56 x 60 image: base grid 4 x 5, the last column partial (60 = 4 * 14 + 4): 16 whole cells,
    # ceil(0.25 * 16) = 4 kept at least; the 4th largest is 5, tied three times -> 5 cells.
    entropy = torch.tensor([[9.0, 1.0, 5.0, 2.0, 1e6],
                            [0.0, 8.0, 3.0, 5.0, 1e6],
                            [4.0, 1.0, 2.0, 0.5, 1e6],
                            [5.0, 0.0, 1.0, 1.0, 1e6]])
    mask = detail_mask(entropy, (56, 60), 14)
    cells = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(mask, cells.repeat_interleave(14, 0).repeat_interleave(14, 1)[:56, :60])


def test_psnr_detail_is_the_psnr_over_the_most_detailed_cells(originals):
    config = APTConfig(method="budget", alpha=0.3, scorer="laplacian")  # detail still ranks by entropy
    analysis = analyze_image(originals["coffee"], config)
    views = fidelity_views(analysis, originals["coffee"])
    entropy = compute_patch_entropy_batched(pil_to_tensor(analysis.resized))[14][0]
    assert torch.equal(views.detail, detail_mask(entropy, analysis.resized_hw, 14))
    fidelity = measure_fidelity(analysis, originals["coffee"])
    assert fidelity.apt.psnr_detail == pytest.approx(psnr(views.reference, views.apt, views.detail), abs=1e-9)
    assert fidelity.apt.psnr_detail < fidelity.apt.psnr  # detail is where the error is


# --- random baseline and the record -----------------------------------------------------------------

@pytest.mark.parametrize("config", [
    APTConfig(method="budget", alpha=0.3),
    APTConfig(method="budget", alpha=0.5, budget_unit="llm"),
    APTConfig(method="v2", alpha=1.0),
    APTConfig(),
], ids=["budget", "budget-llm", "v2", "v1"])
def test_random_baseline_keeps_the_budget_and_is_reproducible(config, originals):
    analysis = analyze_image(originals["rocket"], config)
    first = fidelity_views(analysis, originals["rocket"])
    again = fidelity_views(analysis, originals["rocket"])
    assert first.random_stats.vision_tokens == analysis.stats.vision_tokens  # equal vision tokens, exactly
    assert torch.equal(first.random_equal_vision, again.random_equal_vision)
    other = fidelity_views(analyze_image(originals["rocket"], config.replace(seed=1)), originals["rocket"])
    assert other.random_stats.vision_tokens == analysis.stats.vision_tokens
    assert not torch.equal(other.random_equal_vision, first.random_equal_vision)


def test_the_fidelity_record_has_the_schema_keys(originals):
    analysis = analyze_image(originals["chelsea"], APTConfig(method="budget", alpha=0.3))
    fidelity = measure_fidelity(analysis, originals["chelsea"])
    record = json.loads(json.dumps(fidelity.to_dict(), allow_nan=False))
    assert list(record) == list(FIDELITY_KEYS) == ["apt", "uniform_equal_vision", "uniform_equal_llm",
                                                   "random_equal_vision"]
    for name, score in record.items():
        extra = ["resized_height", "resized_width"] if name.startswith("uniform") else []
        assert list(score) == SCORE_KEYS + extra, name
        assert 0 < score["ssim"] < 1 and score["psnr"] > score["psnr_detail"] > 10
    assert record["apt"]["vision_tokens"] == analysis.stats.vision_tokens and record["apt"]["llm_tokens"] == analysis.stats.llm_tokens
    uniform = record["uniform_equal_llm"]
    assert uniform["llm_tokens"] * 4 == uniform["vision_tokens"] == uniform["resized_height"] * uniform["resized_width"] // 196


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fidelity_on_the_gpu_equals_the_cpu(originals):
    config = APTConfig(method="budget", alpha=0.3, scorer="random", seed=5)
    on_cpu = measure_fidelity(analyze_image(originals["rocket"], config), originals["rocket"]).to_dict()
    on_gpu = measure_fidelity(analyze_image(originals["rocket"], config.replace(device="cuda")),
                              originals["rocket"]).to_dict()
    for name in FIDELITY_KEYS:
        assert on_gpu[name]["vision_tokens"] == on_cpu[name]["vision_tokens"]
        for key in ("psnr", "ssim", "psnr_detail"):
            assert on_gpu[name][key] == pytest.approx(on_cpu[name][key], rel=1e-5)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
def test_ssim_is_scikit_image_on_the_four_views(originals, name):
    """Every candidate of the fidelity block, scored on 1 and 2 threads: scikit-image's float64 values."""
    views = fidelity_views(analyze_image(originals[name], APTConfig(method="budget", alpha=0.3)), originals[name])
    candidates = [views.apt, views.uniform_equal_vision.image, views.uniform_equal_llm.image, views.random_equal_vision]
    as_array = [image[0].permute(1, 2, 0).double().numpy() for image in [views.reference, *candidates]]  # c h w -> h w c
    expected = [structural_similarity(as_array[0], other, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1, channel_axis=-1)
                for other in as_array[1:]]
    assert ssim(views.reference, candidates, threads=2) == expected
    assert ssim(views.reference, [views.reference.clone()]) == [1.0]
    with pytest.raises(ValueError, match="candidate against"):
        ssim(views.reference, [views.reference[..., :-1]])


def test_fidelity_does_not_depend_on_the_torch_thread_count(originals):
    """Bilinear interpolation on the CPU differs in the last bits between 1 and 2 threads; the views are
    computed on one thread, so run (any thread count), stats workers (one) and sweep agree exactly."""
    analysis = analyze_image(originals["rocket"], APTConfig(method="budget", alpha=0.3, device="cpu"))
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(measure_fidelity(analysis, originals["rocket"]).to_dict())
    finally:
        torch.set_num_threads(threads)
    assert results[0] == results[1]
