"""Architecture presets: transformers configs with the published sizes of each family, for random weights.

Latency depends on shapes, not on weight values, so ``apt-viz bench --preset qwen3-vl-8b`` builds
the 8B architecture with random weights and needs no download; its figures are speed only. The
published sizes live in :mod:`apt_viz.core.architectures` (the cost model uses the same numbers);
this module turns an :class:`~apt_viz.core.architectures.Architecture` into its family's config
(``Qwen2VLConfig``, ``Qwen2_5_VLConfig``, ``Qwen3VLConfig``, ``Qwen3_5Config``).

The ``tiny`` presets (one per family) are a few layers of small widths for tests and offline
examples: ``tiny-qwen2.5-vl`` has windowed and full-attention blocks, ``tiny-qwen3-vl`` three
deepstack blocks and three LLM layers to receive them, ``tiny-qwen3.5`` three linear-attention
layers and one full-attention layer.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from transformers import PretrainedConfig, Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3_5Config, Qwen3VLConfig

from ..core.architectures import ARCHITECTURES, Architecture, MLPKind

TINY = Architecture(
    name="tiny", family="qwen2-vl",
    vision_depth=2, vision_embed_dim=32, vision_num_heads=2, vision_mlp_dim=64,
    hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16, vocab_size=256,
)
TINY_QWEN2_5_VL = replace(
    TINY, name="tiny-qwen2.5-vl", family="qwen2.5-vl", vision_depth=4, vision_mlp=MLPKind.GATED,
    window_size=112, fullatt_blocks=(1, 3),  # windowed, full, windowed, full
)
TINY_QWEN3_VL = replace(
    TINY, name="tiny-qwen3-vl", family="qwen3-vl", vision_depth=4, num_layers=3, patch_size=16,
    position_embeddings=2304, deepstack_blocks=(0, 1, 2),  # added after LLM layers 0, 1, 2
)
TINY_QWEN3_5 = replace(
    TINY, name="tiny-qwen3.5", family="qwen3.5", num_layers=4, head_dim=32, patch_size=16, position_embeddings=2304,
    full_attention_interval=4, attention_output_gate=True,  # linear, linear, linear, full
    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
    linear_conv_kernel=4,
)
TINY_PRESETS = {arch.family: arch for arch in (TINY, TINY_QWEN2_5_VL, TINY_QWEN3_VL, TINY_QWEN3_5)}
PRESETS: dict[str, Architecture] = {**ARCHITECTURES, **{arch.name: arch for arch in TINY_PRESETS.values()}}

# The vision special tokens of each family's tokenizer (and of its published configs).
_QWEN2_TOKEN_IDS = {"vision_start_token_id": 151652, "vision_end_token_id": 151653, "image_token_id": 151655,
                    "video_token_id": 151656}
TOKEN_IDS = {
    "qwen2-vl": _QWEN2_TOKEN_IDS,
    "qwen2.5-vl": _QWEN2_TOKEN_IDS,
    "qwen3-vl": _QWEN2_TOKEN_IDS,
    "qwen3.5": {"vision_start_token_id": 248053, "vision_end_token_id": 248054, "image_token_id": 248056,
                "video_token_id": 248057},
}
TOKEN_NAMES = {
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
}
# The published rotary settings: theta, the M-RoPE split (t, h, w) of a rotary half of 64 (qwen3.5:
# 32, a quarter of its 256-wide heads rotates), interleaved sections (qwen3 families).
_ROPE = {
    "qwen2-vl": (1e6, (16, 24, 24), False, 1.0),
    "qwen2.5-vl": (1e6, (16, 24, 24), False, 1.0),
    "qwen3-vl": (5e6, (24, 20, 20), True, 1.0),
    "qwen3.5": (1e7, (11, 11, 10), True, 0.25),
}
_CONFIG_CLASSES: dict[str, Any] = {  # family -> its config class
    "qwen2-vl": Qwen2VLConfig, "qwen2.5-vl": Qwen2_5_VLConfig, "qwen3-vl": Qwen3VLConfig, "qwen3.5": Qwen3_5Config,
}


def preset_architecture(name: str, layers: int | None = None) -> Architecture:
    """The sizes of preset ``name``, optionally cut to ``layers`` vision blocks and LLM layers.

    Args:
        name: A key of :data:`PRESETS` (``qwen2-vl-2b`` ... ``qwen3.5-9b``, ``tiny``, ``tiny-<family>``).
        layers: Keep only this many vision blocks and LLM layers (quick CPU runs; time and FLOPs
            scale about linearly with depth). None keeps the published depth.

    Returns:
        The architecture; a cut one is named e.g. ``qwen2-vl-2b (4 layers)``.

    Raises:
        ValueError: an unknown preset or a layer count below 1 (one line).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name] if layers is None else PRESETS[name].cut(layers)


def _mrope_section(family: str, half: int) -> list[int]:
    """The published M-RoPE split scaled to a rotary half of ``half`` (the published one when it fits)."""
    published = _ROPE[family][1]
    reference = sum(published)
    exact = [size * half / reference for size in published]
    section = [int(x) for x in exact]
    for i in sorted(range(3), key=lambda i: section[i] - exact[i])[: half - sum(section)]:
        section[i] += 1  # the rounding remainder to the largest fractions
    return section


def _token_ids(arch: Architecture, tokenizer: Any) -> tuple[int, dict[str, int]]:
    """The vocabulary size and the four vision token ids (tokenizer, published, or a small vocabulary's last four)."""
    vocab_size = arch.vocab_size if tokenizer is None else len(tokenizer)
    if tokenizer is not None:
        return vocab_size, {key: tokenizer.convert_tokens_to_ids(token) for key, token in TOKEN_NAMES.items()}
    published = TOKEN_IDS[arch.family]
    if vocab_size > max(published.values()):
        return vocab_size, dict(published)
    return vocab_size, {key: vocab_size - 4 + i for i, key in enumerate(published)}


def family_config(arch: Architecture, tokenizer: Any = None, **overrides: Any) -> PretrainedConfig:
    """The transformers config of ``arch`` in its family's class (rotary settings as published).

    Args:
        arch: Model sizes (a preset from :func:`preset_architecture`, or any other).
        tokenizer: When given, the vocabulary size and the vision token ids come from it (its
            ``<|image_pad|>``, ``<|video_pad|>``, ``<|vision_start|>`` and ``<|vision_end|>``);
            otherwise the published ids, or the last four ids of a small vocabulary.
        **overrides: Top-level config fields to set (e.g. ``attn_implementation``).

    Returns:
        ``Qwen2VLConfig``, ``Qwen2_5_VLConfig``, ``Qwen3VLConfig`` or ``Qwen3_5Config``
        (random-weight models are built from it with ``_from_config``).
    """
    vocab_size, token_ids = _token_ids(arch, tokenizer)
    theta, _, interleaved, rotary_fraction = _ROPE[arch.family]
    rope: dict[str, Any] = {
        "rope_type": "default", "rope_theta": theta,
        "mrope_section": _mrope_section(arch.family, int(arch.head_dim * rotary_fraction) // 2),
    }
    if interleaved:
        rope["mrope_interleaved"] = True
    if rotary_fraction != 1.0:
        rope["partial_rotary_factor"] = rotary_fraction
    text: dict[str, Any] = {
        "vocab_size": vocab_size, "hidden_size": arch.hidden_size, "intermediate_size": arch.intermediate_size,
        "num_hidden_layers": arch.num_layers, "num_attention_heads": arch.num_heads,
        "num_key_value_heads": arch.num_kv_heads, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "rope_parameters": rope, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
    }
    vision: dict[str, Any] = {
        "depth": arch.vision_depth, "num_heads": arch.vision_num_heads, "patch_size": arch.patch_size,
        "temporal_patch_size": arch.temporal_patch_size, "spatial_merge_size": arch.merge_size,
        "in_channels": arch.in_channels,
    }
    if arch.family == "qwen2-vl":
        if arch.vision_mlp_dim % arch.vision_embed_dim:
            raise ValueError("a Qwen2-VL vision MLP width must be a multiple of its embed dim (mlp_ratio)")
        vision |= {"embed_dim": arch.vision_embed_dim, "hidden_size": arch.hidden_size,
                   "mlp_ratio": arch.vision_mlp_dim // arch.vision_embed_dim}
    else:
        vision |= {"hidden_size": arch.vision_embed_dim, "intermediate_size": arch.vision_mlp_dim,
                   "out_hidden_size": arch.hidden_size}
        text["head_dim"] = arch.head_dim
    if arch.family == "qwen2.5-vl":
        vision |= {"window_size": arch.window_size, "fullatt_block_indexes": list(arch.fullatt_blocks)}
    if arch.family in ("qwen3-vl", "qwen3.5"):
        vision["num_position_embeddings"] = arch.position_embeddings
    if arch.family == "qwen3-vl":
        vision["deepstack_visual_indexes"] = list(arch.deepstack_blocks)
    if arch.family == "qwen3.5":
        text |= {
            "layer_types": [f"{kind}_attention" for kind in arch.layer_kinds],
            "linear_num_key_heads": arch.linear_num_key_heads, "linear_num_value_heads": arch.linear_num_value_heads,
            "linear_key_head_dim": arch.linear_key_head_dim, "linear_value_head_dim": arch.linear_value_head_dim,
            "linear_conv_kernel_dim": arch.linear_conv_kernel,
        }
    return _CONFIG_CLASSES[arch.family](
        text_config=text, vision_config=vision, tie_word_embeddings=arch.tie_word_embeddings, **token_ids, **overrides
    )


def preset_config(name: str, tokenizer: Any = None, layers: int | None = None, **overrides: Any) -> PretrainedConfig:
    """The family config of preset ``name``: ``family_config(preset_architecture(name, layers), ...)``.

    Args:
        name: A key of :data:`PRESETS`, e.g. ``tiny-qwen3-vl`` (tests) or ``qwen2.5-vl-7b``.
        tokenizer: Optional tokenizer supplying the vocabulary size and vision token ids.
        layers: Optional cut to this many vision blocks and LLM layers.
        **overrides: Top-level config fields to set (e.g. ``attn_implementation="eager"``).

    Returns:
        The config, in the preset's family class.
    """
    return family_config(preset_architecture(name, layers), tokenizer, **overrides)
