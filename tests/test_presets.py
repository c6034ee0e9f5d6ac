"""The bench presets (apt_viz.bench.presets): each family's tiny preset builds and runs its stock model;
the published presets have the published parameter counts and read back from their config.json."""
from __future__ import annotations

import pytest
import torch
import transformers
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.vision_utils import get_vision_window_index

from apt_viz.bench.presets import PRESETS, TINY_PRESETS, family_config, preset_architecture, preset_config
from apt_viz.core.architectures import ARCHITECTURES, architecture_from_config

STOCK_MODELS = {
    "qwen2-vl": (transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration),
    "qwen2.5-vl": (transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration),
    "qwen3-vl": (transformers.Qwen3VLConfig, transformers.Qwen3VLForConditionalGeneration),
    "qwen3.5": (transformers.Qwen3_5Config, transformers.Qwen3_5ForConditionalGeneration),
}
SIDE = 224  # px: 16 x 16 base patches of 14 px (four 112 px windows), 14 x 14 of 16 px


def tiny_inputs(config, photo: Image.Image, patch_size: int) -> dict:
    """One photo at 224 x 224 through the stock image processor, in a prompt of its image tokens and 3 words."""
    processor = Qwen2VLImageProcessor(patch_size=patch_size, min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE)
    image = processor(photo.convert("RGB").resize((SIDE, SIDE)), return_tensors="pt")
    image_tokens = int(image["image_grid_thw"].prod()) // 4
    ids = torch.tensor([[config.vision_start_token_id, *[config.image_token_id] * image_tokens,
                         config.vision_end_token_id, 5, 6, 7]])
    return {**image, "input_ids": ids, "attention_mask": torch.ones_like(ids),
            "mm_token_type_ids": (ids == config.image_token_id).int()}


@pytest.mark.parametrize("family", list(TINY_PRESETS))
def test_each_tiny_preset_builds_and_runs_its_stock_model(family, photo_paths):
    config_class, model_class = STOCK_MODELS[family]
    arch = TINY_PRESETS[family]
    config = preset_config(arch.name)
    assert type(config) is config_class
    torch.manual_seed(0)
    model = model_class(config).eval()
    photos = [Image.open(photo_paths[name]) for name in ("astronaut", "coffee")]
    inputs = [tiny_inputs(config, photo, arch.patch_size) for photo in photos]
    n = int(inputs[0]["image_grid_thw"].prod())
    assert n == (SIDE // arch.patch_size) ** 2
    with torch.no_grad():
        features = model.model.get_image_features(inputs[0]["pixel_values"], inputs[0]["image_grid_thw"])
        logits = [model(**batch).logits for batch in inputs]
    assert features.pooler_output[0].shape == (n // 4, arch.hidden_size)
    assert logits[0].shape == (1, inputs[0]["input_ids"].shape[1], config.text_config.vocab_size)
    assert torch.isfinite(logits[0]).all()
    assert not torch.allclose(logits[0][0, -1], logits[1][0, -1])  # the image reaches the LLM
    if family == "qwen2.5-vl":  # windowed and full-attention blocks, several windows
        vision = model.model.visual
        assert list(vision.fullatt_block_indexes) == [1, 3] and vision.config.window_size == 112
        _, cu_window_seqlens = get_vision_window_index(inputs[0]["image_grid_thw"], 2, 112, 14)
        assert cu_window_seqlens.tolist() == [0, 64, 128, 192, 256]  # four 8 x 8 windows
    if family == "qwen3-vl":  # three deepstack mergers, one feature map each, one token per merged cell
        assert [tuple(f[0].shape) for f in features.deepstack_features] == [(n // 4, arch.hidden_size)] * 3
        assert model.model.visual.pos_embed.num_embeddings == 2304
    if family == "qwen3.5":
        assert config.text_config.layer_types == ["linear_attention"] * 3 + ["full_attention"]
        assert not hasattr(model.model.visual, "deepstack_merger_list")


@pytest.mark.parametrize(
    "name, billions",
    # The counts the Hugging Face hub shows for the Instruct checkpoints.
    [("qwen2.5-vl-3b", 3.75), ("qwen2.5-vl-7b", 8.29), ("qwen3-vl-2b", 2.13), ("qwen3-vl-8b", 8.77)],
)
def test_published_presets_have_the_published_parameter_counts(name, billions):
    _, model_class = STOCK_MODELS[PRESETS[name].family]
    with torch.device("meta"):
        model = model_class(preset_config(name))
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == billions


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_reads_back_from_its_config_json(name):
    arch = PRESETS[name]
    assert architecture_from_config(family_config(arch).to_dict(), name=arch.name) == arch


def test_published_rotary_settings_and_token_ids():
    rope = preset_config("qwen3.5-9b").text_config.rope_parameters
    assert rope["mrope_section"] == [11, 11, 10] and rope["partial_rotary_factor"] == 0.25
    assert preset_config("qwen3-vl-8b").text_config.rope_parameters["mrope_section"] == [24, 20, 20]
    assert preset_config("qwen2.5-vl-7b").text_config.rope_parameters["mrope_section"] == [16, 24, 24]
    assert preset_config("qwen3.5-9b").image_token_id == 248056
    assert preset_config("tiny-qwen3.5").image_token_id == 256 - 4 + 2  # a small vocabulary's last four ids


def test_a_cut_keeps_the_blocks_inside_it():
    arch = preset_architecture("qwen2.5-vl-7b", layers=16)
    assert (arch.vision_depth, arch.num_layers, arch.fullatt_blocks) == (16, 16, (7, 15))
    assert preset_architecture("qwen3-vl-8b", layers=4).deepstack_blocks == ()
    assert set(ARCHITECTURES) <= set(PRESETS)
    with pytest.raises(ValueError, match="unknown preset 'qwen9'"):
        preset_architecture("qwen9")


def test_a_hybrid_llm_is_cut_no_shorter_than_its_first_full_attention_layer():
    """A Qwen3.5 LLM of linear-attention layers only cannot run with transformers' hybrid cache."""
    assert preset_architecture("qwen3.5-9b", layers=4).layer_kinds == ("linear", "linear", "linear", "full")
    with pytest.raises(ValueError, match=r"cut to 2 layers keeps no full-attention layer .* cut to 4 layers or more"):
        preset_architecture("qwen3.5-9b", layers=2)
