"""render: heatmaps (bare and on the image), the patch overlay and the LLM-token map, pixel by pixel on hand-built cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from apt_viz import render
from apt_viz.analysis import analyze_image
from apt_viz.core.accounting import token_stats
from apt_viz.core.config import APTConfig
from apt_viz.core.grids import partial_cells
from apt_viz.core.selection import select_patches_by_budget
from apt_viz.render import _draw, llm_tokens
from apt_viz.report.records import stats_record

from helpers import grid


def test_inferno_lut_is_opencv_inferno():
    cv2 = pytest.importorskip("cv2")
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(-1, 1), cv2.COLORMAP_INFERNO)[:, 0, ::-1]
    assert np.array_equal(render.inferno_lut(), bgr)
    assert tuple(render.inferno_lut()[0]) == (0, 0, 4) and tuple(render.inferno_lut()[255]) == (252, 255, 164)


def test_split_cells_hand_case():
    # 4x4 base grid, 2x2 grid of 28 px, 1x1 of 56 px. Keep the top-left 28 cell, the rest is 14 px.
    m56 = torch.zeros(1, 1)
    m28 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    m14 = torch.ones(4, 4)
    m14[:2, :2] = 0
    masks = {14: m14, 28: m28, 56: m56}
    assert render.split_cells(masks, 56).tolist() == [[True]]
    assert render.split_cells(masks, 28).tolist() == [[False, True], [True, True]]
    # a kept 56 cell covers everything below it: nothing is split at 28
    covered = {14: torch.zeros(4, 4), 28: torch.zeros(2, 2), 56: torch.ones(1, 1)}
    assert not render.split_cells(covered, 28).any()


def test_heatmap_colours_range_and_pad_cells():
    # 3x3 grid of 14 px over a 40x40 image: the last row/column is partial and carries pad_value 1e6.
    scores = torch.tensor([[1.0, 3.0, 1e6], [5.0, 2.0, 1e6], [1e6, 1e6, 1e6]])
    heat = render.heatmap_pixels(scores, 14, (40, 40))
    lut = render.inferno_lut()
    assert heat.pixels.shape == (40, 40, 3)
    assert (heat.low, heat.high) == (1.0, 5.0)  # the pad value is out of the range
    assert heat.partial == 5 and heat.split is None
    # cell (r, c) -> pixel colour LUT[round(255 * (v - 1) / 4)]
    for (row, col), value in {(0, 0): 1.0, (0, 1): 3.0, (1, 0): 5.0, (1, 1): 2.0}.items():
        expected = lut[round(255 * (value - 1.0) / 4.0)]
        block = heat.pixels[row * 14 : row * 14 + 14, col * 14 : col * 14 + 14]
        assert (block == expected).all(), (row, col)
    partial_block = heat.pixels[28:40, :]
    colours = {tuple(c) for c in partial_block.reshape(-1, 3)}
    assert colours == set(render.PARTIAL_HATCH)


def test_heatmap_outlines_split_cells_only():
    scores = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    split = np.array([[False, True], [False, False]])
    heat = render.heatmap_pixels(scores, 28, (56, 56), split=split)
    cyan = np.all(heat.pixels == render.SPLIT_OUTLINE, axis=-1)
    assert heat.split == 1
    assert cyan[0:28, 28:56].sum() == 28 * 28 - 24 * 24  # a 2 px ring inside the split cell
    assert not cyan[:, :28].any() and not cyan[28:, :].any()


def test_heatmap_image_places_heatmap_under_title():
    scores = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    heat = render.heatmap_pixels(scores, 14, (28, 28))
    picture = render.heatmap_image(scores, 14, (28, 28))
    placed = np.asarray(picture)[render.TITLE_HEIGHT : render.TITLE_HEIGHT + 28, :28]
    assert np.array_equal(placed, heat.pixels)
    assert picture.width > 28 + render.COLORBAR_WIDTH  # colour bar and title fit


def test_overlay_colours_outline_and_tint():
    image = Image.new("RGB", (56, 56), (100, 100, 100))
    masks = {14: torch.zeros(4, 4), 28: torch.zeros(2, 2), 56: torch.zeros(1, 1)}
    masks[28][0, 0] = 1
    masks[14][:, 2:] = 1
    masks[14][2:, :2] = 1
    picture = np.asarray(render.patch_overlay(image, masks, tint=0.25))
    red, green = render.SCALE_COLOURS[0], render.SCALE_COLOURS[1]
    assert tuple(picture[0, 0]) == green  # edge of the kept 28 px cell
    assert tuple(picture[27, 10]) == green
    assert tuple(picture[10, 10]) == tuple(round(100 * 0.75 + c * 0.25) for c in green)  # tinted inside
    assert tuple(picture[0, 28]) == red and tuple(picture[13, 41]) == red  # 14 px cell edges
    assert tuple(picture[5, 33]) == tuple(round(100 * 0.75 + c * 0.25) for c in red)
    assert picture.shape[1] >= 56 and picture.shape[0] > 56  # legend below


def test_analysis_pictures_on_real_photo(photo_paths):
    analysis = analyze_image(photo_paths["chelsea"], APTConfig(method="budget", alpha=0.4))
    height, width = analysis.resized_hw
    heatmaps = render.analysis_heatmaps(analysis)
    assert sorted(heatmaps) == [14, 28, 56]
    for _size, picture in heatmaps.items():
        assert picture.width >= width and picture.height >= height + render.TITLE_HEIGHT
    split28 = render.split_cells(analysis.masks, 28)
    # every base patch either belongs to a split 28 cell (or a split 56 cell) or is covered whole
    assert int(split28.sum()) * 4 >= analysis.stats.tokens_per_scale[14]
    overlay = render.analysis_overlay(analysis)
    assert overlay.width >= width and overlay.height > height
    assert "budget" in render.selection_caption(analysis) and "target" in render.selection_caption(analysis)


# --- blending and outlines ---------------------------------------------------------------------------

def test_blend_is_the_rounded_convex_combination():
    rng = np.random.default_rng(0)
    base, top = (rng.integers(0, 256, (9, 11, 3), dtype=np.uint8) for _ in range(2))
    for weight in (0.0, 0.3, 0.5, 1.0):
        exact = base * (1 - weight) + top * weight
        assert np.abs(_draw.blend(base, top, weight) - exact).max() <= 1  # weight in 1/255 steps, then rounded
    assert np.array_equal(_draw.blend(base, top, 0.0), base) and np.array_equal(_draw.blend(base, top, 1.0), top)
    per_pixel = _draw.weights((9, 11), 0.0)
    per_pixel[2, 3] = _draw.weight_of(1.0)
    mixed = _draw.blend(base, top, per_pixel)
    assert np.array_equal(mixed[2, 3], top[2, 3]) and np.array_equal(mixed[0, 0], base[0, 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _draw.blend(base, top, 1.5)


def test_region_edges_ring_each_region():
    labels = np.array([[0, 0, 0, 1, 1],
                       [0, 0, 0, 1, 1],
                       [0, 0, 0, 1, 1],
                       [2, 2, 2, 2, 2]])
    edges = _draw.region_edges(labels)
    assert edges.tolist() == [[True, True, True, True, True],
                              [True, False, True, True, True],
                              [True, True, True, True, True],
                              [True, True, True, True, True]]


@pytest.mark.parametrize(("cell", "image_hw", "nan_at"), [
    (14, (40, 40), None),  # last row and column partial
    (28, (56, 100), None),  # last column only
    (28, (100, 56), (1, 0)),  # last row, plus a non-finite score inside
])
def test_partial_hatch_matches_stripes_over_the_whole_picture(cell, image_hw, nan_at):
    shape = (-(-image_hw[0] // cell), -(-image_hw[1] // cell))
    scores = np.arange(shape[0] * shape[1], dtype=np.float64).reshape(shape)
    if nan_at is not None:
        scores[nan_at] = np.nan
    heat = render.heatmap_pixels(scores, cell, image_hw)
    partial = np.asarray(partial_cells(*image_hw, cell)) | ~np.isfinite(scores)
    inside = _draw.cell_pixels(partial, cell, image_hw)
    stripes = _draw.hatch(*image_hw)
    assert (heat.pixels[inside & stripes] == render.PARTIAL_HATCH[1]).all()
    assert (heat.pixels[inside & ~stripes] == render.PARTIAL_HATCH[0]).all()
    assert heat.partial == int(partial.sum())


# --- heatmap on the image (grad-cam's show_cam_on_image convention) ----------------------------------

def test_heatmap_on_image_blends_half_and_keeps_the_outline():
    scores = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    heat = render.heatmap_pixels(scores, 28, (56, 56), split=np.array([[False, True], [False, False]]))
    photo = np.random.default_rng(1).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    shown = render.show_heatmap_on_image(photo, heat)
    expected = 0.5 * heat.pixels + 0.5 * photo  # (1 - image_weight) * heatmap + image_weight * img
    off = ~heat.outline
    assert np.abs(shown[off] - expected[off]).max() <= 1
    assert (shown[heat.outline] == render.SPLIT_OUTLINE).all()  # crisp, as on the bare map
    assert np.array_equal(render.show_heatmap_on_image(photo, heat, image_weight=1.0)[off], photo[off])
    with pytest.raises(ValueError, match="image_weight"):
        render.show_heatmap_on_image(photo, heat, image_weight=-0.1)
    with pytest.raises(ValueError, match="differ in size"):
        render.show_heatmap_on_image(photo[:28], heat)


def test_importance_overlay_is_placed_like_the_heatmap():
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (56, 84, 3), dtype=np.uint8))
    scores = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    picture = render.importance_overlay(image, scores, 28, label="entropy importance")
    heat = render.heatmap_pixels(scores, 28, (56, 84))
    placed = np.asarray(picture)[render.TITLE_HEIGHT : render.TITLE_HEIGHT + 56, :84]
    assert np.array_equal(placed, render.show_heatmap_on_image(np.asarray(image), heat))
    bare = render.heatmap_image(scores, 28, (56, 84))
    assert picture.width >= bare.width and picture.height == bare.height  # same canvas, longer title


# --- the LLM-token map -------------------------------------------------------------------------------

def test_llm_token_map_hand_case():
    # 56x56: the top-left 28 px cell kept, the other three quarters split into 14 px patches.
    # LLM tokens: three 2x2 merge groups + one 28 px patch = 4 regions.
    image = Image.new("RGB", (56, 56), (100, 100, 100))
    masks = {14: torch.ones(4, 4), 28: torch.zeros(2, 2), 56: torch.zeros(1, 1)}
    masks[14][:2, :2] = 0
    masks[28][0, 0] = 1
    drawn = render.llm_token_pixels(image, masks, merge_size=2)
    assert drawn.tokens == 4 == len(np.unique(drawn.labels))
    assert [(k.patch_size, k.cell_size, k.tokens, k.patches_per_token) for k in drawn.kinds] == [
        (14, 28, 3, 4), (28, 28, 1, 1), (56, 56, 0, 1)]
    quarters = {tuple(np.unique(drawn.labels[r:r + 28, c:c + 28])) for r in (0, 28) for c in (0, 28)}
    assert len(quarters) == 4 and all(len(q) == 1 for q in quarters)  # each quarter is one region
    red, green = render.SCALE_COLOURS[0], render.SCALE_COLOURS[1]
    tinted = _draw.weight_of(llm_tokens.REGION_TINT) / 255
    assert tuple(drawn.pixels[0, 0]) == green and tuple(drawn.pixels[27, 27]) == green  # the 28 px patch's ring
    assert tuple(drawn.pixels[10, 10]) == tuple(round(100 * (1 - tinted) + c * tinted) for c in green)
    assert tuple(drawn.pixels[0, 28]) == red and tuple(drawn.pixels[55, 55]) == red  # merge groups' rings
    inner = tuple(drawn.pixels[5, 28 + 14])  # the line between two patches inside one merge group
    assert inner not in (red, tuple(drawn.pixels[5, 28 + 5]))  # lighter than the ring, darker than the tint
    picture = render.llm_token_map(image, masks, 2, caption="hand case")
    assert np.array_equal(np.asarray(picture)[:56, :56], drawn.pixels) and picture.height > 56


def test_llm_token_map_without_merging_counts_every_patch():
    masks = {14: torch.ones(2, 2), 28: torch.zeros(1, 1)}
    drawn = render.llm_token_pixels(Image.new("RGB", (28, 28)), masks, merge_size=1)
    assert drawn.tokens == 4 == len(np.unique(drawn.labels))
    assert drawn.kinds[0].patches_per_token == 1


def test_llm_token_map_on_an_unaligned_grid_counts_part_groups():
    # test_accounting's 70x84 case without resizing: 2 whole merge groups, 3 part-groups, one 56 px patch.
    maps = {14: torch.zeros(1, 5, 6), 28: grid([[3.0, 0.5, 2.0], [0.1, 0.2, 4.0], [0.0, 0.0, 0.0]]),
            56: grid([[1.0, 0.0], [0.0, 0.0]])}
    masks, _ = select_patches_by_budget(maps, 0.5, image_size=(70, 84))
    (stats,) = token_stats(masks)
    drawn = render.llm_token_pixels(Image.new("RGB", (84, 70)), {s: m[0] for s, m in masks.items()}, 2)
    assert drawn.labels.shape == (70, 84) and drawn.pixels.shape == (70, 84, 3)
    assert drawn.tokens == stats.llm_tokens == len(np.unique(drawn.labels)) == 6


def test_llm_token_map_refuses_masks_that_are_not_a_partition():
    masks = {14: torch.ones(2, 2), 28: torch.ones(1, 1)}  # the 28 px cell and its patches both kept
    with pytest.raises(ValueError, match="exactly once"):
        render.llm_token_pixels(Image.new("RGB", (28, 28)), masks, 2)


@pytest.mark.parametrize("config", [APTConfig(method="v1"), APTConfig(method="v2", alpha=1.2),
                                    APTConfig(method="budget", alpha=0.3)], ids=["v1", "v2", "budget"])
def test_llm_token_regions_equal_the_recorded_llm_tokens(photo_paths, config):
    analysis = analyze_image(photo_paths["rocket"], config)
    drawn = render.llm_token_pixels(analysis.resized, analysis.masks, analysis.config.merge_size)
    record = stats_record(analysis)
    assert len(np.unique(drawn.labels)) == drawn.tokens == record["llm_tokens"]
    assert [k.tokens for k in drawn.kinds][1:] == [record["tokens_per_scale"][s] for s in ("28", "56")]
    assert drawn.pixels.shape == (*analysis.resized_hw, 3)
    caption = render.llm_tokens.llm_token_caption(analysis)
    assert f"{record['llm_tokens']} / {record['baseline_llm_tokens']} LLM tokens" in caption
    assert f"{record['vision_tokens']} / {record['base_tokens']} vision tokens" in caption
