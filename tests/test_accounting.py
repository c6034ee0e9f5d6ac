"""Qwen2-VL token accounting (docs/contract.md, section 5) on hand-made masks and on a budget run over a photo."""
from __future__ import annotations

import pytest
import torch

from apt_viz import APTConfig, analyze_image
from apt_viz.core.accounting import token_stats
from apt_viz.core.selection import select_patches_by_budget
from apt_viz.report.records import stats_record

from helpers import HAND_MASKS, PHOTO_PATHS, grid


def test_hand_made_masks():
    (stats,) = token_stats(HAND_MASKS, merge_size=2)
    assert stats.tokens_per_scale == {14: 16, 28: 4, 56: 2}
    assert stats.vision_tokens == 22 and stats.base_tokens == 64
    # 16 base cells = 4 whole 2x2 merge groups -> 4 LLM tokens; each larger cell is 1.
    assert stats.llm_tokens == 16 // 4 + 4 + 2 == 10
    assert stats.baseline_llm_tokens == 64 // 4
    assert stats.retention == pytest.approx(22 / 64)
    assert stats.llm_retention == pytest.approx(10 / 16)
    as_json = stats.to_dict()
    assert as_json["tokens_per_scale"] == {"14": 16, "28": 4, "56": 2}
    assert as_json["retention"] == pytest.approx(22 / 64) and as_json["llm_retention"] == pytest.approx(10 / 16)


def test_no_apt_is_the_baseline():
    masks = {14: torch.ones(1, 8, 10), 28: torch.zeros(1, 4, 5), 56: torch.zeros(1, 2, 3)}
    (stats,) = token_stats(masks)
    assert (stats.vision_tokens, stats.llm_tokens, stats.baseline_llm_tokens) == (80, 20, 20)
    assert stats.retention == stats.llm_retention == 1.0


def test_merge_size_one_counts_every_patch():
    (stats,) = token_stats(HAND_MASKS, merge_size=1)
    assert stats.llm_tokens == stats.vision_tokens == 22 and stats.baseline_llm_tokens == 64


def test_batch_gives_one_stats_per_image():
    masks = {s: torch.cat([m, torch.zeros_like(m)]) for s, m in HAND_MASKS.items()}
    masks[56][1] = 1.0  # second image: only the four 56-px cells
    first, second = token_stats(masks)
    assert first.llm_tokens == 10
    assert (second.vision_tokens, second.llm_tokens, second.baseline_llm_tokens) == (4, 4, 16)


def test_grid_not_aligned_with_the_merge_grid():
    # 70x84 without resizing (test_budget's case 2 at alpha 0.5): base grid 5x6, selected base cells
    # rows 0-3 x cols 4-5 (2 whole groups) and the whole last row 4 (3 part-groups of 2 cells each).
    maps = {14: torch.zeros(1, 5, 6), 28: grid([[3.0, 0.5, 2.0], [0.1, 0.2, 4.0], [0.0, 0.0, 0.0]]),
            56: grid([[1.0, 0.0], [0.0, 0.0]])}
    masks, _ = select_patches_by_budget(maps, 0.5, image_size=(70, 84))
    (stats,) = token_stats(masks)
    assert stats.tokens_per_scale == {14: 14, 28: 0, 56: 1}
    assert stats.llm_tokens == 5 + 0 + 1
    assert stats.baseline_llm_tokens == 3 * 3  # ceil(5 / 2) * ceil(6 / 2)


@pytest.mark.parametrize("name", ["astronaut", "rocket"])
def test_budget_run_on_a_photo(name):
    analysis = analyze_image(PHOTO_PATHS[name], APTConfig(method="budget", alpha=0.3))
    height, width = analysis.resized_hw
    n = (height // 14) * (width // 14)
    counts = {s: int(m.sum()) for s, m in analysis.masks.items()}
    stats = analysis.stats
    assert stats.base_tokens == n and stats.vision_tokens == sum(counts.values()) == analysis.budget_info.vision_tokens
    assert counts[14] % 4 == 0  # smart-resized grids align with the merger: whole 2x2 groups
    assert stats.llm_tokens == counts[14] // 4 + counts[28] + counts[56]
    assert stats.baseline_llm_tokens == n // 4
    assert stats.vision_tokens <= round(0.3 * n) < stats.vision_tokens + 3
    record = stats_record(analysis)
    assert record["llm_tokens"] == stats.llm_tokens and record["baseline_llm_tokens"] == n // 4
    assert record["llm_retention"] == pytest.approx(stats.llm_tokens / (n // 4))
    assert record["retention"] == pytest.approx(stats.vision_tokens / n)
