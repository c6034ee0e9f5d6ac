"""APTQwen2VLProcessor: the prompt holds each image's APT LLM tokens; stock keys and text unchanged.

Offline: the tokenizer is examples/quick_start.py's word-level one with Qwen2-VL's vision tokens.
"""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

from apt_viz.hf import (
    APTInputs,
    APTQwen2VLImageProcessor,
    APTQwen2VLImageProcessorPil,
    APTQwen2VLProcessor,
)

from helpers import tiny_tokenizer

ONE = "<|vision_start|><|image_pad|><|vision_end|> describe this image ."
TWO = "<|vision_start|><|image_pad|><|vision_end|> describe <|vision_start|><|image_pad|><|vision_end|> this image ."
TEXT_ONLY = "describe this image ."
MAX_PIXELS = 56 * 56 * 16
BUDGET = {"patch_selection_method": "budget", "alpha": 0.3}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(padding_side="right")


@pytest.fixture(scope="module")
def photos(photo_paths) -> list[Image.Image]:
    return [Image.open(photo_paths[name]).convert("RGB") for name in ("astronaut", "rocket", "coffee")]


def processors(tokenizer, image_processor_class=Qwen2VLImageProcessor, apt_class=APTQwen2VLImageProcessor, **settings):
    """(stock, apt) processors with the same image size settings."""
    video = Qwen2VLVideoProcessor()
    stock = Qwen2VLProcessor(image_processor=image_processor_class(max_pixels=MAX_PIXELS), tokenizer=tokenizer,
                             video_processor=video)
    apt = APTQwen2VLProcessor(image_processor=apt_class(max_pixels=MAX_PIXELS, **settings), tokenizer=tokenizer,
                              video_processor=video)
    return stock, apt


def image_pad(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|image_pad|>")


def runs_of_image_tokens(ids: list[int], token: int) -> list[int]:
    """Lengths of the runs of ``token`` in ``ids``."""
    runs, length = [], 0
    for value in [*ids, None]:
        if value == token:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


def test_each_image_expands_to_its_apt_llm_tokens(tokenizer, photos):
    stock, apt = processors(tokenizer, **BUDGET)
    text = [ONE, TWO, TEXT_ONLY]
    images = [photos[0], photos[1], photos[2]]  # one in the first prompt, two in the second, none in the third
    out = apt(images=images, text=text, padding=True, return_tensors="pt")
    reference = stock(images=images, text=text, padding=True, return_tensors="pt")
    pad = image_pad(tokenizer)

    llm = out["apt_num_llm_tokens"].tolist()
    stock_llm = (reference["image_grid_thw"].prod(-1) // 4).tolist()
    assert stock_llm == [64, 54, 54] and all(a < s for a, s in zip(llm, stock_llm))
    mask = out["attention_mask"].bool()
    runs = [runs_of_image_tokens(row[keep].tolist(), pad) for row, keep in zip(out["input_ids"], mask)]
    assert runs == [[llm[0]], [llm[1], llm[2]], []]  # image by image, in prompt order

    # mm_token_type_ids mark exactly the image tokens; padding is masked, nothing else is.
    assert torch.equal(out["mm_token_type_ids"].bool(), out["input_ids"] == pad)
    lengths = mask.sum(-1)
    assert lengths.tolist() == [6 + llm[0], 8 + llm[1] + llm[2], 4]  # 6, 8 and 4 text tokens
    assert out["input_ids"].shape[1] == int(lengths.max())

    # Text tokens, stock keys and the apt_* keys are unchanged; only the placeholder runs are shorter.
    for row, stock_row, keep, stock_keep in zip(
        out["input_ids"], reference["input_ids"], mask, reference["attention_mask"].bool()
    ):
        assert row[keep][row[keep] != pad].tolist() == stock_row[stock_keep][stock_row[stock_keep] != pad].tolist()
    for key in ("pixel_values", "image_grid_thw"):
        assert torch.equal(out[key], reference[key]), key
    image_only = apt.image_processor(images, return_tensors="pt")
    for key in APTInputs.KEYS:
        assert torch.equal(out[key], image_only[key]), key


def test_keeping_every_patch_gives_the_stock_prompt(tokenizer, photos):
    stock, apt = processors(tokenizer, patch_selection_method="budget", alpha=1.0)
    out = apt(images=photos[:2], text=[ONE, ONE], padding=True, return_tensors="pt")
    reference = stock(images=photos[:2], text=[ONE, ONE], padding=True, return_tensors="pt")
    for key in reference:
        assert torch.equal(out[key], reference[key]), key


def test_per_call_settings_reach_the_placeholder_count(tokenizer, photos):
    _, apt = processors(tokenizer)  # v1 by default
    out = apt(images=photos[:1], text=[ONE], images_kwargs=BUDGET, return_tensors="pt")
    expected = APTQwen2VLImageProcessor(max_pixels=MAX_PIXELS, **BUDGET)(photos[:1])["apt_num_llm_tokens"]
    assert int((out["input_ids"] == image_pad(tokenizer)).sum()) == int(expected[0])
    assert apt.image_processor.patch_selection_method == "v1"  # for that call only


def test_an_llm_token_budget_and_a_seeded_random_scorer_reach_the_processor(tokenizer, photos):
    _, apt = processors(tokenizer)
    llm_budget = {"patch_selection_method": "budget", "alpha": 0.5, "budget_unit": "llm"}
    out = apt(images=photos[:2], text=[ONE, ONE], images_kwargs=llm_budget, padding=True, return_tensors="pt")
    llm = out["apt_num_llm_tokens"].tolist()
    targets = [round(0.5 * n) for n in (out["image_grid_thw"].prod(-1) // 4).tolist()]
    assert all(0 <= t - n <= 3 for t, n in zip(targets, llm)), (targets, llm)  # within one split of T
    infos = apt.image_processor.last_budget_info
    assert [(i.budget, i.llm_tokens, i.clamped) for i in infos] == [(t, n, False) for t, n in zip(targets, llm)]
    assert (out["input_ids"] == image_pad(tokenizer)).sum(-1).tolist() == llm
    assert apt.image_processor.budget_unit == "vision"  # for that call only

    random = {**BUDGET, "scorer": "random", "seed": 3}
    first, again = (apt.image_processor(photos[:1], **random, return_tensors="pt") for _ in range(2))
    other = apt.image_processor(photos[:1], **{**random, "seed": 4}, return_tensors="pt")
    assert torch.equal(first["apt_patch_positions"], again["apt_patch_positions"])
    assert not torch.equal(first["apt_patch_positions"], other["apt_patch_positions"])
    assert first["apt_num_tokens"].tolist() == other["apt_num_tokens"].tolist()  # same budget, same tokens


def test_a_stock_processor_folder_loads_as_an_apt_processor(tmp_path, tokenizer, photos):
    stock, _ = processors(tokenizer)
    stock.save_pretrained(tmp_path)
    loaded = APTQwen2VLProcessor.from_pretrained(tmp_path, **BUDGET)
    # The backend transformers picks for the folder (torchvision, as for the stock Qwen2VLProcessor), APT.
    assert type(loaded) is APTQwen2VLProcessor
    assert type(loaded.image_processor) is APTQwen2VLImageProcessor
    assert type(Qwen2VLProcessor.from_pretrained(tmp_path).image_processor) is Qwen2VLImageProcessor
    assert (loaded.image_processor.patch_selection_method, loaded.image_processor.alpha) == ("budget", 0.3)
    assert loaded.image_processor.size == stock.image_processor.size  # the stock settings are kept
    out = loaded(images=photos[:1], text=[ONE], return_tensors="pt")
    direct = APTQwen2VLImageProcessor(max_pixels=MAX_PIXELS, **BUDGET)(photos[:1], return_tensors="pt")
    assert int((out["input_ids"] == image_pad(tokenizer)).sum()) == int(direct["apt_num_llm_tokens"][0])
    assert torch.equal(out["apt_patch_positions"], direct["apt_patch_positions"])


@pytest.mark.parametrize(
    "stock_class, apt_class",
    [(Qwen2VLImageProcessor, APTQwen2VLImageProcessor), (Qwen2VLImageProcessorPil, APTQwen2VLImageProcessorPil)],
    ids=["torchvision", "pil"],
)
def test_a_stock_image_processor_is_converted_keeping_its_backend_and_settings(tokenizer, stock_class, apt_class):
    stock = stock_class(max_pixels=MAX_PIXELS, image_mean=[0.5, 0.5, 0.5])
    processor = APTQwen2VLProcessor(stock, tokenizer, Qwen2VLVideoProcessor())
    assert type(processor.image_processor) is apt_class
    assert processor.image_processor.size == stock.size
    assert list(processor.image_processor.image_mean) == [0.5, 0.5, 0.5]
    assert processor.image_processor.patch_selection_method == "v1"  # APT settings at their defaults


def test_save_and_load_keep_the_processor_and_its_settings(tmp_path, tokenizer, photos):
    _, apt = processors(tokenizer, patch_selection_method="v2", alpha=0.8, scorer="laplacian")
    expected = apt(images=photos[:2], text=[ONE, ONE], padding=True, return_tensors="pt")
    apt.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "APTQwen2VLProcessor"
    assert saved["image_processor"]["image_processor_type"] == "APTQwen2VLImageProcessor"
    for loader in (APTQwen2VLProcessor, AutoProcessor):
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is APTQwen2VLProcessor, loader
        out = loaded(images=photos[:2], text=[ONE, ONE], padding=True, return_tensors="pt")
        for key in expected:
            assert torch.equal(out[key], expected[key]), (loader, key)


def test_invalid_settings_fail_with_one_line(tmp_path, tokenizer):
    _, apt = processors(tokenizer)
    apt.save_pretrained(tmp_path)
    with pytest.raises(ValueError) as error:
        APTQwen2VLProcessor.from_pretrained(tmp_path, patch_selection_method="budget", alpha=1.5)
    assert "alpha must be in (0, 1] for budget" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(NotImplementedError, match="depend on the image content"):
        apt._get_num_multimodal_tokens(image_sizes=[(224, 224)])
