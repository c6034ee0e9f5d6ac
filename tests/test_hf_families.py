"""The APT processors of every family: Qwen2-VL, Qwen2.5-VL, Qwen3-VL (also Qwen3.5), on one shared base.

Offline: the tokenizer is examples/quick_start.py's word-level one with the Qwen vision tokens; the
image processor settings are each family's published ones (Qwen3-VL: 16 px patches, mean/std 0.5).

What is pinned, for each family against its stock processor class: each image's <|image_pad|>
expands to its apt_num_llm_tokens and nothing else changes (text, pixel_values, image_grid_thw);
keeping every base patch gives the stock prompt; per-call images_kwargs reach the count; the
processor survives save_pretrained / from_pretrained (its own class and AutoProcessor), and a stock
folder of the family loads as the APT processor. At 16 px the APT image processor keeps the stock
outputs and its cells (16, 32, 64 px) tile every image.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from apt_viz.hf import (
    APTInputs,
    APTQwen2_5_VLProcessor,
    APTQwen2VLImageProcessor,
    APTQwen2VLImageProcessorPil,
    APTQwen2VLProcessor,
    APTQwen3VLProcessor,
    unpatchify,
)

from helpers import tiny_tokenizer

ONE = "<|vision_start|><|image_pad|><|vision_end|> describe this image ."
TWO = "<|vision_start|><|image_pad|><|vision_end|> describe <|vision_start|><|image_pad|><|vision_end|> this image ."
BUDGET = {"patch_selection_method": "budget", "alpha": 0.3}
QWEN3_IMAGE = {"patch_size": 16, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
# family: (stock processor, APT processor, video processor, image processor settings, pixel budget)
FAMILIES = {
    "qwen2-vl": (Qwen2VLProcessor, APTQwen2VLProcessor, Qwen2VLVideoProcessor, {}, 56 * 56 * 16),
    "qwen2.5-vl": (Qwen2_5_VLProcessor, APTQwen2_5_VLProcessor, Qwen2VLVideoProcessor, {}, 56 * 56 * 16),
    "qwen3-vl": (Qwen3VLProcessor, APTQwen3VLProcessor, Qwen3VLVideoProcessor, QWEN3_IMAGE, 64 * 64 * 16),
}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(padding_side="right")


@pytest.fixture(scope="module")
def photos(photo_paths) -> list[Image.Image]:
    return [Image.open(photo_paths[name]).convert("RGB") for name in ("astronaut", "rocket", "coffee")]


def processors(family: str, tokenizer, **settings):
    """(stock, apt) processors of ``family`` with the same image settings."""
    stock_class, apt_class, video_class, image_settings, max_pixels = FAMILIES[family]
    image = {**image_settings, "max_pixels": max_pixels}
    stock = stock_class(image_processor=Qwen2VLImageProcessor(**image), tokenizer=tokenizer, video_processor=video_class())
    apt = apt_class(image_processor=APTQwen2VLImageProcessor(**image, **settings), tokenizer=tokenizer,
                    video_processor=video_class())
    return stock, apt


def image_runs(ids: torch.Tensor, mask: torch.Tensor, token: int) -> list[int]:
    """Lengths of the runs of ``token`` in the unpadded ``ids``."""
    runs, length = [], 0
    for value in [*ids[mask.bool()].tolist(), None]:
        if value == token:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


@pytest.mark.parametrize("family", FAMILIES)
def test_each_image_expands_to_its_apt_llm_tokens_and_nothing_else_changes(family, tokenizer, photos):
    stock, apt = processors(family, tokenizer, **BUDGET)
    text = [ONE, TWO]
    out = apt(images=photos, text=text, padding=True, return_tensors="pt")
    reference = stock(images=photos, text=text, padding=True, return_tensors="pt")
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merge = apt.image_processor.merge_size ** 2
    llm = out["apt_num_llm_tokens"].tolist()
    assert all(a < s for a, s in zip(llm, (reference["image_grid_thw"].prod(-1) // merge).tolist()))
    runs = [image_runs(ids, mask, pad) for ids, mask in zip(out["input_ids"], out["attention_mask"])]
    assert runs == [[llm[0]], [llm[1], llm[2]]]  # image by image, in prompt order
    assert torch.equal(out["mm_token_type_ids"].bool(), out["input_ids"] == pad)
    for row, stock_row, mask, stock_mask in zip(out["input_ids"], reference["input_ids"], out["attention_mask"],
                                                reference["attention_mask"]):
        text_ids, stock_text = row[mask.bool()], stock_row[stock_mask.bool()]
        assert text_ids[text_ids != pad].tolist() == stock_text[stock_text != pad].tolist()
    for key in ("pixel_values", "image_grid_thw"):
        assert torch.equal(out[key], reference[key]), key
    image_only = apt.image_processor(photos, return_tensors="pt")
    for key in APTInputs.KEYS:
        assert torch.equal(out[key], image_only[key]), key


@pytest.mark.parametrize("family", FAMILIES)
def test_keeping_every_patch_gives_the_stock_prompt(family, tokenizer, photos):
    stock, apt = processors(family, tokenizer, patch_selection_method="budget", alpha=1.0)
    out = apt(images=photos[:2], text=[ONE, ONE], padding=True, return_tensors="pt")
    reference = stock(images=photos[:2], text=[ONE, ONE], padding=True, return_tensors="pt")
    for key in reference:
        assert torch.equal(out[key], reference[key]), key


@pytest.mark.parametrize("family", FAMILIES)
def test_per_call_images_kwargs_reach_the_placeholder_count(family, tokenizer, photos):
    _, apt = processors(family, tokenizer)  # v1 by default
    out = apt(images=photos[:1], text=[ONE], images_kwargs=BUDGET, return_tensors="pt")
    direct = apt.image_processor(photos[:1], **BUDGET)["apt_num_llm_tokens"]
    assert int((out["input_ids"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) == int(direct[0])
    assert apt.image_processor.patch_selection_method == "v1"  # for that call only


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_keep_the_processor_and_its_settings(family, tokenizer, photos, tmp_path):
    apt_class = FAMILIES[family][1]
    _, apt = processors(family, tokenizer, patch_selection_method="v2", alpha=0.8, scorer="laplacian")
    expected = apt(images=photos[:2], text=[ONE, ONE], padding=True, return_tensors="pt")
    apt.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == apt_class.__name__
    assert saved["image_processor"]["image_processor_type"] == "APTQwen2VLImageProcessor"
    for loader in (apt_class, AutoProcessor):
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is apt_class, loader
        assert loaded.image_processor.patch_size == apt.image_processor.patch_size
        out = loaded(images=photos[:2], text=[ONE, ONE], padding=True, return_tensors="pt")
        for key in expected:
            assert torch.equal(out[key], expected[key]), (loader, key)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stock_folder_of_the_family_loads_as_the_apt_processor(family, tokenizer, photos, tmp_path):
    stock_class, apt_class, *_ = FAMILIES[family]
    stock, _ = processors(family, tokenizer)
    stock.save_pretrained(tmp_path)
    assert type(stock_class.from_pretrained(tmp_path).image_processor) is Qwen2VLImageProcessor
    loaded = apt_class.from_pretrained(tmp_path, **BUDGET)
    assert type(loaded) is apt_class and type(loaded.image_processor) is APTQwen2VLImageProcessor
    assert (loaded.image_processor.patch_selection_method, loaded.image_processor.alpha) == ("budget", 0.3)
    assert loaded.image_processor.patch_size == stock.image_processor.patch_size
    out = loaded(images=photos[:1], text=[ONE], return_tensors="pt")
    direct = loaded.image_processor(photos[:1], return_tensors="pt")
    assert int((out["input_ids"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) == int(
        direct["apt_num_llm_tokens"][0]
    )


@pytest.mark.parametrize(
    "stock_class, apt_class",
    [(Qwen2VLImageProcessor, APTQwen2VLImageProcessor), (Qwen2VLImageProcessorPil, APTQwen2VLImageProcessorPil)],
    ids=["torchvision", "pil"],
)
def test_sixteen_pixel_patches_keep_the_stock_outputs_and_tile_every_image(stock_class, apt_class, photos):
    """Qwen3-VL / Qwen3.5 settings: stock outputs unchanged; cells of 16, 32, 64 px cover each base cell once;
    a base row is the stock row of its cell; a 32 px row is the 2x2 average of the pixels under it."""
    images = [*photos, photos[2].resize((90, 300), Image.Resampling.BICUBIC)]  # partial 64 px cells at the edges
    settings = {**QWEN3_IMAGE, "max_pixels": 64 * 64 * 24}
    stock = stock_class(**settings)(images)
    out = apt_class(**settings, patch_selection_method="budget", alpha=0.4)(images)
    for key in ("pixel_values", "image_grid_thw"):
        assert np.array_equal(np.asarray(out[key]), np.asarray(stock[key])), key
    grids = torch.as_tensor(np.asarray(out["image_grid_thw"])).tolist()
    split = [torch.as_tensor(np.asarray(out[key])).split(torch.as_tensor(np.asarray(out["apt_num_tokens"])).tolist())
             for key in ("apt_pixel_values", "apt_patch_sizes", "apt_patch_positions")]
    stock_rows = torch.as_tensor(np.asarray(out["pixel_values"])).split([h * w for _, h, w in grids])
    seen = set()
    for (_, grid_h, grid_w), rows, sizes, positions, stock_part in zip(grids, *split, stock_rows):
        assert set(sizes.tolist()) <= {16, 32, 64}
        seen |= set(sizes.tolist())
        coverage = torch.zeros(grid_h, grid_w, dtype=torch.long)
        for size, (r, c) in zip(sizes.tolist(), positions.tolist()):
            side = size // 16
            assert r % side == 0 and c % side == 0 and r + side <= grid_h and c + side <= grid_w
            coverage[r : r + side, c : c + side] += 1
        assert torch.equal(coverage, torch.ones_like(coverage))
        base = sizes == 16
        r, c = positions[base].unbind(1)
        assert torch.equal(rows[base], stock_part[((r // 2) * (grid_w // 2) + c // 2) * 4 + (r % 2) * 2 + c % 2])
        normalized = unpatchify(stock_part, grid_h, grid_w, 16, 2, 2)[0]
        for row, (r, c) in zip(rows[sizes == 32], positions[sizes == 32].tolist()):
            average = normalized[:, r * 16 : r * 16 + 32, c * 16 : c * 16 + 32].reshape(3, 16, 2, 16, 2).mean(dim=(2, 4))
            assert torch.allclose(row.view(3, 2, 16, 16), average[:, None].expand(3, 2, 16, 16), atol=1e-6)
    assert seen == {16, 32, 64}
