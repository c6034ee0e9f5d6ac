"""The analytic cost model (apt_viz.core.flops): a hand count, torch's FLOP counter on real models, stats.json."""
from __future__ import annotations

import re
from dataclasses import replace
from math import prod

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from apt_viz.analysis import analyze_image
from apt_viz.core.architectures import (
    ARCHITECTURES,
    QWEN2_VL_2B,
    QWEN2_VL_7B,
    Architecture,
    MLPKind,
    architecture_from_config,
)
from apt_viz.core.config import APTConfig
from apt_viz.core.flops import image_flops, prefill_flops, vision_flops
from apt_viz.core.windows import stock_window_rows
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



# The same, with what the other families change (each counted by hand below).
WINDOWED = replace(SMALL, name="windowed", family="qwen2.5-vl", vision_mlp=MLPKind.GATED, window_size=8)
DEEPSTACK = replace(SMALL, name="deepstack", family="qwen3-vl", deepstack_blocks=(0,))
HYBRID = replace(
    SMALL, name="hybrid", family="qwen3.5", num_layers=2, full_attention_interval=2, attention_output_gate=True,
    linear_num_key_heads=1, linear_num_value_heads=2, linear_key_head_dim=2, linear_value_head_dim=3,
    linear_conv_kernel=2, linear_chunk_size=4,
)


def test_windowed_attention_and_the_gated_mlp_match_a_hand_count():
    # 6 x 4 base cells of 2 px, windows of 8 px = 4 x 4 cells: one of 16 rows, one of 8 (cut by the edge).
    assert stock_window_rows((6, 4), WINDOWED.window_cells) == [16, 8]
    embed = 2 * 24 * 4 * 4  # (24 x 4) @ (4 x 4)                                       768
    qkv = 2 * 24 * 4 * 12  # (24 x 4) @ (4 x 12)                                       2304
    projection = 2 * 24 * 4 * 4  # (24 x 4) @ (4 x 4)                                  768
    mlp = 2 * (2 * 24 * 4 * 8) + 2 * 24 * 8 * 4  # gate and up (24 x 4) @ (4 x 8); down (24 x 8) @ (8 x 4)   4608
    attention = 2 * 2 * (2 * 16 * 16 * 2) + 2 * 2 * (2 * 8 * 8 * 2)  # 2 heads of 2: scores and values, per window   5120
    merger = 2 * 6 * 16 * 16 + 2 * 6 * 16 * 8  # 6 LLM tokens                         4608
    assert embed + qkv + projection + mlp + attention + merger == 18176
    assert vision_flops(WINDOWED, patches=24, llm_tokens=6, windows=[16, 8]) == 18176
    # The same block attending over the whole image: 24 x 24 pairs instead of 16^2 + 8^2.
    full = replace(WINDOWED, fullatt_blocks=(0,))
    assert vision_flops(full, 24, 6) == 18176 - 5120 + 2 * 2 * (2 * 24 * 24 * 2)
    with pytest.raises(ValueError, match="attends within windows"):
        vision_flops(WINDOWED, 24, 6)
    with pytest.raises(ValueError, match="the windows hold 23 rows, not 24"):
        vision_flops(WINDOWED, 24, 6, windows=[16, 7])


def test_deepstack_mergers_match_a_hand_count():
    # SMALL's 4608 with one more merger of the same shape on the same 3 tokens (2304).
    assert vision_flops(DEEPSTACK, patches=6, llm_tokens=3) == 4608 + 2 * 3 * 16 * 16 + 2 * 3 * 16 * 8


def test_the_hybrid_llm_matches_a_hand_count():
    # 5 tokens; layer 0 Gated DeltaNet (1 key head of 2, 2 value heads of 3, conv kernel 2, chunks of 4),
    # layer 1 gated full attention (2 heads of 4, 1 key/value head); MLP 16 in both.
    qkv_in = 2 * 5 * 8 * (2 + 2 + 6)  # (5 x 8) @ (8 x 10)                              800
    z_in = 2 * 5 * 8 * 6  # (5 x 8) @ (8 x 6)                                            480
    b_and_a = 2 * (2 * 5 * 8 * 2)  # (5 x 8) @ (8 x 2) twice                             320
    out = 2 * 5 * 6 * 8  # (5 x 6) @ (6 x 8)                                             480
    conv = 2 * 5 * 2 * 10  # depthwise, 10 channels, kernel 2, 5 outputs                 200
    # Per value head and chunk of 4 (5 tokens pad to 2 chunks): K K^T and Q K^T (4 x 2) @ (2 x 4),
    # the UT transform on keys (4 x 4) @ (4 x 2) and values (4 x 4) @ (4 x 3), in-chunk attention
    # (4 x 4) @ (4 x 3), the state read twice (4 x 2) @ (2 x 3) and its update (2 x 4) @ (4 x 3).
    chunk = 2 * (2 * 4 * 4 * 2) + 2 * 4 * 4 * 2 + 2 * 4 * 4 * 3 + 2 * 4 * 4 * 3 + 3 * (2 * 4 * 2 * 3)  # 528
    linear = qkv_in + z_in + b_and_a + out + conv + 2 * 2 * chunk  #                    4392
    query_and_gate = 2 * 5 * 8 * 16  # (5 x 8) @ (8 x 16)                                1280
    full = query_and_gate + 640 + 640 + 480  # K and V, output, causal attention as in SMALL   3040
    mlp = 3840
    assert linear == 4392 and full == 3040
    assert HYBRID.layer_kinds == ("linear", "full")
    assert prefill_flops(HYBRID, tokens=5) == linear + full + 2 * mlp == 15112



def _solve_as_product(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """torch's chunked delta rule solves its (c x c) UT system with ``linalg.solve_triangular``, for
    which the counter has no formula; fla's kernels apply the system's inverse as a product (A @ B),
    and the cost model counts that product: 2 c^2 width per chunk and head."""
    *batch, c, _ = a_shape
    return 2 * prod(batch) * c * c * b_shape[-1]


UT_SOLVE = {torch.ops.aten.linalg_solve_triangular: _solve_as_product}
STOCK_CLASSES = {
    "qwen2-vl": "Qwen2VLForConditionalGeneration",
    "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3-vl": "Qwen3VLForConditionalGeneration",
    "qwen3.5": "Qwen3_5ForConditionalGeneration",
}


@pytest.mark.parametrize("family", list(STOCK_CLASSES))
def test_the_model_agrees_with_torch_flop_counter_on_each_familys_tiny_stock_model(family, photo_paths):
    """Windows (Qwen2.5-VL), deepstack mergers (Qwen3-VL) and the hybrid LLM (Qwen3.5), counted by
    torch.utils.flop_counter on the stock transformers model (eager attention: explicit matmuls)."""
    import transformers
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from apt_viz.bench.presets import TINY_PRESETS, preset_config

    arch = TINY_PRESETS[family]
    torch.manual_seed(0)
    model = getattr(transformers, STOCK_CLASSES[family])(preset_config(arch.name, attn_implementation="eager")).eval()
    photos = [Image.open(photo_paths[name]).convert("RGB") for name in ("astronaut", "rocket")]
    inputs = Qwen2VLImageProcessor(patch_size=arch.patch_size, max_pixels=240 * 240)(photos, return_tensors="pt")
    grids = inputs["image_grid_thw"]
    assert grids[0].tolist() != grids[1].tolist()  # two sizes; windows cut by the edges
    vision = counted(lambda: model.model.get_image_features(inputs["pixel_values"], grids))
    windows = [stock_window_rows((h, w), arch.window_cells) if arch.window_size else None for _, h, w in grids.tolist()]
    expected = [vision_flops(arch, t * h * w, t * h * w // 4, rows) for (t, h, w), rows in zip(grids.tolist(), windows)]
    assert vision == sum(expected)
    if family == "qwen2.5-vl":  # two of four blocks within windows: fewer FLOPs than all four over the image
        assert sum(expected) < sum(vision_flops(replace(arch, fullatt_blocks=(0, 1, 2, 3)), t * h * w, t * h * w // 4)
                                   for t, h, w in grids.tolist())

    # The decoder layers; the counter counts every query-key pair, with no causal saving. torch's causal
    # conv (Qwen3.5) also computes the K - 1 outputs past the end that the layer drops.
    embeds = torch.randn(1, 37, arch.hidden_size)
    layers = counted(lambda: model.model.language_model(inputs_embeds=embeds, use_cache=False), r".*\.layers\.\d+")
    channels = 2 * arch.linear_num_key_heads * arch.linear_key_head_dim + arch.linear_num_value_heads * (
        arch.linear_value_head_dim)
    dropped = arch.layer_kinds.count("linear") * 2 * (arch.linear_conv_kernel - 1) * arch.linear_conv_kernel * channels
    assert layers == prefill_flops(arch, 37, causal=False) + dropped


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
    with FlopCounterMode(display=False, custom_mapping=UT_SOLVE) as counter, torch.no_grad():
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
