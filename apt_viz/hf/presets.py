"""Qwen2-VL architecture presets: transformers configs with the published sizes, for random weights.

Latency depends on shapes, not on weight values, so ``apt-viz bench --preset qwen2-vl-2b`` builds
the 2B architecture with random weights and needs no download. ``tiny`` is a few-layer model with
small widths for tests and offline examples. The sizes live in :mod:`apt_viz.core.flops` (the cost
model uses the same numbers); this module turns them into ``Qwen2VLConfig`` objects.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from transformers import Qwen2VLConfig

from ..core.flops import ARCHITECTURES, Qwen2VLArchitecture

TINY = Qwen2VLArchitecture(
    name="tiny",
    vision_depth=2, vision_embed_dim=32, vision_num_heads=2, vision_mlp_ratio=2,
    hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
    vocab_size=256,
)
PRESETS: dict[str, Qwen2VLArchitecture] = {**ARCHITECTURES, TINY.name: TINY}
# Qwen2-VL's vision special tokens in its tokenizer (and in the published configs).
QWEN2_VL_TOKEN_IDS = {
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "image_token_id": 151655,
    "video_token_id": 151656,
}
TOKEN_NAMES = {
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
}


def preset_architecture(name: str, layers: int | None = None) -> Qwen2VLArchitecture:
    """The sizes of preset ``name``, optionally cut to ``layers`` vision blocks and LLM layers.

    Args:
        name: ``qwen2-vl-2b``, ``qwen2-vl-7b`` or ``tiny``.
        layers: Keep only this many vision blocks and LLM layers (quick CPU runs; time and FLOPs
            scale about linearly with depth). None keeps the published depth.

    Returns:
        The architecture; a cut one is named e.g. ``qwen2-vl-2b (4 layers)``.

    Raises:
        ValueError: an unknown preset or a layer count below 1 (one line).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    arch = PRESETS[name]
    if layers is None:
        return arch
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    return replace(
        arch,
        name=f"{name} ({layers} layers)",
        vision_depth=min(layers, arch.vision_depth),
        num_layers=min(layers, arch.num_layers),
    )


def qwen2vl_config(arch: Qwen2VLArchitecture, tokenizer: Any = None, **overrides: Any) -> Qwen2VLConfig:
    """A ``Qwen2VLConfig`` of ``arch`` (M-RoPE split and rope theta as in the published models).

    Args:
        arch: Model sizes (a preset from :func:`preset_architecture`, or any other).
        tokenizer: When given, the vocabulary size and the vision token ids come from it (its
            ``<|image_pad|>``, ``<|video_pad|>``, ``<|vision_start|>`` and ``<|vision_end|>``);
            otherwise the published Qwen2-VL ids, or the last four ids of a small vocabulary.
        **overrides: Top-level config fields to set (e.g. ``attn_implementation``).

    Returns:
        The config (random-weight models are built from it with ``_from_config``).
    """
    vocab_size = arch.vocab_size if tokenizer is None else len(tokenizer)
    if tokenizer is not None:
        token_ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in TOKEN_NAMES.items()}
    elif vocab_size > max(QWEN2_VL_TOKEN_IDS.values()):
        token_ids = dict(QWEN2_VL_TOKEN_IDS)
    else:
        token_ids = {key: vocab_size - 4 + i for i, key in enumerate(QWEN2_VL_TOKEN_IDS)}
    half = arch.head_dim // 2  # M-RoPE splits the rotary half of a head 1/4 t, 3/8 h, 3/8 w (16, 24, 24 of 64)
    mrope_section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    return Qwen2VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": arch.hidden_size,
            "intermediate_size": arch.intermediate_size,
            "num_hidden_layers": arch.num_layers,
            "num_attention_heads": arch.num_heads,
            "num_key_value_heads": arch.num_kv_heads,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "mrope_section": mrope_section, "rope_theta": 1e6},
            "bos_token_id": None,
            "eos_token_id": None,
            "pad_token_id": None,
        },
        vision_config={
            "depth": arch.vision_depth,
            "embed_dim": arch.vision_embed_dim,
            "hidden_size": arch.hidden_size,
            "num_heads": arch.vision_num_heads,
            "mlp_ratio": arch.vision_mlp_ratio,
            "patch_size": arch.patch_size,
            "temporal_patch_size": arch.temporal_patch_size,
            "spatial_merge_size": arch.merge_size,
            "in_channels": arch.in_channels,
        },
        tie_word_embeddings=arch.tie_word_embeddings,
        **token_ids,
        **overrides,
    )


def preset_config(name: str, tokenizer: Any = None, layers: int | None = None, **overrides: Any) -> Qwen2VLConfig:
    """``qwen2vl_config(preset_architecture(name, layers), tokenizer, **overrides)``.

    Args:
        name: ``qwen2-vl-2b``, ``qwen2-vl-7b`` or ``tiny``.
        tokenizer: Optional tokenizer supplying the vocabulary size and vision token ids.
        layers: Optional cut to this many vision blocks and LLM layers.
        **overrides: Top-level config fields to set.

    Returns:
        The config.
    """
    return qwen2vl_config(preset_architecture(name, layers), tokenizer, **overrides)
