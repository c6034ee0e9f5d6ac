"""PatchTokenizer (docs/contract.md, section 6): un-normalization, masks -> output_mask / seqlens, patch groups, forward."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from apt_viz.core.scoring import compute_importance_maps, compute_patch_entropy_batched, compute_patch_laplacian_batched
from apt_viz.core.selection import select_patches
from apt_viz.core.tokenizer import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PatchTokenizer

from helpers import PHOTO_NAMES, base_coverage, load_photo_tensor

MEAN = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
SIZES = (14, 28, 56)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """What a CLIP-style processor feeds the model: (x / 255 - mean) / std."""
    return (images / 255.0 - MEAN) / STD


def _pair(size=(100, 131)) -> tuple[torch.Tensor, torch.Tensor]:
    """Two photos at a size that is not a multiple of 56 (base grid 8x10, partial cells at 28 and 56)."""
    raw = torch.cat([load_photo_tensor("chelsea", size=size), load_photo_tensor("coffee", size=size)])
    return raw, normalize(raw)


# --- un-normalization ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_unnormalize_recovers_the_pixels(name, resized_photos):
    raw = resized_photos[name]
    recovered = PatchTokenizer().unnormalize(normalize(raw))
    torch.testing.assert_close(recovered, raw, rtol=0, atol=1e-3)
    # Out-of-range inputs are clamped to [0, 255].
    clamped = PatchTokenizer().unnormalize(torch.full((1, 3, 2, 2), 100.0))
    assert float(clamped.max()) == 255.0


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_laplacian_maps_of_normalized_input_equal_raw_maps(name, resized_photos):
    raw = resized_photos[name]
    maps = PatchTokenizer(method="laplacian").compute_importance_maps(normalize(raw))
    expected = compute_patch_laplacian_batched(raw)
    for size in SIZES:
        torch.testing.assert_close(maps[size], expected[size], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_entropy_maps_of_normalized_input_equal_raw_maps(name, resized_photos):
    # Un-normalizing lands ~1e-5 away from the integer pixels, which can move a gray value across a
    # bin edge; on these two photos it never does (checked: identical maps), so equality must hold.
    raw = resized_photos[name]
    tokenizer = PatchTokenizer()
    maps = tokenizer.compute_importance_maps(normalize(raw))
    expected = compute_patch_entropy_batched(raw)
    for size in SIZES:
        assert torch.equal(maps[size], expected[size])


def test_custom_mean_and_std():
    raw, _ = _pair()
    tokenizer = PatchTokenizer(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), method="laplacian")
    maps = tokenizer.compute_importance_maps((raw / 255.0 - 0.5) / 0.5)
    expected = compute_patch_laplacian_batched(raw)
    for size in SIZES:
        torch.testing.assert_close(maps[size], expected[size], rtol=0, atol=1e-5)


# --- construct_masks ----------------------------------------------------------------------------

def test_output_mask_and_seqlens_follow_the_masks():
    _raw, images = _pair()
    tokenizer = PatchTokenizer(patch_selection_method="budget", alpha=0.5)
    maps = tokenizer.compute_importance_maps(images)
    masks, output_mask, seqlens = tokenizer.construct_masks(maps, image_size=(100, 131))
    per_image = [[int(masks[s][b].sum()) for s in SIZES] for b in range(2)]
    assert seqlens == [sum(counts) for counts in per_image]
    # Image after image; inside one image all base patches (1), then 28 px (2), then 56 px (3).
    expected = torch.cat(
        [torch.cat([torch.full((n,), float(idx + 1)) for idx, n in enumerate(counts)]) for counts in per_image]
    )
    assert torch.equal(output_mask, expected)
    assert -1 not in output_mask.tolist()  # no class token for Qwen2-VL
    assert torch.equal(base_coverage(masks), torch.ones(2, 8, 10))


def test_construct_masks_override_and_last_budget_info():
    _, images = _pair()
    tokenizer = PatchTokenizer(patch_selection_method="v1")
    maps = tokenizer.compute_importance_maps(images)
    tokenizer.construct_masks(maps, image_size=(100, 131))
    assert tokenizer.last_budget_info is None
    assert tokenizer.last_thresholds.tolist() == [[3.0, 2.0], [3.0, 2.0]]
    masks, _, seqlens = tokenizer.construct_masks(maps, "budget", 0.3, image_size=(100, 131))
    info = tokenizer.last_budget_info
    assert len(info) == 2 and [i.budget for i in info] == [round(0.3 * 80)] * 2
    assert seqlens == [i.vision_tokens for i in info]
    expected = select_patches(maps, "budget", alpha=0.3, image_size=(100, 131)).masks
    assert all(torch.equal(masks[s], expected[s]) for s in SIZES)
    # The override is for that call only.
    tokenizer.construct_masks(maps, image_size=(100, 131))
    assert tokenizer.last_budget_info is None and tokenizer.patch_selection_method == "v1"


def test_constructor_image_size_locates_partial_cells():
    raw, _images = _pair()
    maps = compute_patch_laplacian_batched(raw)
    zero = {s: torch.zeros_like(m) for s, m in maps.items()}  # keep everything that may be kept
    with_size = PatchTokenizer(image_size=(100, 131)).construct_masks(zero)[0]
    assert int(with_size[56][:, 1, :].sum()) == 0 and int(with_size[56][:, :, 2].sum()) == 0
    # Without a size the base grid (112x140) is taken as the image: nothing is partial at 56 px ...
    without = PatchTokenizer().construct_masks(zero)[0]
    assert int(without[56][:, :, 2].sum()) == 0  # ... except the 56-px column past 140 px
    assert int(without[56][:, 1, :2].sum()) == 4  # the bottom row, partial for a 100-px image, is kept


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown patch_selection_method"):
        PatchTokenizer(patch_selection_method="v3")
    with pytest.raises(ValueError, match="v1 needs 2 thresholds"):
        PatchTokenizer(thresholds=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        PatchTokenizer(patch_selection_method="budget", alpha=2.0)


# --- construct_patch_groups ----------------------------------------------------------------------

def test_patch_groups_shapes_and_pixels():
    _raw, images = _pair()  # 100x131: padded to 112x140 (28 / 14 px), 112x168 (56 px)
    tokenizer = PatchTokenizer(patch_selection_method="v2", alpha=1.0)
    masks, _, _ = tokenizer.construct_masks(tokenizer.compute_importance_maps(images), image_size=(100, 131))
    groups = tokenizer.construct_patch_groups(images, masks)
    for i, size in enumerate(SIZES):
        selected = masks[size].bool()
        cells = selected.nonzero().tolist()  # (b, row, col) in batch-major, row-major order
        n = len(cells)
        assert groups[f"resized_patches_{size}"].shape == (n, 3, 14, 14)
        assert torch.equal(groups[f"pos_embed_mask_{size}"], selected.flatten(1))
        rows, cols = math.ceil(100 / size), math.ceil(131 / size)
        padded = F.pad(images, (0, cols * size - 131, 0, rows * size - 100))
        if i == 0:
            downsampled = padded
        elif i == 1:  # bilinear by 1/2 with align_corners=False is exactly a 2x2 average
            downsampled = F.avg_pool2d(padded, 2)
        else:
            downsampled = F.interpolate(padded, scale_factor=0.25, mode="bilinear", align_corners=False)
        for k, (b, r, c) in enumerate(cells):
            torch.testing.assert_close(
                groups[f"resized_patches_{size}"][k], downsampled[b, :, r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14],
                rtol=0, atol=1e-6,
            )
        if i == 0:
            assert f"full_patches_{size}" not in groups
            continue
        per_side = size // 14
        full = groups[f"full_patches_{size}"]
        assert full.shape == (n, per_side**2, 3, 14, 14)
        for k, (b, r, c) in enumerate(cells):
            for j in range(per_side**2):  # row-major inside the cell
                top, left = r * size + (j // per_side) * 14, c * size + (j % per_side) * 14
                assert torch.equal(full[k, j], padded[b, :, top : top + 14, left : left + 14])
    assert sum(groups[f"resized_patches_{s}"].shape[0] for s in SIZES) == int(sum(m.sum() for m in masks.values()))


# --- forward -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(100, 131), (112, 168), (57, 85)])
def test_forward_sequence_bookkeeping(size):
    raw, images = _pair(size)
    tokenizer = PatchTokenizer(patch_selection_method="budget", alpha=0.4)
    out = tokenizer(images)
    expected = select_patches(compute_importance_maps(raw), "budget", alpha=0.4, image_size=size).masks
    for s in SIZES:
        assert torch.equal(out["masks"][s], expected[s])
    seqlens = [int(sum(expected[s][b].sum() for s in SIZES)) for b in range(2)]
    assert out["seqlens"] == seqlens
    assert out["cu_seqlens"].tolist() == [0, seqlens[0], seqlens[0] + seqlens[1]]
    assert out["cu_seqlens"].dtype == torch.int32
    assert out["max_seqlen"] == max(seqlens)
    n = math.ceil(size[0] / 14) * math.ceil(size[1] / 14)
    assert out["retained_frac"] == pytest.approx(sum(seqlens) / (2 * n))
    assert len(out["output_mask"]) == sum(seqlens)
    assert [i.vision_tokens for i in tokenizer.last_budget_info] == seqlens


def test_forward_per_call_override_and_given_maps():
    raw, images = _pair()
    tokenizer = PatchTokenizer(patch_selection_method="v1")
    v1 = tokenizer(images)
    assert tokenizer.last_budget_info is None
    budget = tokenizer(images, patch_selection_method="budget", alpha=0.25)
    assert [i.budget for i in tokenizer.last_budget_info] == [20, 20]  # round(0.25 * 80)
    assert budget["seqlens"] != v1["seqlens"]
    # Maps handed in are used as they are: all-zero scores keep every whole cell under v1.
    zero = {s: torch.zeros_like(m) for s, m in compute_importance_maps(raw).items()}
    out = tokenizer(images, importance_maps=zero)
    assert torch.equal(out["masks"][56][:, 0, :2], torch.ones(2, 2))


def test_forward_leaves_input_untouched():
    _, images = _pair()
    before = images.clone()
    PatchTokenizer(patch_selection_method="v2", alpha=1.0)(images)
    assert torch.equal(images, before)
