"""budget selection (docs/contract.md, section 4) on cases worked by hand: exact masks, k, base_tokens, budget, clamped,
tie-breaking order, forced splits on a size that is not a multiple of 56."""
from __future__ import annotations

import pytest
import torch

from apt_viz.core.accounting import token_stats
from apt_viz.core.scoring import compute_patch_entropy_batched
from apt_viz.core.selection import select_patches_by_budget

from helpers import PHOTO_NAMES, base_coverage, grid

# --- case 1: 56x112 image, no partial cells ----------------------------------------------------
# Base grid 4x8 (N = 32), 28-px grid 2x4, 56-px grid 1x2 (cells A = (0,0), B = (0,1)).
#
# Priorities (a child never outranks its parent, priority = min(own, parent)):
#   A = 5, B = 2
#   28-px under A (cols 0-1): (0,0)=min(4,5)=4  (0,1)=1    (1,0)=0.5  (1,1)=min(2,5)=2
#   28-px under B (cols 2-3): (0,2)=min(3,2)=2  (0,3)=min(6,2)=2  (1,2)=1.5  (1,3)=0.2
#
# Split order, descending priority; ties at 2 go larger cell first (B), then row ((0,2), (0,3)
# before (1,1) although its column is smaller), then column ((0,2) before (0,3)):
#   1 A   2 28(0,0)   3 B   4 28(0,2)   5 28(0,3)   6 28(1,1)   7 28(1,2)   8 28(0,1)   9 28(1,0)  10 28(1,3)
#
# Minimum = 2 tokens (the two 56-px cells); each split adds 3, so k = (T - 2) // 3.
CASE1_MAPS = {
    14: torch.rand(1, 4, 8, generator=torch.Generator().manual_seed(0)),  # base scores are never split
    28: grid([[4.0, 1.0, 3.0, 6.0],
              [0.5, 2.0, 1.5, 0.2]]),
    56: grid([[5.0, 2.0]]),
}
CASE1_ORDER = [(56, 0, 0), (28, 0, 0), (56, 0, 1), (28, 0, 2), (28, 0, 3),
               (28, 1, 1), (28, 1, 2), (28, 0, 1), (28, 1, 0), (28, 1, 3)]


def _masks_after_splits(splits: list[tuple[int, int, int]], shapes: dict[int, tuple[int, int]]) -> dict[int, torch.Tensor]:
    """Masks of a quadtree in which exactly ``splits`` (size, row, col) were split (all cells whole)."""
    split = {size: torch.zeros(shape, dtype=torch.bool) for size, shape in shapes.items()}
    for size, row, col in splits:
        split[size][row, col] = True
    sizes = sorted(shapes)
    masks = {}
    for i, size in enumerate(sizes):
        if i + 1 < len(sizes):
            parent = split[sizes[i + 1]].repeat_interleave(2, 0).repeat_interleave(2, 1)[: shapes[size][0], : shapes[size][1]]
        else:
            parent = torch.ones(shapes[size], dtype=torch.bool)
        masks[size] = (parent & ~split[size]).float().unsqueeze(0)
    return masks


def test_case1_alpha_half_exact_masks():
    masks, info = select_patches_by_budget(CASE1_MAPS, 0.5)
    # T = round(0.5 * 32) = 16 -> k = (16 - 2) // 3 = 4 splits: A, 28(0,0), B, 28(0,2) -> 14 tokens.
    assert torch.equal(masks[56], grid([[0, 0]]))
    assert torch.equal(masks[28], grid([[0, 1, 0, 1],
                                        [1, 1, 1, 1]]))
    assert torch.equal(masks[14], grid([[1, 1, 0, 0, 1, 1, 0, 0],
                                        [1, 1, 0, 0, 1, 1, 0, 0],
                                        [0, 0, 0, 0, 0, 0, 0, 0],
                                        [0, 0, 0, 0, 0, 0, 0, 0]]))
    assert [i.to_dict() for i in info] == [
        {
            "alpha": 0.5,
            "base_tokens": 32,
            "min_tokens": 2,
            "budget": 16,
            "k": 4,
            "vision_tokens": 14,
            "retention": 14 / 32,
            "target_retention": 0.5,
            "tokens_per_scale": {"14": 8, "28": 6, "56": 0},
            "clamped": False,
            "budget_unit": "vision",
            "baseline_llm_tokens": None,
            "min_llm_tokens": None,
            "llm_tokens": None,
            "target_llm_retention": None,
        }
    ]


@pytest.mark.parametrize("k", range(0, 11))
def test_case1_every_prefix_of_the_hand_order(k):
    target = 2 + 3 * k  # tokens after k splits; T = target, target + 1, target + 2 all allow exactly k
    for slack in (0, 1, 2):
        if target + slack > 32:
            continue
        alpha = (target + slack) / 32
        masks, (info,) = select_patches_by_budget(CASE1_MAPS, alpha)
        expected = _masks_after_splits(CASE1_ORDER[:k], {14: (4, 8), 28: (2, 4), 56: (1, 2)})
        for size in (14, 28, 56):
            assert torch.equal(masks[size], expected[size]), (k, slack, size)
        assert info.k == k and info.budget == target + slack and info.vision_tokens == target
        assert 0 <= info.budget - info.vision_tokens < 3


def test_case1_python_round_for_the_target():
    # 0.578125 * 32 = 18.5 exactly -> round() gives 18 (even); 0.609375 * 32 = 19.5 -> 20.
    assert select_patches_by_budget(CASE1_MAPS, 0.578125)[1][0].budget == 18
    assert select_patches_by_budget(CASE1_MAPS, 0.609375)[1][0].budget == 20


def test_case1_clamped_below_the_minimum():
    masks, (info,) = select_patches_by_budget(CASE1_MAPS, 1 / 32)  # T = 1 < 2
    assert info.clamped is True and info.budget == 1 and info.k == 0
    assert info.vision_tokens == info.min_tokens == 2
    assert torch.equal(masks[56], grid([[1, 1]])) and int(masks[28].sum()) == int(masks[14].sum()) == 0


def test_case1_fully_split():
    masks, (info,) = select_patches_by_budget(CASE1_MAPS, 1.0)
    assert info.k == 10 and info.vision_tokens == 32 and not info.clamped
    assert torch.equal(masks[14], torch.ones(1, 4, 8))


def test_nan_scores_rank_last():
    maps = {size: m.clone() for size, m in CASE1_MAPS.items()}
    maps[56][0, 0, 0] = float("nan")  # A now ranks below every finite priority, and so do its children
    masks, _ = select_patches_by_budget(maps, 5 / 32)  # k = 1: the single split goes to B
    assert torch.equal(masks[56], grid([[1, 0]]))


def test_batch_images_are_selected_independently():
    flipped = {size: m.flip(-1) for size, m in CASE1_MAPS.items()}
    batch = {size: torch.cat([CASE1_MAPS[size], flipped[size]]) for size in CASE1_MAPS}
    masks, info = select_patches_by_budget(batch, 0.5)
    for b, maps in enumerate([CASE1_MAPS, flipped]):
        single, (single_info,) = select_patches_by_budget(maps, 0.5)
        for size in maps:
            assert torch.equal(masks[size][b], single[size][0])
        assert info[b] == single_info


# --- case 2: 70x84 image, forced splits ----------------------------------------------------------
# Base grid 5x6 (N = 30), 28-px grid 3x3 (row 2 partial: 84 > 70), 56-px grid 2x2 (row 1 and
# column 1 partial: 112 > 70, 112 > 84; only (0,0) is whole).
# Forced splits and the children inside the image:
#   56(0,1) -> 28(0,2), 28(1,2)      (+1)      56(1,0) -> 28(2,0), 28(2,1)   (+1)
#   56(1,1) -> 28(2,2)               (+0)      28(2,c) -> base (4,2c), (4,2c+1) for c = 0..2   (+3)
# Minimum: 4 + 1 + 1 + 0 + 3 = 9 = 56(0,0) + 28(0,2) + 28(1,2) + the 6 base cells of base row 4.
# Whole candidates and priorities (partial cells score +inf, so children of partial cells keep their own):
#   56(0,0)=1.0; 28(0,0)=min(3,1)=1, 28(0,1)=0.5, 28(1,0)=0.1, 28(1,1)=0.2, 28(0,2)=2, 28(1,2)=4
# Order: 28(1,2) 4, 28(0,2) 2, 56(0,0) 1 (ties with 28(0,0): larger first), 28(0,0), 28(0,1), 28(1,1), 28(1,0).
CASE2_MAPS = {
    14: torch.rand(1, 5, 6, generator=torch.Generator().manual_seed(1)),
    28: grid([[3.0, 0.5, 2.0],
              [0.1, 0.2, 4.0],
              [0.0, 0.0, 0.0]]),  # partial row: its low scores must not keep it whole
    56: grid([[1.0, 0.0],
              [0.0, 0.0]]),  # partial cells scored 0 (would rank last if they were not forced)
}


def _case2(alpha: float):
    return select_patches_by_budget(CASE2_MAPS, alpha, image_size=(70, 84))


def test_case2_forced_splits_alpha_half():
    masks, (info,) = _case2(0.5)
    # T = 15 -> k = (15 - 9) // 3 = 2: 28(1,2) and 28(0,2) are split -> 15 tokens.
    assert torch.equal(masks[56], grid([[1, 0],
                                        [0, 0]]))
    assert torch.equal(masks[28], torch.zeros(1, 3, 3))
    assert torch.equal(masks[14], grid([[0, 0, 0, 0, 1, 1],
                                        [0, 0, 0, 0, 1, 1],
                                        [0, 0, 0, 0, 1, 1],
                                        [0, 0, 0, 0, 1, 1],
                                        [1, 1, 1, 1, 1, 1]]))
    assert (info.base_tokens, info.min_tokens, info.budget, info.k) == (30, 9, 15, 2)
    assert info.vision_tokens == 15 and info.tokens_per_scale == {14: 14, 28: 0, 56: 1}
    assert not info.clamped


def test_case2_next_split_is_the_whole_56_cell():
    masks, (info,) = _case2(0.6)  # T = 18 -> k = 3: + 56(0,0)
    assert int(masks[56].sum()) == 0
    assert torch.equal(masks[28], grid([[1, 1, 0],
                                        [1, 1, 0],
                                        [0, 0, 0]]))
    assert info.k == 3 and info.vision_tokens == 18


def test_case2_clamped_and_full():
    masks, (info,) = _case2(0.2)  # T = 6 < 9
    assert info.clamped and info.k == 0 and info.vision_tokens == 9 and info.budget == 6
    assert torch.equal(masks[56], grid([[1, 0], [0, 0]]))
    assert torch.equal(masks[28], grid([[0, 0, 1], [0, 0, 1], [0, 0, 0]]))
    masks, (info,) = _case2(1.0)  # T = 30 = N: all 7 whole cells split
    assert info.k == 7 and info.vision_tokens == 30 and torch.equal(masks[14], torch.ones(1, 5, 6))


@pytest.mark.parametrize("alpha", [0.2, 0.34, 0.5, 0.6, 0.77, 1.0])
def test_case2_partition_and_partial_cells_never_whole(alpha):
    masks, _ = _case2(alpha)
    assert torch.equal(base_coverage(masks), torch.ones(1, 5, 6))
    assert int(masks[56][0, 1, :].sum() + masks[56][0, :, 1].sum()) == 0
    assert int(masks[28][0, 2, :].sum()) == 0


# --- real photos ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_budget_on_photos_hits_the_target(name, resized_photos):
    image = resized_photos[name]
    maps = compute_patch_entropy_batched(image)
    size = tuple(image.shape[-2:])
    previous = 0
    for alpha in (0.1, 0.25, 0.3, 0.5, 0.75, 1.0):
        masks, (info,) = select_patches_by_budget(maps, alpha, image_size=size)
        n = info.base_tokens
        assert n == (size[0] // 14) * (size[1] // 14)
        assert info.budget == round(alpha * n)
        tokens = int(sum(m.sum() for m in masks.values()))
        assert tokens == info.vision_tokens == sum(info.tokens_per_scale.values())
        if not info.clamped:
            assert 0 <= info.budget - tokens < 3
        assert tokens >= previous
        previous = tokens
        assert torch.equal(base_coverage(masks), torch.ones_like(masks[14]))


# --- the Qwen2-VL APT fork's last_budget_info keys (docs/migrating.md) ------------------------------
# The fork reported base_tokens = rows x cols of the largest grid (partial cells kept whole),
# base_small_tokens = N, budget = round(alpha * N), k = max(0, (budget - base_tokens) // 3) (the splits
# the budget allows, not the splits made) and alpha.

def test_seed_dict_without_partial_cells_matches_apt_viz():
    # Case 1: the 56-px grid is 1x2 and whole, so the fork's base_tokens is min_tokens and k agrees.
    _, (info,) = select_patches_by_budget(CASE1_MAPS, 0.5)
    assert info.as_seed_dict() == {"base_tokens": 2, "base_small_tokens": 32, "budget": 16, "k": 4, "alpha": 0.5}
    assert (info.min_tokens, info.k) == (2, 4)


@pytest.mark.parametrize(("alpha", "budget", "k_fork", "k_apt_viz"), [
    (0.5, 15, 3, 2),   # (15 - 4) // 3 = 3 allowed from 4 whole top cells; apt-viz: (15 - 9) // 3 = 2 made
    (0.2, 6, 0, 0),    # (6 - 4) // 3 = 0; apt-viz is clamped at its minimum, 9
    (1.0, 30, 8, 7),   # (30 - 4) // 3 = 8 allowed, but only 7 whole cells exist to split
])
def test_seed_dict_with_partial_cells(alpha, budget, k_fork, k_apt_viz):
    # Case 2 (70x84): the 56-px grid is 2x2 = 4 cells, three of them partial; N = 5 x 6 = 30.
    _, (info,) = _case2(alpha)
    assert info.as_seed_dict() == {"base_tokens": 4, "base_small_tokens": 30, "budget": budget, "k": k_fork,
                                   "alpha": alpha}
    assert (info.base_tokens, info.min_tokens, info.budget, info.k) == (30, 9, budget, k_apt_viz)
    assert "top_cells" not in info.to_dict()  # stats.json keeps apt-viz's names only


def test_seed_dict_of_the_worked_example(resized_photos):
    # docs/migrating.md: coffee.jpg resized to (392, 588); 56-px grid 7 x 11 = 77 cells, its last column
    # partial (588 / 56 = 10.5), each of those 7 split into 2 -> min_tokens 84; N = 28 x 42 = 1176.
    image = resized_photos["coffee"]
    assert tuple(image.shape[-2:]) == (392, 588)
    _, (info,) = select_patches_by_budget(compute_patch_entropy_batched(image), 0.3, image_size=(392, 588))
    assert info.as_seed_dict() == {"base_tokens": 77, "base_small_tokens": 1176, "budget": 353, "k": 92, "alpha": 0.3}
    assert (info.min_tokens, info.k, info.vision_tokens) == (84, 89, 84 + 3 * 89)


# --- budget in LLM tokens (docs/contract.md, section 10) -------------------------------------------
# Case 1 again, merge size 2: L = (4/2) * (8/2) = 8 LLM tokens; the minimum is the two 56 px cells
# (2 LLM tokens). In the hand order above, a 56 px split adds 3 LLM tokens (1 cell -> four 28 px
# cells) and a 28 px split adds none (1 cell -> one merge group of four base patches):
#   1 A +3   2 28(0,0) +0   3 B +3   4..10 the other 28 px cells +0
# T = 2: allowance 0, A does not fit: nothing is split.
# T = 5, 6, 7: A and 28(0,0) fit; B would make 8 > T: stop there (the free splits after B wait too).
# T = 8: everything is split (8 LLM tokens, 32 vision tokens).
CASE1_LLM = [  # (T, splits in the hand order, LLM tokens)
    (2, 0, 2), (3, 0, 2), (4, 0, 2), (5, 2, 5), (6, 2, 5), (7, 2, 5), (8, 10, 8),
]


@pytest.mark.parametrize("target, k, llm", CASE1_LLM)
def test_case1_llm_budget_follows_the_hand_order(target, k, llm):
    masks, (info,) = select_patches_by_budget(CASE1_MAPS, target / 8, budget_unit="llm")
    expected = _masks_after_splits(CASE1_ORDER[:k], {14: (4, 8), 28: (2, 4), 56: (1, 2)})
    for size in (14, 28, 56):
        assert torch.equal(masks[size], expected[size]), (target, size)
    (stats,) = token_stats(masks)
    assert stats.llm_tokens == info.llm_tokens == llm
    assert (info.budget, info.k, info.vision_tokens) == (target, k, 2 + 3 * k)
    assert (info.baseline_llm_tokens, info.min_llm_tokens, info.clamped) == (8, 2, False)
    assert info.budget_unit == "llm" and info.target_llm_retention == target / 8 and info.target_retention is None
    assert 0 <= info.budget - info.llm_tokens < 3


def test_case2_llm_budget_counts_the_forced_splits():
    # Case 2 (70x84, merge groups over a 5x6 base grid: 3x3 = 9 = L). The minimum holds 56(0,0),
    # 28(0,2), 28(1,2) and base row 4, whose six patches are three merge groups: 3 + 3 = 6 LLM tokens
    # (9 vision tokens). T = round(0.5 * 9) = 4 < 6: clamped to the minimum.
    masks, (info,) = select_patches_by_budget(CASE2_MAPS, 0.5, image_size=(70, 84), budget_unit="llm")
    assert (info.baseline_llm_tokens, info.min_llm_tokens, info.budget, info.clamped) == (9, 6, 4, True)
    assert info.llm_tokens == token_stats(masks)[0].llm_tokens == 6 and info.vision_tokens == 9
    # T = 9: the free 28 px splits come first (28(1,2), 28(0,2)), then 56(0,0) (+3), then the rest (+0).
    masks, (info,) = select_patches_by_budget(CASE2_MAPS, 1.0, image_size=(70, 84), budget_unit="llm")
    assert (info.k, info.llm_tokens, info.vision_tokens) == (7, 9, 30)
    assert torch.equal(masks[14], torch.ones(1, 5, 6))


def test_llm_budget_needs_a_merge_size_whose_split_costs_are_fixed():
    with pytest.raises(ValueError, match="merge_size 1 or 2"):
        select_patches_by_budget(CASE1_MAPS, 0.5, budget_unit="llm", merge_size=4)
    with pytest.raises(ValueError, match="unknown budget_unit 'tokens'"):
        select_patches_by_budget(CASE1_MAPS, 0.5, budget_unit="tokens")


def test_llm_budget_with_merge_size_one_is_the_vision_budget():
    for alpha in (0.2, 0.5, 0.9):
        vision_masks, (vision,) = select_patches_by_budget(CASE1_MAPS, alpha)
        llm_masks, (llm,) = select_patches_by_budget(CASE1_MAPS, alpha, budget_unit="llm", merge_size=1)
        assert all(torch.equal(vision_masks[s], llm_masks[s]) for s in (14, 28, 56))
        assert llm.llm_tokens == vision.vision_tokens and llm.baseline_llm_tokens == 32


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_llm_budget_on_photos_lands_within_one_split(name, resized_photos):
    image = resized_photos[name]
    maps = compute_patch_entropy_batched(image)
    size = tuple(image.shape[-2:])
    previous = 0
    for alpha in (0.05, 0.1, 0.25, 0.3, 0.5, 0.75, 1.0):
        masks, (info,) = select_patches_by_budget(maps, alpha, image_size=size, budget_unit="llm")
        (stats,) = token_stats(masks)
        assert info.baseline_llm_tokens == stats.baseline_llm_tokens == info.base_tokens // 4
        assert info.budget == round(alpha * info.baseline_llm_tokens)
        assert info.llm_tokens == stats.llm_tokens and info.vision_tokens == stats.vision_tokens
        if not info.clamped:
            assert 0 <= info.budget - stats.llm_tokens <= 3  # within one split of the target
        assert stats.llm_tokens >= previous
        previous = stats.llm_tokens
        assert torch.equal(base_coverage(masks), torch.ones_like(masks[14]))
        # the same order as the vision budget: the result is one of its prefixes
        vision_masks, _ = select_patches_by_budget(maps, info.vision_tokens / info.base_tokens, image_size=size)
        assert all(torch.equal(vision_masks[s], masks[s]) for s in masks)
