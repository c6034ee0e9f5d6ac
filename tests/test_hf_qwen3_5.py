"""APTQwen3_5ForConditionalGeneration on the tiny random Qwen3.5 preset (CPU, float32, no weights, no hub).

The preset's LLM is hybrid: three Gated DeltaNet (linear attention) layers, then one full-attention
layer; its vision tower is Qwen3-VL's without deepstack. What is pinned: the stock parameters load
unchanged; keeping every base patch gives the stock logits and the stock greedy generation through
the hybrid cache, step by step, bit for bit; at alpha 0.3 the vision blocks see the counted rows,
the merger the APT merge groups and the prompt the counted LLM tokens, and generation with the
hybrid cache equals generation that recomputes everything at every step; a left-padded batch of
two images of different sizes equals each image alone; the processor and the model survive
save_pretrained / from_pretrained.
"""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import Qwen3_5ForConditionalGeneration

from apt_viz.bench.presets import preset_config
from apt_viz.hf import APTQwen3_5ForConditionalGeneration, APTQwen3VLProcessor

from helpers import assert_batch_equals_alone, greedy, qwen3_processors, stock_and_apt, tiny_tokenizer

PROMPT = "<|vision_start|><|image_pad|><|vision_end|> describe this image ."
SHORT_PROMPT = "<|vision_start|><|image_pad|><|vision_end|> describe ."
MAX_PIXELS = 64 * 64 * 16


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def models(tokenizer):
    config = preset_config("tiny-qwen3.5", tokenizer=tokenizer)
    assert config.text_config.layer_types == ["linear_attention"] * 3 + ["full_attention"]
    return stock_and_apt(Qwen3_5ForConditionalGeneration, APTQwen3_5ForConditionalGeneration, config)


@pytest.fixture(scope="module")
def photos(photo_paths) -> list[Image.Image]:
    return [Image.open(photo_paths[name]).convert("RGB") for name in ("astronaut", "rocket")]


def budget(tokenizer, alpha: float):
    return qwen3_processors(tokenizer, MAX_PIXELS, patch_selection_method="budget", alpha=alpha)


def test_the_stock_checkpoint_loads_unchanged(models, tmp_path):
    stock, _ = models
    stock.save_pretrained(tmp_path)
    loaded, info = APTQwen3_5ForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for key, value in stock.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_keeping_every_patch_gives_the_stock_logits_and_hybrid_cache_generation(models, tokenizer, photos):
    stock, apt = models
    stock_processor, apt_processor = budget(tokenizer, 1.0)
    inputs = apt_processor(images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    reference = stock_processor(images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(apt(**inputs).logits, stock(**reference).logits)
    stock_run, apt_run = greedy(stock, reference), greedy(apt, inputs)
    cache = getattr(apt_run, "cache", None) or apt_run.past_key_values  # 5.24: cache; 5.18: past_key_values
    kinds = [type(layer).__name__ for layer in cache.layers]
    assert kinds == ["LinearAttentionLayer"] * 3 + ["DynamicLayer"]  # the hybrid cache: states, then keys / values
    assert torch.equal(apt_run.sequences, stock_run.sequences)
    for apt_step, stock_step in zip(apt_run.logits, stock_run.logits, strict=True):
        assert torch.equal(apt_step, stock_step)


def test_alpha_0_3_runs_on_the_counted_rows_and_llm_tokens(models, tokenizer, photos):
    _, apt = models
    inputs = budget(tokenizer, 0.3)[1](images=photos, text=[PROMPT, SHORT_PROMPT], padding=True, return_tensors="pt")
    rows, llm = inputs["apt_num_tokens"], inputs["apt_num_llm_tokens"]
    assert (rows < inputs["image_grid_thw"].prod(-1)).all()
    assert torch.equal((inputs["input_ids"] == apt.config.image_token_id).sum(-1), llm)
    visual = apt.model.visual
    assert not hasattr(visual, "deepstack_merger_list")
    seen: dict[str, list] = {"blocks": [], "merger": [], "taps": []}
    hooks = [
        visual.blocks[0].register_forward_pre_hook(lambda _, args: seen["blocks"].append(args[0].shape[0])),
        visual.pos_embed.register_forward_pre_hook(lambda _, args: seen["taps"].append(tuple(args[0].shape))),
        visual.merger.linear_fc1.register_forward_pre_hook(lambda _, args: seen["merger"].append(args[0].shape[0])),
    ]
    try:
        with torch.no_grad():
            logits = apt(**inputs).logits
    finally:
        for handle in hooks:
            handle.remove()
    assert seen == {"blocks": [int(rows.sum())], "merger": [int(llm.sum())], "taps": [(int(rows.sum()), 4)]}
    assert logits.shape[:2] == inputs["input_ids"].shape


def test_generation_with_the_hybrid_cache_equals_recomputing_every_step(models, tokenizer, photos):
    """Alpha 0.3: the cached linear-attention states and key/values give what a full recomputation gives."""
    _, apt = models
    inputs = budget(tokenizer, 0.3)[1](images=photos[:1], text=[PROMPT], return_tensors="pt")
    # Recomputing re-reads the generated tokens: a random model must not generate an image placeholder.
    vision = [apt.config.image_token_id, apt.config.video_token_id, apt.config.vision_start_token_id]
    cached = greedy(apt, inputs, steps=5, suppress_tokens=vision)
    recomputed = greedy(apt, inputs, steps=5, suppress_tokens=vision, use_cache=False)
    assert torch.equal(cached.sequences, recomputed.sequences)
    for step, (with_cache, without) in enumerate(zip(cached.logits, recomputed.logits, strict=True)):
        assert (with_cache - without).abs().max() <= 1e-5, step


def test_a_left_padded_batch_of_two_sizes_equals_each_image_alone(models, tokenizer, photos):
    _, apt = models
    batch, _ = assert_batch_equals_alone(apt, budget(tokenizer, 0.3)[1], photos, [PROMPT, SHORT_PROMPT])
    assert not torch.equal(*batch["image_grid_thw"])  # two sizes


def test_the_processor_and_the_model_survive_save_and_load(models, tokenizer, photos, tmp_path):
    _, apt = models
    processor = budget(tokenizer, 0.3)[1]
    # Two folders: next to a Qwen3.5 config.json, transformers loads any saved tokenizer as Qwen3_5Tokenizer
    # (a real checkpoint's own class), which would re-tokenize the test's word-level vocabulary.
    processor.save_pretrained(tmp_path / "processor")
    apt.save_pretrained(tmp_path / "model")
    loaded_processor = APTQwen3VLProcessor.from_pretrained(tmp_path / "processor")
    loaded = APTQwen3_5ForConditionalGeneration.from_pretrained(tmp_path / "model").eval()
    assert type(loaded_processor) is APTQwen3VLProcessor and type(loaded) is APTQwen3_5ForConditionalGeneration
    expected = processor(images=photos[:1], text=[PROMPT], return_tensors="pt")
    inputs = loaded_processor(images=photos[:1], text=[PROMPT], return_tensors="pt")
    for key in expected:
        assert torch.equal(inputs[key], expected[key]), key
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, apt(**expected).logits)
