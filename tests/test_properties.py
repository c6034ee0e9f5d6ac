"""Property tests (hypothesis) over random images and sizes, for every scorer and selection method."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apt_viz.core.accounting import token_stats
from apt_viz.core.config import METHODS, SCORERS
from apt_viz.core.scoring import compute_importance_maps
from apt_viz.core.selection import select_patches, select_patches_by_budget, select_patches_by_threshold

from helpers import base_coverage, per_image_tokens

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _render(height: int, width: int, seed: int, style: str) -> np.ndarray:
    """(H, W, 3) float image in [0, 255] mixing flat areas (ties, zero entropy) and texture."""
    rng = np.random.default_rng(seed)
    if style == "noise":
        return rng.uniform(0, 255, (height, width, 3))
    if style == "flat":
        return np.full((height, width, 3), rng.uniform(0, 255))
    if style == "gradient":
        ramp = np.linspace(0, 255, width)[None, :, None] * np.linspace(0.2, 1, height)[:, None, None]
        return np.broadcast_to(ramp, (height, width, 3)).copy()
    # blocks: random rectangles, some flat, some noisy
    image = np.full((height, width, 3), rng.uniform(0, 255))
    for _ in range(rng.integers(1, 8)):
        top, left = rng.integers(0, height), rng.integers(0, width)
        bottom, right = rng.integers(top, height) + 1, rng.integers(left, width) + 1
        if rng.random() < 0.5:
            image[top:bottom, left:right] = rng.uniform(0, 255, 3)
        else:
            image[top:bottom, left:right] = rng.uniform(0, 255, (bottom - top, right - left, 3))
    return image


@st.composite
def images(draw, batch: int = 1) -> torch.Tensor:
    height = draw(st.integers(14, 180))
    width = draw(st.integers(14, 180))
    frames = []
    for _ in range(batch):
        seed = draw(st.integers(0, 2**31 - 1))
        style = draw(st.sampled_from(["noise", "flat", "gradient", "blocks"]))
        frames.append(_render(height, width, seed, style))
    array = np.round(np.stack(frames)).astype(np.float32)  # integer pixel values, as from a photo
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()



@PROPERTY_SETTINGS
@given(image=images(), scorer=st.sampled_from(SCORERS), method=st.sampled_from(METHODS),
       alpha=st.floats(0.05, 1.0), num_scales=st.integers(1, 4))
def test_masks_partition_the_base_grid(image, scorer, method, alpha, num_scales):
    height, width = image.shape[-2:]
    maps = compute_importance_maps(image, scorer, num_scales=num_scales)
    thresholds = [3.0, 2.0, 1.0][: num_scales - 1]
    selection = select_patches(maps, method, alpha=alpha, thresholds=thresholds, image_size=(height, width))
    masks = selection.masks
    assert sorted(masks) == [14 * 2**i for i in range(num_scales)]
    assert torch.equal(base_coverage(masks), torch.ones_like(masks[14]))
    for size in sorted(masks)[1:]:  # partial cells above the base are never kept whole
        rows, cols = masks[size].shape[-2:]
        if height % size:
            assert int(masks[size][:, rows - 1, :].sum()) == 0
        if width % size:
            assert int(masks[size][:, :, cols - 1].sum()) == 0


@PROPERTY_SETTINGS
@given(image=images(), scorer=st.sampled_from(SCORERS), alpha=st.floats(0.01, 1.0))
def test_budget_bounds(image, scorer, alpha):
    height, width = image.shape[-2:]
    maps = compute_importance_maps(image, scorer)
    masks, (info,) = select_patches_by_budget(maps, alpha, image_size=(height, width))
    tokens = int(per_image_tokens(masks)[0])
    n = maps[14].shape[-2] * maps[14].shape[-1]
    assert info.budget == round(alpha * n) and info.base_tokens == n
    assert tokens == info.vision_tokens
    if info.clamped:
        assert info.budget < tokens == info.min_tokens
    else:
        assert tokens <= info.budget
        assert info.budget - tokens < 3 or tokens == n


@PROPERTY_SETTINGS
@given(image=images(), scorer=st.sampled_from(SCORERS), alpha=st.floats(0.01, 1.0), num_scales=st.integers(1, 4))
def test_llm_budget_bounds(image, scorer, alpha, num_scales):
    """Any size (partial cells, a last merge group cut in half): the LLM tokens BudgetInfo reports are
    the accounting's, and they land within one split (3 LLM tokens) of T."""
    height, width = image.shape[-2:]
    maps = compute_importance_maps(image, scorer, num_scales=num_scales)
    masks, (info,) = select_patches_by_budget(maps, alpha, image_size=(height, width), budget_unit="llm")
    (stats,) = token_stats(masks)
    assert info.baseline_llm_tokens == stats.baseline_llm_tokens and info.budget == round(alpha * stats.baseline_llm_tokens)
    assert info.llm_tokens == stats.llm_tokens and info.vision_tokens == stats.vision_tokens
    assert torch.equal(base_coverage(masks), torch.ones_like(masks[14]))
    if info.clamped:
        assert info.budget < stats.llm_tokens == info.min_llm_tokens
    else:
        assert 0 <= info.budget - stats.llm_tokens < 3 or stats.vision_tokens == stats.base_tokens


@PROPERTY_SETTINGS
@given(image=images(), scorer=st.sampled_from(SCORERS),
       alphas=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=6))
def test_budget_tokens_never_decrease_as_alpha_grows(image, scorer, alphas):
    height, width = image.shape[-2:]
    maps = compute_importance_maps(image, scorer)
    counts = [int(per_image_tokens(select_patches_by_budget(maps, a, image_size=(height, width))[0])[0]) for a in sorted(alphas)]
    assert counts == sorted(counts)


@PROPERTY_SETTINGS
@given(image=images(), scorer=st.sampled_from(SCORERS),
       start=st.tuples(st.floats(-1, 10), st.floats(-1, 10)),
       steps=st.lists(st.tuples(st.floats(0, 3), st.floats(0, 3)), min_size=1, max_size=5))
def test_v1_tokens_never_increase_as_thresholds_grow(image, scorer, start, steps):
    height, width = image.shape[-2:]
    maps = compute_importance_maps(image, scorer)
    thresholds = list(start)
    counts = [int(per_image_tokens(select_patches_by_threshold(maps, thresholds, (height, width)))[0])]
    for step in steps:  # each threshold grows (or stays) elementwise
        thresholds = [t + d for t, d in zip(thresholds, step)]
        counts.append(int(per_image_tokens(select_patches_by_threshold(maps, thresholds, (height, width)))[0]))
    assert counts == sorted(counts, reverse=True)


@PROPERTY_SETTINGS
@given(batch=images(batch=3), scorer=st.sampled_from(SCORERS), method=st.sampled_from(METHODS),
       alpha=st.floats(0.05, 1.0))
def test_batch_gives_the_same_result_as_one_by_one(batch, scorer, method, alpha):
    height, width = batch.shape[-2:]
    maps = compute_importance_maps(batch, scorer)
    selection = select_patches(maps, method, alpha=alpha, image_size=(height, width))
    for b in range(batch.shape[0]):
        single_maps = compute_importance_maps(batch[b : b + 1], scorer)
        for size in maps:  # conv / interpolate may sum in a different order per batch size
            torch.testing.assert_close(maps[size][b], single_maps[size][0], rtol=1e-5, atol=1e-6)
        # Selection on the batch's own maps: exactly the single-image decision.
        single = select_patches({s: m[b : b + 1] for s, m in maps.items()}, method, alpha=alpha,
                                image_size=(height, width))
        for size in maps:
            assert torch.equal(selection.masks[size][b], single.masks[size][0])
        if method == "budget":
            assert selection.budget_info[b] == single.budget_info[0]
        else:
            torch.testing.assert_close(selection.thresholds[b], single.thresholds[0], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("scorer", SCORERS)
def test_scoring_never_modifies_its_input(scorer):
    image = torch.from_numpy(_render(70, 99, 5, "blocks").astype(np.float32)).permute(2, 0, 1)[None].contiguous()
    before = image.clone()
    compute_importance_maps(image, scorer)
    assert torch.equal(image, before)
