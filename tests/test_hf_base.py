"""The shared APT model base fits the other families: Qwen3-VL (deepstack) and Qwen3.5 (hybrid LLM).

A family class made of the two mixins and nothing else, on a tiny random config built in code,
must be the stock model when every base patch is kept (logits bit for bit, greedy generation,
Qwen3.5's hybrid cache included): the base's merger hook also serves the deepstack mergers, and its
forward, rope index and generation plumbing are family-agnostic. With fewer rows, a family's
``apt_vision_inputs`` override reaches the tower (here a stand-in for the learned-position taps),
the deepstack mergers read the same gathered rows as the final merger, and every feature list is
split by the APT LLM tokens.
"""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import (
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5Model,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLModel,
    Qwen3VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from apt_viz.hf import APTInputs, APTQwen2VLImageProcessor, APTQwen3VLProcessor
from apt_viz.hf._modeling import APTForConditionalGenerationMixin, APTModelMixin

from helpers import tiny_tokenizer

PROMPTS = ["<|vision_start|><|image_pad|><|vision_end|> describe this image .",
           "<|vision_start|><|image_pad|><|vision_end|> describe ."]
IMAGE = {"patch_size": 16, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "max_pixels": 64 * 64 * 16}
VISION = {"depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
          "num_position_embeddings": 64, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6, "mrope_interleaved": True}}
HYBRID = {"num_hidden_layers": 4, "layer_types": ["linear_attention"] * 3 + ["full_attention"], "linear_num_key_heads": 2,
          "linear_num_value_heads": 2, "linear_key_head_dim": 8, "linear_value_head_dim": 8, "linear_conv_kernel_dim": 4}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def photos(photo_paths) -> list[Image.Image]:
    return [Image.open(photo_paths[name]).convert("RGB") for name in ("astronaut", "rocket")]


def family(name: str, tokenizer):
    """(stock model, APT model on the base with no override) of a tiny random ``name`` config."""
    ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = {**TEXT, "vocab_size": len(tokenizer), "num_hidden_layers": 3}
    if name == "qwen3-vl":
        config = Qwen3VLConfig(vision_config={**VISION, "deepstack_visual_indexes": [0, 1]}, text_config=text, **ids)
        stock_class, stock_model = Qwen3VLForConditionalGeneration, Qwen3VLModel
    else:
        config = Qwen3_5Config(vision_config=VISION, text_config={**text, **HYBRID}, **ids)
        stock_class, stock_model = Qwen3_5ForConditionalGeneration, Qwen3_5Model

    class Model(APTModelMixin, stock_model):
        pass

    class ForConditionalGeneration(APTForConditionalGenerationMixin, stock_class):
        apt_model_class = Model

    torch.manual_seed(0)
    stock = stock_class(config).eval()
    apt = ForConditionalGeneration(config).eval()
    apt.load_state_dict(stock.state_dict())
    return stock, apt


def processors(tokenizer, **settings):
    video = Qwen3VLVideoProcessor()
    stock = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**IMAGE), tokenizer=tokenizer, video_processor=video)
    apt = APTQwen3VLProcessor(image_processor=APTQwen2VLImageProcessor(**IMAGE, **settings), tokenizer=tokenizer,
                              video_processor=video)
    return stock, apt


@pytest.mark.parametrize("name", ["qwen3-vl", "qwen3.5"])
def test_a_family_on_the_base_is_the_stock_model_when_every_patch_is_kept(name, tokenizer, photos):
    stock, apt = family(name, tokenizer)
    stock_processor, apt_processor = processors(tokenizer, patch_selection_method="budget", alpha=1.0)
    reference = stock_processor(images=photos, text=PROMPTS, padding=True, return_tensors="pt")
    inputs = apt_processor(images=photos, text=PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(apt(**inputs).logits, stock(**reference).logits)
    pad = tokenizer.pad_token_id
    generated = apt.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=pad)
    assert torch.equal(generated, stock.generate(**reference, max_new_tokens=4, do_sample=False, pad_token_id=pad))


def test_the_vision_inputs_hook_and_the_deepstack_mergers_on_fewer_rows(tokenizer, photos):
    _, apt = family("qwen3-vl", tokenizer)
    model = apt.model
    side = model.visual.num_grid_per_side

    def nearest_table_entry(layout, image_grid_thw):
        """A stand-in for the learned-position taps: the table entry nearest each cell centre, weight 1."""
        grids = image_grid_thw[layout.image_index]
        row = (layout.vision_positions[:, 0] * (side - 1) / (grids[:, 1] - 1)).round().long()
        col = (layout.vision_positions[:, 1] * (side - 1) / (grids[:, 2] - 1)).round().long()
        index = torch.stack([row * side + col, *[torch.zeros_like(row)] * 3], dim=1)
        weights = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(row), 4)
        return {**APTModelMixin.apt_vision_inputs(model, layout, image_grid_thw),
                "interp_indices": index, "interp_weights": weights}

    model.apt_vision_inputs = nearest_table_entry
    _, apt_processor = processors(tokenizer, patch_selection_method="budget", alpha=0.3)
    inputs = apt_processor(images=photos, text=PROMPTS, padding=True, return_tensors="pt")
    rows, llm = inputs["apt_num_tokens"], inputs["apt_num_llm_tokens"].tolist()
    assert (rows < inputs["image_grid_thw"].prod(-1)).all()
    seen: dict[str, list] = {"table": [], "deepstack": [], "final": []}
    hooks = [
        model.visual.pos_embed.register_forward_pre_hook(lambda _, args: seen["table"].append(args[0])),
        # forward hooks: they see the arguments after the base's gathering pre-hook
        model.visual.deepstack_merger_list[0].register_forward_hook(lambda _, args, out: seen["deepstack"].append(args[0])),
        model.visual.merger.register_forward_hook(lambda _, args, out: seen["final"].append(args[0])),
    ]
    try:
        with torch.no_grad():
            features = model.get_image_features(
                image_grid_thw=inputs["image_grid_thw"], **{key: inputs[key] for key in APTInputs.KEYS}
            )
            logits = apt(**inputs).logits
    finally:
        for handle in hooks:
            handle.remove()
    assert seen["table"][0].shape == (int(rows.sum()), 4)  # the hook's taps, one row per APT row
    assert seen["deepstack"][0].shape[0] == seen["final"][0].shape[0] == 4 * sum(llm)  # m*m gathered rows per token
    assert [len(part) for part in features.pooler_output] == llm
    assert all([len(part) for part in level] == llm for level in features.deepstack_features)
    assert logits.shape[:2] == inputs["input_ids"].shape
