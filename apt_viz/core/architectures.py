"""The sizes of the Qwen VL models that set their cost, per family, and the published ones.

:class:`Architecture` is what the cost model (:mod:`apt_viz.core.flops`) needs of a model and what
the bench presets (:mod:`apt_viz.bench.presets`) build a transformers config from. The four
families differ in (transformers 5.24):

- **qwen2-vl**: patch 14; vision MLP fc1 -> GELU -> fc2; every block attends over the whole image.
- **qwen2.5-vl**: patch 14; vision MLP gated (SwiGLU: gate, up, down); blocks attend within 112 px
  windows except ``fullatt_blocks`` (7, 15, 23, 31), which attend over the whole image.
- **qwen3-vl**: patch 16; learned position table (48 x 48) sampled per patch; the features after
  ``deepstack_blocks`` go through their own mergers (same shape as the final one) into the LLM;
  LLM head width set apart from ``hidden_size / heads`` (``head_dim``).
- **qwen3.5**: the Qwen3-VL tower without deepstack; a hybrid LLM in which every
  ``full_attention_interval``-th layer is gated full attention and the others Gated DeltaNet
  linear attention.

Pure Python: ``architecture_from_config`` reads a ``config.json`` without transformers.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

# config.json ``model_type`` -> family name (docs/glossary.md).
MODEL_TYPES = {"qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl", "qwen3_vl": "qwen3-vl", "qwen3_5": "qwen3.5"}
FAMILIES = tuple(MODEL_TYPES.values())


class MLPKind(str, Enum):
    """The vision blocks' MLP: two matrices (fc1, activation, fc2) or three (SwiGLU)."""

    PLAIN = "plain"
    GATED = "gated"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Architecture:
    """The sizes of one Qwen VL model (vision tower, merger, language model)."""

    name: str
    family: str  # one of FAMILIES
    # vision tower
    vision_depth: int
    vision_embed_dim: int
    vision_num_heads: int
    vision_mlp_dim: int  # the MLP's inner width (Qwen2-VL: embed_dim * mlp_ratio)
    # language model
    hidden_size: int  # also the merger's output width
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    # vision geometry
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    in_channels: int = 3
    vision_mlp: MLPKind = MLPKind.PLAIN
    window_size: int = 0  # px side of the attention windows; 0: every block attends over the whole image
    fullatt_blocks: tuple[int, ...] = ()  # with windows: the blocks that attend over the whole image
    deepstack_blocks: tuple[int, ...] = ()  # blocks whose output goes through its own merger into the LLM
    position_embeddings: int = 0  # learned position table entries (48 x 48); 0: rotary positions only
    # hybrid LLM (qwen3.5): every full_attention_interval-th layer is full attention, the others linear
    full_attention_interval: int = 1
    attention_output_gate: bool = False  # the full-attention layers gate their output (q_proj twice as wide)
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    linear_conv_kernel: int = 0
    linear_chunk_size: int = 64  # tokens per chunk of the chunked gated delta rule

    def __post_init__(self) -> None:
        object.__setattr__(self, "vision_mlp", MLPKind(self.vision_mlp))
        object.__setattr__(self, "fullatt_blocks", tuple(self.fullatt_blocks))
        object.__setattr__(self, "deepstack_blocks", tuple(self.deepstack_blocks))
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        if self.window_size and self.window_size % (self.patch_size * self.merge_size):
            raise ValueError(f"window_size {self.window_size} is not a multiple of patch * merge size")

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """``full`` or ``linear`` per LLM layer (transformers' ``layer_types`` rule)."""
        interval = self.full_attention_interval
        return tuple("full" if (i + 1) % interval == 0 else "linear" for i in range(self.num_layers))

    @property
    def window_cells(self) -> int:
        """Base cells along one side of an attention window (0 without windows)."""
        return self.window_size // self.patch_size

    def cut(self, layers: int) -> Architecture:
        """The first ``layers`` vision blocks and LLM layers (quick CPU runs), named e.g. ``x (4 layers)``.

        Windows, full-attention and deepstack blocks keep their indexes; those past the cut go.

        Args:
            layers: Blocks and layers to keep (>= 1; a hybrid LLM keeps at least one full-attention layer).

        Returns:
            The cut architecture.

        Raises:
            ValueError: ``layers`` below 1, or a hybrid LLM cut before its first full-attention layer
                (transformers' hybrid cache cannot hold only linear-attention layers).
        """
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        interval = self.full_attention_interval
        if interval > 1 and layers < min(interval, self.num_layers):
            raise ValueError(
                f"{self.name} cut to {layers} layers keeps no full-attention layer (every {interval}th is one), "
                f"which transformers' hybrid cache needs: cut to {interval} layers or more"
            )
        depth = min(layers, self.vision_depth)
        return replace(
            self,
            name=f"{self.name} ({layers} layers)",
            vision_depth=depth,
            num_layers=min(layers, self.num_layers),
            fullatt_blocks=tuple(b for b in self.fullatt_blocks if b < depth),
            deepstack_blocks=tuple(b for b in self.deepstack_blocks if b < depth),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["vision_mlp"] = str(self.vision_mlp)
        out["fullatt_blocks"], out["deepstack_blocks"] = list(self.fullatt_blocks), list(self.deepstack_blocks)
        return out


# The published sizes, each from the model's config.json on the Hugging Face hub (Qwen/<name>-Instruct;
# Qwen/Qwen3.5-9B), which transformers 5.24 loads with Qwen2VLConfig, Qwen2_5_VLConfig, Qwen3VLConfig
# and Qwen3_5Config (their defaults are the 7B, 7B, 4B / 8B tower and 9B shapes). docs/bench.md lists them.
QWEN2_VL_2B = Architecture(
    name="qwen2-vl-2b", family="qwen2-vl",
    vision_depth=32, vision_embed_dim=1280, vision_num_heads=16, vision_mlp_dim=5120,
    hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
    vocab_size=151936, tie_word_embeddings=True,
)
QWEN2_VL_7B = replace(
    QWEN2_VL_2B, name="qwen2-vl-7b",
    hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
    vocab_size=152064, tie_word_embeddings=False,
)
QWEN2_5_VL_3B = Architecture(
    name="qwen2.5-vl-3b", family="qwen2.5-vl",
    vision_depth=32, vision_embed_dim=1280, vision_num_heads=16, vision_mlp_dim=3420, vision_mlp=MLPKind.GATED,
    window_size=112, fullatt_blocks=(7, 15, 23, 31),
    hidden_size=2048, intermediate_size=11008, num_layers=36, num_heads=16, num_kv_heads=2, head_dim=128,
    vocab_size=151936, tie_word_embeddings=True,
)
QWEN2_5_VL_7B = replace(
    QWEN2_5_VL_3B, name="qwen2.5-vl-7b",
    hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
    vocab_size=152064, tie_word_embeddings=False,
)
QWEN3_VL_2B = Architecture(
    name="qwen3-vl-2b", family="qwen3-vl",
    vision_depth=24, vision_embed_dim=1024, vision_num_heads=16, vision_mlp_dim=4096,
    patch_size=16, position_embeddings=2304, deepstack_blocks=(5, 11, 17),
    hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128,
    vocab_size=151936, tie_word_embeddings=True,
)
QWEN3_VL_8B = replace(
    QWEN3_VL_2B, name="qwen3-vl-8b",
    vision_depth=27, vision_embed_dim=1152, vision_mlp_dim=4304, deepstack_blocks=(8, 16, 24),
    hidden_size=4096, intermediate_size=12288, num_layers=36, num_heads=32, num_kv_heads=8, head_dim=128,
    vocab_size=151936, tie_word_embeddings=False,
)
QWEN3_5_9B = Architecture(
    name="qwen3.5-9b", family="qwen3.5",
    vision_depth=27, vision_embed_dim=1152, vision_num_heads=16, vision_mlp_dim=4304,
    patch_size=16, position_embeddings=2304,
    hidden_size=4096, intermediate_size=12288, num_layers=32, num_heads=16, num_kv_heads=4, head_dim=256,
    vocab_size=248320, tie_word_embeddings=False,
    full_attention_interval=4, attention_output_gate=True,
    linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128,
    linear_conv_kernel=4,
)
ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (QWEN2_VL_2B, QWEN2_VL_7B, QWEN2_5_VL_3B, QWEN2_5_VL_7B, QWEN3_VL_2B, QWEN3_VL_8B, QWEN3_5_9B)
}
DEFAULT_ARCHITECTURE = QWEN2_VL_2B.name  # what stats.json estimates with


def _need(source: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if source.get(key) is not None:
            return source[key]
    raise ValueError(f"config has no {keys[0]}: not a Qwen VL config.json")


def architecture_from_config(config: Mapping[str, Any], name: str = "checkpoint") -> Architecture:
    """The sizes of a Qwen VL ``config.json`` (as a dict), read without transformers.

    Args:
        config: The parsed ``config.json`` (text sizes at the top level or under ``text_config``,
            vision sizes under ``vision_config``); its ``model_type`` names the family (a config
            without one is read as Qwen2-VL, as the first releases were).
        name: The name to give the architecture (e.g. the checkpoint folder).

    Returns:
        The architecture.

    Raises:
        ValueError: an unknown model type or a missing size (one line naming it).
    """
    model_type = config.get("model_type", "qwen2_vl")
    family = MODEL_TYPES.get(model_type)
    if family is None:
        raise ValueError(f"model_type {model_type!r} is not a Qwen VL family ({', '.join(MODEL_TYPES)})")
    text = {**config, **(config.get("text_config") or {})}
    vision = config.get("vision_config") or {}
    heads = _need(text, "num_attention_heads")
    hidden = _need(text, "hidden_size")
    if family == "qwen2-vl":
        embed = _need(vision, "embed_dim")
        mlp_dim = int(embed * _need(vision, "mlp_ratio"))
    else:
        embed, mlp_dim = _need(vision, "hidden_size"), _need(vision, "intermediate_size")
    layer_types = text.get("layer_types") or []
    full_layers = [i for i, kind in enumerate(layer_types) if kind == "full_attention"]
    return Architecture(
        name=name,
        family=family,
        vision_depth=_need(vision, "depth"),
        vision_embed_dim=embed,
        vision_num_heads=_need(vision, "num_heads"),
        vision_mlp_dim=mlp_dim,
        vision_mlp=MLPKind.GATED if family == "qwen2.5-vl" else MLPKind.PLAIN,
        hidden_size=hidden,
        intermediate_size=_need(text, "intermediate_size"),
        num_layers=_need(text, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=text.get("num_key_value_heads") or heads,
        head_dim=text.get("head_dim") or hidden // heads,
        vocab_size=_need(text, "vocab_size"),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        patch_size=vision.get("patch_size", 16 if family in ("qwen3-vl", "qwen3.5") else 14),
        temporal_patch_size=vision.get("temporal_patch_size", 2),
        merge_size=vision.get("spatial_merge_size", 2),
        in_channels=vision.get("in_channels", vision.get("in_chans", 3)),
        window_size=vision.get("window_size", 112) if family == "qwen2.5-vl" else 0,
        fullatt_blocks=tuple(vision.get("fullatt_block_indexes", ())) if family == "qwen2.5-vl" else (),
        deepstack_blocks=tuple(vision.get("deepstack_visual_indexes", ())) if family == "qwen3-vl" else (),
        position_embeddings=vision.get("num_position_embeddings", 2304) if family in ("qwen3-vl", "qwen3.5") else 0,
        **(_hybrid_sizes(text, full_layers) if family == "qwen3.5" else {}),
    )


def _hybrid_sizes(text: Mapping[str, Any], full_layers: list[int]) -> dict[str, Any]:
    """Qwen3.5's linear-attention sizes and its full-attention interval (from ``layer_types``)."""
    interval = full_layers[0] + 1 if full_layers else text.get("full_attention_interval", 4)
    expected = [i for i in range(_need(text, "num_hidden_layers")) if (i + 1) % interval == 0]
    if full_layers and full_layers != expected:
        raise ValueError("layer_types is not one full-attention layer every k layers; the cost model cannot read it")
    return {
        "full_attention_interval": interval,
        "attention_output_gate": True,  # transformers' Qwen3.5 attention always gates its output
        "linear_num_key_heads": _need(text, "linear_num_key_heads"),
        "linear_num_value_heads": _need(text, "linear_num_value_heads"),
        "linear_key_head_dim": _need(text, "linear_key_head_dim"),
        "linear_value_head_dim": _need(text, "linear_value_head_dim"),
        "linear_conv_kernel": _need(text, "linear_conv_kernel_dim"),
    }
