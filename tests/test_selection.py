"""v1 and v2 selection (docs/contract.md, section 4) on hand-made maps whose masks are listed cell by cell, plus v2's
effective thresholds and the select_patches entry point."""
from __future__ import annotations

import math

import pytest
import torch

from apt_viz.core.scoring import compute_patch_entropy_batched
from apt_viz.core.selection import (
    dynamic_thresholds,
    select_patches,
    select_patches_by_threshold,
    select_patches_by_threshold_v2,
)
from apt_viz.report.records import stats_record

from helpers import HAND_MAPS, HAND_MASKS, PHOTO_NAMES, base_coverage, grid, token_count


def test_v1_hand_made_maps_cell_by_cell():
    masks = select_patches_by_threshold(HAND_MAPS, [3.0, 2.0])
    # helpers.HAND_MASKS, worked by hand: 56 px, threshold 2.0 (thresholds[1]): (0,0)=1.0 and
    # (1,1)=1.9 are kept; 2.5 and 5.0 are not. 28 px, threshold 3.0 (thresholds[0]), strict: 3.0 is
    # not kept; score < 3 gives 1 1 1 0 / 1 1 0 1 / 1 0 1 1 / 0 1 1 1, then the quadrants under the
    # kept 56-px cells are cleared. 14 px: every base cell not under a kept 28/56 cell.
    for size in (56, 28, 14):
        assert torch.equal(masks[size], HAND_MASKS[size]), size
    assert token_count(masks) == 2 + 4 + 16
    assert torch.equal(base_coverage(masks), torch.ones(1, 8, 8))


def test_v1_threshold_i_minus_1_belongs_to_scale_i():
    # Swapped thresholds: 56 px now uses 3.0, so (0,1)=2.5 is kept too; 28 px uses 2.0.
    masks = select_patches_by_threshold(HAND_MAPS, [2.0, 3.0])
    assert torch.equal(masks[56], grid([[1, 1],
                                        [0, 1]]))
    assert torch.equal(masks[28], grid([[0, 0, 0, 0],
                                        [0, 0, 0, 0],
                                        [0, 0, 0, 0],
                                        [0, 0, 0, 0]]))  # 2.0 and 2.99 are not < 2.0; the rest is covered
    assert int(masks[14].sum()) == 64 - 3 * 16
    assert torch.equal(base_coverage(masks), torch.ones(1, 8, 8))


def test_v1_extreme_thresholds():
    everything = select_patches_by_threshold(HAND_MAPS, [math.inf, math.inf])
    assert token_count(everything) == 4 and int(everything[56].sum()) == 4
    nothing = select_patches_by_threshold(HAND_MAPS, [-math.inf, -math.inf])
    assert token_count(nothing) == 64 and int(nothing[14].sum()) == 64


def test_v1_never_keeps_partial_cells():
    # 100x131: base grid 8x10, 28-px grid 4x5 (row 3 and column 4 partial), 56-px grid 2x3
    # (row 1 and column 2 partial). All-zero scores: everything whole is below any threshold.
    maps = {14: torch.zeros(1, 8, 10), 28: torch.zeros(1, 4, 5), 56: torch.zeros(1, 2, 3)}
    masks = select_patches_by_threshold(maps, [3.0, 2.0], image_size=(100, 131))
    assert torch.equal(masks[56], grid([[1, 1, 0],
                                        [0, 0, 0]]))
    assert torch.equal(masks[28], grid([[0, 0, 0, 0, 0],
                                        [0, 0, 0, 0, 0],
                                        [1, 1, 1, 1, 0],
                                        [0, 0, 0, 0, 0]]))
    expected_14 = torch.zeros(1, 8, 10)
    expected_14[:, 6:, :] = 1  # under the partial 28-px row (base rows 6-7, incl. partial base row 7)
    expected_14[:, :6, 8:] = 1  # under the partial 28-px column
    assert torch.equal(masks[14], expected_14)
    assert token_count(masks) == 2 + 4 + 32
    assert torch.equal(base_coverage(masks), torch.ones(1, 8, 10))


def test_v1_per_image_threshold_tensor_equals_one_by_one():
    maps = {s: torch.cat([m, m.flip(-1)]) for s, m in HAND_MAPS.items()}
    per_image = torch.tensor([[3.0, 2.0], [1.5, 5.5]])
    batched = select_patches_by_threshold(maps, per_image)
    for b in range(2):
        single = select_patches_by_threshold({s: m[b : b + 1] for s, m in maps.items()}, per_image[b].tolist())
        for size in maps:
            assert torch.equal(batched[size][b], single[size][0])


def test_v1_wrong_threshold_count():
    with pytest.raises(ValueError, match="need 2 thresholds"):
        select_patches_by_threshold(HAND_MAPS, [3.0])


# --- v2 ----------------------------------------------------------------------------------------

def test_v2_effective_thresholds_are_alpha_times_mean_of_whole_cells():
    # 100x131: whole 28-px cells are rows 0-2 x cols 0-3; whole 56-px cells are (0,0) and (0,1).
    gen = torch.Generator().manual_seed(1)
    maps = {14: torch.rand(1, 8, 10, generator=gen) * 9, 28: torch.rand(1, 4, 5, generator=gen) * 9,
            56: torch.rand(1, 2, 3, generator=gen) * 9}
    maps[28][:, 3, :] = maps[28][:, :, 4] = 1e6  # what entropy puts on padded cells: must not count
    maps[56][:, 1, :] = maps[56][:, :, 2] = 1e6
    alpha = 0.8
    by_hand = [alpha * maps[28][0, :3, :4].double().mean().item(), alpha * maps[56][0, 0, :2].double().mean().item()]
    effective = dynamic_thresholds(maps, alpha, image_size=(100, 131))
    assert effective.shape == (1, 2)
    assert effective[0].tolist() == pytest.approx(by_hand, rel=1e-6)
    masks = select_patches_by_threshold_v2(maps, alpha, image_size=(100, 131))
    expected = select_patches_by_threshold(maps, by_hand, image_size=(100, 131))
    for size in maps:
        assert torch.equal(masks[size], expected[size])
    selection = select_patches(maps, "v2", alpha=alpha, image_size=(100, 131))
    assert selection.thresholds[0].tolist() == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_v2_thresholds_on_photos(name, resized_photos):
    image = resized_photos[name]
    height, width = image.shape[-2:]
    maps = compute_patch_entropy_batched(image)
    alpha = 1.3
    effective = dynamic_thresholds(maps, alpha, image_size=(height, width))
    for column, size in enumerate([28, 56]):
        whole = maps[size][0, : height // size, : width // size]  # whole cells: the floor-sized top-left block
        assert effective[0, column].item() == pytest.approx(alpha * whole.double().mean().item(), rel=1e-5)


def test_v2_nan_threshold_when_a_scale_has_no_whole_cell():
    # 50x50: the single 56-px cell is partial; one 28-px cell (0,0) is whole.
    maps = {14: torch.zeros(1, 4, 4), 28: grid([[1.0, 9.0], [9.0, 9.0]]), 56: grid([[0.0]])}
    effective = dynamic_thresholds(maps, 2.0, image_size=(50, 50))
    assert effective[0, 0].item() == pytest.approx(2.0)
    assert math.isnan(effective[0, 1].item())
    masks = select_patches_by_threshold_v2(maps, 2.0, image_size=(50, 50))
    assert int(masks[56].sum()) == 0  # nothing is kept at a NaN threshold
    assert torch.equal(masks[28], grid([[1, 0], [0, 0]]))  # 1.0 < 2.0; the others are partial
    assert torch.equal(base_coverage(masks), torch.ones(1, 4, 4))


def test_v2_nan_threshold_reaches_stats_json_as_null():
    from PIL import Image

    from apt_viz import APTConfig, analyze_image

    image = Image.fromarray((torch.rand(50, 50, 3, generator=torch.Generator().manual_seed(3)) * 255).byte().numpy())
    analysis = analyze_image(image, APTConfig(method="v2", alpha=1.0, resize=False))
    thresholds = stats_record(analysis)["thresholds"]
    assert thresholds[1] is None and isinstance(thresholds[0], float)


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_v2_higher_alpha_never_more_tokens(name, resized_photos):
    image = resized_photos[name]
    maps = compute_patch_entropy_batched(image)
    size = tuple(image.shape[-2:])
    counts = [token_count(select_patches_by_threshold_v2(maps, a, size)) for a in (0.25, 0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 4.0)]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > counts[-1]  # alpha really moves the result on a photo


# --- select_patches entry point ------------------------------------------------------------------

def test_select_patches_reports_what_it_applied():
    v1 = select_patches(HAND_MAPS, "v1")
    assert v1.thresholds.tolist() == [[3.0, 2.0]] and v1.budget_info is None  # APT defaults
    assert torch.equal(v1.masks[28], select_patches_by_threshold(HAND_MAPS, [3.0, 2.0])[28])
    budget = select_patches(HAND_MAPS, "budget", alpha=0.5)
    assert budget.thresholds is None and len(budget.budget_info) == 1 and budget.alpha == 0.5


@pytest.mark.parametrize(
    "method,kwargs,message",
    [
        ("v3", {}, "unknown patch_selection_method"),
        ("v1", {"thresholds": [1.0]}, "v1 needs 2 thresholds"),
        ("v2", {"alpha": 0.0}, "alpha must be > 0"),
        ("v2", {"alpha": math.nan}, "alpha must be > 0"),
        ("budget", {"alpha": 1.5}, r"alpha must be in \(0, 1\]"),
        ("budget", {"alpha": -0.1}, "alpha must be > 0"),
    ],
)
def test_select_patches_rejects_bad_arguments(method, kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_patches(HAND_MAPS, method, **kwargs)


def test_selection_does_not_modify_maps():
    maps = {s: m.clone() for s, m in HAND_MAPS.items()}
    for method in ("v1", "v2", "budget"):
        select_patches(maps, method, alpha=0.5, image_size=(100, 100))
        for size in maps:
            assert torch.equal(maps[size], HAND_MAPS[size])


@pytest.mark.parametrize("name", PHOTO_NAMES[:2])
def test_all_methods_partition_real_photos(name, resized_photos):
    image = resized_photos[name]
    maps = compute_patch_entropy_batched(image)
    for method in ("v1", "v2", "budget"):
        masks = select_patches(maps, method, alpha=0.5, image_size=tuple(image.shape[-2:])).masks
        assert torch.equal(base_coverage(masks), torch.ones_like(masks[14]))
