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

from dataclasses import dataclass
from typing import Any

from .architectures import Architecture


def vision_flops(arch: Architecture, patches: int, llm_tokens: int) -> int:
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
    mlp_dim = arch.vision_mlp_dim
    block = 6 * n * d * d + 4 * n * n * d + 2 * n * d * d + 4 * n * d * mlp_dim
    merged = arch.merge_size**2 * d
    merger = 2 * llm_tokens * merged * merged + 2 * llm_tokens * merged * arch.hidden_size
    return embed + arch.vision_depth * block + merger


def prefill_flops(arch: Architecture, tokens: int, causal: bool = True) -> int:
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
    arch: Architecture,
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
