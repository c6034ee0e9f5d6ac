"""The ``random`` scorer (the random baseline of docs/fidelity.md): seeded, the same for every image and device."""
from __future__ import annotations

import pytest
import torch

from apt_viz.core.config import APTConfig
from apt_viz.core.pipeline import run_apt
from apt_viz.core.random_maps import compute_patch_random_batched
from apt_viz.core.scoring import compute_importance_maps
from apt_viz.core.tokenizer import PatchTokenizer


def test_maps_are_uniform_draws_in_grid_order_from_the_seed():
    images = torch.zeros(2, 3, 70, 99)
    maps = compute_importance_maps(images, "random", seed=11)
    generator = torch.Generator().manual_seed(11)  # 14 px grid first, then 28, then 56, row-major
    expected = {size: torch.rand(shape, generator=generator) for size, shape in ((14, (5, 8)), (28, (3, 4)), (56, (2, 2)))}
    for size, values in expected.items():
        assert maps[size].shape == (2, *values.shape)
        assert torch.equal(maps[size][0], values) and torch.equal(maps[size][1], values)  # every image alike


def test_the_seed_and_only_the_seed_changes_the_maps():
    photo = torch.rand(1, 3, 56, 84) * 255
    same = compute_patch_random_batched(photo, seed=3)
    other_pixels = compute_patch_random_batched(torch.zeros_like(photo), seed=3)
    other_seed = compute_patch_random_batched(photo, seed=4)
    assert all(torch.equal(same[s], other_pixels[s]) for s in same)
    assert not any(torch.equal(same[s], other_seed[s]) for s in same)


def test_random_budget_selection_through_the_config_and_the_tokenizer():
    images = torch.rand(2, 3, 112, 168) * 255
    config = APTConfig(method="budget", alpha=0.4, scorer="random", seed=2)
    result = run_apt(images, config)
    assert result.stats[0].vision_tokens == result.stats[1].vision_tokens  # same maps, same geometry
    tokenizer = PatchTokenizer(scorer="random", seed=2, patch_selection_method="budget", alpha=0.4,
                               budget_unit="llm", mean=(0, 0, 0), std=(1, 1, 1))
    out = tokenizer(images / 255)
    assert tokenizer.last_budget_info[0].budget_unit == "llm"
    assert out["seqlens"][0] == tokenizer.last_budget_info[0].vision_tokens


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True])
def test_bad_seeds_are_one_line_errors(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        APTConfig(scorer="random", seed=seed)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_maps_are_the_same_on_the_gpu():
    images = torch.zeros(1, 3, 70, 99)
    on_cpu = compute_importance_maps(images, "random", seed=9)
    on_gpu = compute_importance_maps(images.cuda(), "random", seed=9)
    assert all(on_gpu[s].is_cuda and torch.equal(on_gpu[s].cpu(), on_cpu[s]) for s in on_cpu)
