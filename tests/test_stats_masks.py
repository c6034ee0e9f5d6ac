"""``--save-masks``: the encoding restores every selection exactly, and the reader gives back what the run selected."""
from __future__ import annotations

import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import apt_viz
from apt_viz.analysis import analyze_image
from apt_viz.cli import app, route
from apt_viz.core.config import APTConfig
from apt_viz.core.pipeline import run_apt
from apt_viz.stats.masks import FORMAT_VERSION, decode_masks, encode_masks

from helpers import PHOTO_PATHS, base_coverage, load_photo_tensor

METHODS = [("v1", {}), ("v2", {"alpha": 0.9}), ("v2", {"alpha": 1.4}), ("budget", {"alpha": 0.05}),
           ("budget", {"alpha": 0.35}), ("budget", {"alpha": 1.0})]


@pytest.mark.parametrize("method, settings_", METHODS)
@pytest.mark.parametrize("size", [(392, 588), (250, 370), (14, 14), (70, 980)])
def test_every_method_round_trips_exactly(method, settings_, size):
    images = torch.cat([load_photo_tensor(name, size=size) for name in ("coffee", "rocket")])
    masks = run_apt(images, APTConfig(method=method, **settings_)).selection.masks
    encoded = encode_masks(masks)
    for index, data in enumerate(encoded):
        restored = decode_masks(data, size)
        assert list(restored) == sorted(masks)
        for cell, mask in masks.items():
            assert restored[cell].dtype == torch.float32 and torch.equal(restored[cell], mask[index])


@pytest.mark.parametrize("patch_size, num_scales", [(14, 1), (14, 2), (16, 4)])
def test_other_grids(patch_size, num_scales):
    images = load_photo_tensor("astronaut", size=(200, 333))
    config = APTConfig(method="budget", alpha=0.4, patch_size=patch_size, num_scales=num_scales)
    masks = run_apt(images, config).selection.masks
    restored = decode_masks(encode_masks(masks)[0], (200, 333), patch_size, num_scales)
    assert all(torch.equal(restored[size], masks[size][0]) for size in masks)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_random_quadtrees_round_trip(rows, cols, seed):
    """Any partition of aligned cells (made by random splits of the top grid down) survives the encoding."""
    generator = torch.Generator().manual_seed(seed)
    height, width = rows * 14, cols * 14
    sizes = (14, 28, 56)
    shapes = {s: (-(-height // s), -(-width // s)) for s in sizes}
    split56 = torch.rand(shapes[56], generator=generator) < 0.5
    split28 = (torch.rand(shapes[28], generator=generator) < 0.5) & split56.repeat_interleave(2, 0).repeat_interleave(2, 1)[: shapes[28][0], : shapes[28][1]]
    masks = {
        56: (~split56).float()[None],
        28: (split56.repeat_interleave(2, 0).repeat_interleave(2, 1)[: shapes[28][0], : shapes[28][1]] & ~split28).float()[None],
        14: split28.repeat_interleave(2, 0).repeat_interleave(2, 1)[: shapes[14][0], : shapes[14][1]].float()[None],
    }
    assert bool((base_coverage(masks) == 1).all())
    restored = decode_masks(encode_masks(masks)[0], (height, width))
    assert all(torch.equal(restored[s], masks[s][0]) for s in sizes)


def test_size_of_the_encoding():
    masks = run_apt(load_photo_tensor("rocket", size=(812, 1232)), APTConfig(method="budget", alpha=0.3)).selection.masks
    data = encode_masks(masks)[0]
    assert data[0] == FORMAT_VERSION
    assert len(data) == 1 + (44 * 29 + 22 * 15 + 7) // 8  # one bit per cell above the base: 202 bytes


def test_not_a_partition_is_refused_and_bad_data_is_reported():
    masks = run_apt(load_photo_tensor("coffee", size=(112, 112)), APTConfig()).selection.masks
    broken = {size: m.clone() for size, m in masks.items()}
    broken[14][0, 0, 0] = 1 - broken[14][0, 0, 0]
    with pytest.raises(RuntimeError, match="not a quadtree partition"):
        encode_masks(broken)
    data = encode_masks(masks)[0]
    with pytest.raises(ValueError, match="does not fit"):
        decode_masks(data, (224, 224))
    with pytest.raises(ValueError, match="not an apt-viz mask encoding"):
        decode_masks(b"\x07" + data[1:], (112, 112))


def test_reader_gives_the_masks_of_each_image(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("coffee", "chelsea"):
        shutil.copy(PHOTO_PATHS[name], folder / f"{name}.jpg")
    (folder / "bad.jpg").write_text("nope")
    table = tmp_path / "stats.parquet"
    result = CliRunner().invoke(app, route(["stats", str(folder), "-o", str(table), "-m", "budget", "--alpha",
                                            "0.3,0.6", "--save-masks", "--device", "cpu"]))
    assert result.exit_code == 1, result.output
    saved = list(apt_viz.read_masks(table))
    assert len(saved) == 4  # the failed input has no masks
    for entry in saved:
        alpha = float(entry.setting.split("=")[1])
        analysis = analyze_image(entry.path, APTConfig(method="budget", alpha=alpha))
        assert entry.image_hw == analysis.resized_hw
        assert all(torch.equal(entry.masks[size], analysis.masks[size]) for size in analysis.masks)
    only = list(apt_viz.read_masks(table, setting="budget alpha=0.6"))
    assert {entry.path for entry in only} == {str(folder / "coffee.jpg"), str(folder / "chelsea.jpg")}
    without = tmp_path / "plain.parquet"
    CliRunner().invoke(app, route(["stats", str(folder / "coffee.jpg"), "-o", str(without), "--device", "cpu"]))
    with pytest.raises(ValueError, match="--save-masks"):
        next(apt_viz.read_masks(without))
