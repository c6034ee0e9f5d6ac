"""render: inferno heatmaps and the patch overlay, checked pixel by pixel against hand-built cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from apt_viz import render
from apt_viz.analysis import analyze_image
from apt_viz.core.config import APTConfig


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
