"""The analytic cost model (apt_viz.core.flops): a hand count, torch's FLOP counter on real models, stats.json."""
from __future__ import annotations

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from apt_viz.analysis import analyze_image
from apt_viz.core.architectures import (
    ARCHITECTURES,
    QWEN2_VL_2B,
    QWEN2_VL_7B,
    Architecture,
    architecture_from_config,
)
from apt_viz.core.config import APTConfig
from apt_viz.core.flops import image_flops, prefill_flops, vision_flops
from apt_viz.report.records import stats_record

# A model small enough to count by hand: vision D=4 (2 heads, MLP 8), 1 block, 2 px grey patches,
# one frame; LLM H=8 (2 heads of 4, 1 key/value head), MLP 16, 1 layer.
SMALL = Architecture(
    name="small", family="qwen2-vl",
    vision_depth=1, vision_embed_dim=4, vision_num_heads=2, vision_mlp_dim=8,
    hidden_size=8, intermediate_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4, vocab_size=32,
    patch_size=2, temporal_patch_size=1, merge_size=2, in_channels=1,
)


def test_vision_flops_match_a_hand_count():
    # 6 patches of 1 x 1 x 2 x 2 = 4 pixels, 3 LLM tokens. Two FLOPs per multiply-add.
    embed = 2 * 6 * 4 * 4  # (6 x 4) @ (4 x 4)                                  192
    qkv = 2 * 6 * 4 * 12  # (6 x 4) @ (4 x 12)                                  576
    attention = 2 * (2 * 6 * 6 * 2) * 2  # per head (6 x 2) @ (2 x 6), then (6 x 6) @ (6 x 2); 2 heads   576
    projection = 2 * 6 * 4 * 4  # (6 x 4) @ (4 x 4)                             192
    mlp = 2 * 6 * 4 * 8 + 2 * 6 * 8 * 4  # (6 x 4) @ (4 x 8), (6 x 8) @ (8 x 4)  768
    merger = 2 * 3 * 16 * 16 + 2 * 3 * 16 * 8  # (3 x 16) @ (16 x 16), (3 x 16) @ (16 x 8)   2304
    assert embed + qkv + attention + projection + mlp + merger == 4608
    assert vision_flops(SMALL, patches=6, llm_tokens=3) == 4608


def test_prefill_flops_match_a_hand_count():
    # 5 tokens, H = 8, key/value width 1 x 4, MLP 16.
    q_and_o = 2 * (2 * 5 * 8 * 8)  # (5 x 8) @ (8 x 8) twice                      1280
    k_and_v = 2 * (2 * 5 * 8 * 4)  # (5 x 8) @ (8 x 4) twice                       640
    mlp = 3 * (2 * 5 * 8 * 16)  # gate, up (5 x 8) @ (8 x 16); down (5 x 16) @ (16 x 8)   3840
    causal_pairs = 5 + 4 + 3 + 2 + 1  # query i sees keys 0..i
    attention = 2 * (2 * causal_pairs * 4) * 2  # scores and values, 4 dims per head, 2 heads   480
    assert q_and_o + k_and_v + mlp + attention == 6240
    assert prefill_flops(SMALL, tokens=5) == 6240
    assert prefill_flops(SMALL, tokens=5, causal=False) == 6240 - 480 + 2 * (2 * 25 * 4) * 2  # 6560


@pytest.fixture(scope="module")
def tiny_model():
    """Eager attention: the same products as SDPA as explicit matmuls, which torch's FLOP counter
    counts (it has no formula for the fused SDPA kernel of the CPU)."""
    from apt_viz.bench.presets import preset_config
    from apt_viz.hf import APTQwen2VLForConditionalGeneration

    torch.manual_seed(0)
    return APTQwen2VLForConditionalGeneration(preset_config("tiny", attn_implementation="eager")).eval()


def counted(call, modules: str | None = None) -> int:
    """FLOPs torch counts in ``call``: all of them, or those of the modules whose names match ``modules``."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        call()
    if modules is None:
        return counter.get_total_flops()
    return sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if re.fullmatch(modules, name))


def test_the_model_agrees_with_torch_flop_counter_on_the_real_tiny_model(tiny_model, photo_paths):
    """Stock and APT vision towers and the LLM, counted by torch.utils.flop_counter on their matmuls."""
    from PIL import Image

    from apt_viz.bench.presets import preset_architecture
    from apt_viz.hf import APTQwen2VLImageProcessor

    arch = preset_architecture("tiny")
    photos = [Image.open(photo_paths[name]) for name in ("astronaut", "coffee")]
    inputs = APTQwen2VLImageProcessor(patch_selection_method="budget", alpha=0.3, max_pixels=56 * 56 * 16)(
        photos, return_tensors="pt"
    )
    grids = inputs["image_grid_thw"]
    model = tiny_model.model
    stock = counted(lambda: model.get_image_features(inputs["pixel_values"], grids))
    apt_keys = {key: value for key, value in inputs.items() if key.startswith("apt_")}
    apt = counted(lambda: model.get_image_features(image_grid_thw=grids, **apt_keys))
    base, rows, llm = grids.prod(-1).tolist(), inputs["apt_num_tokens"].tolist(), inputs["apt_num_llm_tokens"].tolist()
    assert stock == sum(vision_flops(arch, n, n // 4) for n in base)
    assert apt == sum(vision_flops(arch, n, tokens) for n, tokens in zip(rows, llm))
    assert apt < stock / 2

    # The decoder layers (some transformers versions compute the rotary angles as a small matmul
    # outside them); the counter counts every query-key pair, with no causal saving.
    embeds = torch.randn(1, 37, arch.hidden_size)
    layers = counted(lambda: model.language_model(inputs_embeds=embeds, use_cache=False), r".*\.layers\.\d+")
    assert layers == prefill_flops(arch, 37, causal=False)


def test_published_sizes_give_the_published_parameter_counts():
    """The presets are Qwen2-VL-2B (2.21B parameters) and -7B (8.29B); counted on the meta device."""
    from apt_viz.bench.presets import preset_config
    from apt_viz.hf import APTQwen2VLForConditionalGeneration

    counts = {}
    for name in ("qwen2-vl-2b", "qwen2-vl-7b"):
        with torch.device("meta"):
            model = APTQwen2VLForConditionalGeneration(preset_config(name))
        counts[name] = (sum(p.numel() for p in model.model.visual.parameters()),
                        sum(p.numel() for p in model.parameters()))
    assert counts == {"qwen2-vl-2b": (665_271_296, 2_208_985_600), "qwen2-vl-7b": (675_759_104, 8_291_375_616)}


def test_architectures_read_from_config_json_without_transformers():
    from apt_viz.bench.presets import family_config

    for arch in (QWEN2_VL_2B, QWEN2_VL_7B):
        assert architecture_from_config(family_config(arch).to_dict(), name=arch.name) == arch
    # The layout of the published config.json files: text sizes at the top level, "in_chans".
    flat = {
        "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
        "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
        "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                          "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
    }
    assert architecture_from_config(flat, name="qwen2-vl-2b") == QWEN2_VL_2B
    with pytest.raises(ValueError, match="config has no embed_dim"):
        architecture_from_config({**flat, "vision_config": {}})


def test_stats_json_records_the_flops_of_every_image(photo_paths):
    analysis = analyze_image(photo_paths["astronaut"], APTConfig(method="budget", alpha=0.3))
    record = stats_record(analysis)["flops"]
    stats = analysis.stats
    assert (stats.vision_tokens, stats.base_tokens, stats.llm_tokens, stats.baseline_llm_tokens) == (387, 1296, 186, 324)
    arch = ARCHITECTURES["qwen2-vl-2b"]
    assert record == image_flops(arch, 387, 1296, 186, 324).to_dict()
    assert record["architecture"] == "qwen2-vl-2b" and record["text_tokens"] == 0
    assert record["baseline_vision_flops"] == vision_flops(arch, 1296, 324)
    assert record["prefill_flops"] == prefill_flops(arch, 186)
    # Below the token ratios 387 / 1296 = 0.299 and 186 / 324 = 0.574: attention is quadratic in the tokens.
    assert record["vision_flops_ratio"] == pytest.approx(0.2719, abs=1e-4)
    assert record["prefill_flops_ratio"] == pytest.approx(0.5715, abs=1e-4)
