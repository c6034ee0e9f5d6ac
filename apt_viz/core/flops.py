"""Analytic cost model of Qwen2-VL: vision-encoder and LLM-prefill FLOPs from sizes and token counts.

Pure Python (no torch): it runs anywhere, ``apt-viz bench --flops-only`` and every ``stats.json``
use it. FLOPs are those of the matrix products (two per multiply-add), which carry nearly all of
the work; norms, activations, softmax, rotary embeddings and the embedding lookup are left out.

Vision encoder of one image with ``n`` patches and ``L`` LLM tokens (embed dim ``D``, MLP ratio
``r``, depth ``B``, patch ``p``, temporal patch ``T``, ``C`` channels, merge size ``m``, LLM width
``H``):

- patch embedding: ``2 n (C T p^2) D``
- per block: QKV ``6 n D^2``, attention ``4 n^2 D`` (scores and weighted values over all
  ``n x n`` pairs: the tower attends within each image, bidirectionally), output projection
  ``2 n D^2``, MLP ``4 r n D^2``
- merger: ``2 L (m^2 D)^2 + 2 L (m^2 D) H``

LLM prefill of one prompt of ``S`` tokens (``N`` layers, width ``H``, ``h`` heads of ``d = H / h``,
``g`` key/value heads, MLP width ``I``): per layer Q and output projections ``4 S H^2``, K and V
``4 S H g d``, MLP ``6 S H I``, attention ``4 P H`` with ``P = S (S + 1) / 2`` query-key pairs
under the causal mask (``S^2`` with ``causal=False``, what a dense kernel computes and what
``torch.utils.flop_counter`` reports). The LM head is left out (prefill needs the last position's
logits only).

Stock Qwen2-VL encodes ``N`` patches into ``N / m^2`` LLM tokens; APT encodes its selected
patches into ``llm_tokens`` (docs/contract.md, section 5).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Qwen2VLArchitecture:
    """The sizes of a Qwen2-VL model that set its cost (and, in :mod:`apt_viz.hf.presets`, its config)."""

    name: str
    # vision tower
    vision_depth: int
    vision_embed_dim: int
    vision_num_heads: int
    vision_mlp_ratio: int
    # language model
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    in_channels: int = 3

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The published sizes of Qwen/Qwen2-VL-2B-Instruct and Qwen/Qwen2-VL-7B-Instruct (their config.json):
# one 675M-parameter vision tower (32 blocks of 1280, MLP 5120, 16 heads), Qwen2-1.5B / Qwen2-7B LLMs.
QWEN2_VL_2B = Qwen2VLArchitecture(
    name="qwen2-vl-2b",
    vision_depth=32, vision_embed_dim=1280, vision_num_heads=16, vision_mlp_ratio=4,
    hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12, num_kv_heads=2,
    vocab_size=151936, tie_word_embeddings=True,
)
QWEN2_VL_7B = Qwen2VLArchitecture(
    name="qwen2-vl-7b",
    vision_depth=32, vision_embed_dim=1280, vision_num_heads=16, vision_mlp_ratio=4,
    hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28, num_kv_heads=4,
    vocab_size=152064, tie_word_embeddings=False,
)
ARCHITECTURES: dict[str, Qwen2VLArchitecture] = {arch.name: arch for arch in (QWEN2_VL_2B, QWEN2_VL_7B)}
DEFAULT_ARCHITECTURE = QWEN2_VL_2B.name  # what stats.json estimates with


def architecture_from_config(config: Mapping[str, Any], name: str = "checkpoint") -> Qwen2VLArchitecture:
    """The sizes of a Qwen2-VL ``config.json`` (as a dict), read without transformers.

    Args:
        config: The parsed ``config.json`` of a Qwen2-VL checkpoint (text sizes at the top level or
            under ``text_config``, vision sizes under ``vision_config``).
        name: The name to give the architecture (e.g. the checkpoint folder).

    Returns:
        The architecture.

    Raises:
        ValueError: a size is missing (one line naming it).
    """
    text = {**config, **(config.get("text_config") or {})}
    vision = config.get("vision_config") or {}

    def need(source: Mapping[str, Any], *keys: str) -> Any:
        for key in keys:
            if source.get(key) is not None:
                return source[key]
        raise ValueError(f"config has no {keys[0]}: not a Qwen2-VL config.json")

    heads = need(text, "num_attention_heads")
    return Qwen2VLArchitecture(
        name=name,
        vision_depth=need(vision, "depth"),
        vision_embed_dim=need(vision, "embed_dim"),
        vision_num_heads=need(vision, "num_heads"),
        vision_mlp_ratio=need(vision, "mlp_ratio"),
        hidden_size=need(text, "hidden_size"),
        intermediate_size=need(text, "intermediate_size"),
        num_layers=need(text, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=text.get("num_key_value_heads") or heads,
        vocab_size=need(text, "vocab_size"),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        patch_size=vision.get("patch_size", 14),
        temporal_patch_size=vision.get("temporal_patch_size", 2),
        merge_size=vision.get("spatial_merge_size", 2),
        in_channels=vision.get("in_channels", vision.get("in_chans", 3)),
    )


def vision_flops(arch: Qwen2VLArchitecture, patches: int, llm_tokens: int) -> int:
    """FLOPs of the vision encoder on one image.

    Args:
        arch: Model sizes.
        patches: Rows the vision blocks see (N stock, the selected cells with APT).
        llm_tokens: Tokens out of the merger (N / m^2 stock, ``llm_tokens`` with APT).

    Returns:
        Matrix-product FLOPs: patch embedding, every block, merger.
    """
    n, d = patches, arch.vision_embed_dim
    patch_pixels = arch.in_channels * arch.temporal_patch_size * arch.patch_size**2
    embed = 2 * n * patch_pixels * d
    mlp_dim = int(d * arch.vision_mlp_ratio)
    block = 6 * n * d * d + 4 * n * n * d + 2 * n * d * d + 4 * n * d * mlp_dim
    merged = arch.merge_size**2 * d
    merger = 2 * llm_tokens * merged * merged + 2 * llm_tokens * merged * arch.hidden_size
    return embed + arch.vision_depth * block + merger


def prefill_flops(arch: Qwen2VLArchitecture, tokens: int, causal: bool = True) -> int:
    """FLOPs of the LLM prefill of one prompt.

    Args:
        arch: Model sizes.
        tokens: Prompt length S (text and image tokens).
        causal: Count the S (S + 1) / 2 query-key pairs under the causal mask (True) or all S^2.

    Returns:
        Matrix-product FLOPs of the decoder layers.
    """
    s, h = tokens, arch.hidden_size
    kv = arch.num_kv_heads * arch.head_dim
    pairs = s * (s + 1) // 2 if causal else s * s
    layer = 4 * s * h * h + 4 * s * h * kv + 6 * s * h * arch.intermediate_size + 4 * pairs * h
    return arch.num_layers * layer


@dataclass(frozen=True)
class FlopsEstimate:
    """Stock (``baseline_*``) against APT FLOPs of one image (its prompt holding ``text_tokens`` more tokens)."""

    architecture: str
    vision_flops: int
    baseline_vision_flops: int
    prefill_flops: int
    baseline_prefill_flops: int
    text_tokens: int = 0

    @property
    def vision_flops_ratio(self) -> float:
        return self.vision_flops / self.baseline_vision_flops

    @property
    def prefill_flops_ratio(self) -> float:
        return self.prefill_flops / self.baseline_prefill_flops

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the architecture, the four counts, the two APT / stock ratios."""
        return {
            "architecture": self.architecture,
            "text_tokens": self.text_tokens,
            "vision_flops": self.vision_flops,
            "baseline_vision_flops": self.baseline_vision_flops,
            "vision_flops_ratio": self.vision_flops_ratio,
            "prefill_flops": self.prefill_flops,
            "baseline_prefill_flops": self.baseline_prefill_flops,
            "prefill_flops_ratio": self.prefill_flops_ratio,
        }


def image_flops(
    arch: Qwen2VLArchitecture,
    vision_tokens: int,
    base_tokens: int,
    llm_tokens: int,
    baseline_llm_tokens: int,
    text_tokens: int = 0,
) -> FlopsEstimate:
    """Stock and APT FLOPs of one image, from its token counts (:class:`~apt_viz.core.accounting.TokenStats`).

    Args:
        arch: Model sizes.
        vision_tokens: Vision patches after APT.
        base_tokens: N, vision patches without APT.
        llm_tokens: LLM tokens after APT.
        baseline_llm_tokens: LLM tokens without APT.
        text_tokens: Other tokens of the prompt (0: the image's tokens alone).

    Returns:
        The estimate.
    """
    return FlopsEstimate(
        architecture=arch.name,
        vision_flops=vision_flops(arch, vision_tokens, llm_tokens),
        baseline_vision_flops=vision_flops(arch, base_tokens, baseline_llm_tokens),
        prefill_flops=prefill_flops(arch, llm_tokens + text_tokens),
        baseline_prefill_flops=prefill_flops(arch, baseline_llm_tokens + text_tokens),
        text_tokens=text_tokens,
    )
