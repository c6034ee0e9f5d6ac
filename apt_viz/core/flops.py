"""Analytic cost model of the Qwen VL families: vision-encoder and LLM-prefill FLOPs from sizes and token counts.

Pure Python (no torch): it runs anywhere, ``apt-viz bench --flops-only`` and every ``stats.json``
use it. FLOPs are those of the matrix products and convolutions (two per multiply-add), which
carry nearly all of the work; norms, activations, softmax, gates, rotary embeddings, the learned
position table (a weighted lookup) and the embedding lookup are left out. docs/bench.md derives
each term; :class:`~apt_viz.core.architectures.Architecture` holds the sizes.

Vision encoder of one image with ``n`` rows and ``L`` LLM tokens (embed dim ``D``, MLP width
``F``, depth ``B``, patch ``p``, temporal patch ``T``, ``C`` channels, merge size ``m``, LLM width
``H``):

- patch embedding: ``2 n (C T p^2) D``
- per block: QKV ``6 n D^2``, output projection ``2 n D^2``, MLP ``4 n D F`` (two matrices) or
  ``6 n D F`` (gated: Qwen2.5-VL); attention ``4 D P`` over ``P`` query-key pairs: ``n^2`` in a
  block that attends over the whole image, ``sum_w n_w^2`` in a windowed block (Qwen2.5-VL: rows
  ``n_w`` of each 112 px window)
- merger: ``2 L (m^2 D)^2 + 2 L (m^2 D) H``, once more per deepstack block (Qwen3-VL: each has its
  own merger of the same shape, on the same rows)

LLM prefill of one prompt of ``S`` tokens (``h`` heads of width ``d``, ``g`` key/value heads, MLP
width ``I``), per layer: MLP ``6 S H I``, and

- full attention: Q ``2 S H h d`` (twice that with an output gate: Qwen3.5), K and V
  ``4 S H g d``, output ``2 S h d H``, attention ``4 P h d`` with ``P = S (S + 1) / 2`` query-key
  pairs under the causal mask (``S^2`` with ``causal=False``, what a dense kernel computes and what
  ``torch.utils.flop_counter`` reports);
- Gated DeltaNet linear attention (Qwen3.5; ``k`` key heads and ``v`` value heads of widths
  ``a`` and ``b``, conv kernel ``K``, chunks of ``c`` tokens): projections
  ``2 S H (2 k a + 2 v b + 2 v)`` in and ``2 S v b H`` out, the causal depthwise conv
  ``2 S K (2 k a + v b)``, and the chunked delta rule on ``S'`` tokens (``S`` rounded up to whole
  chunks), per value head ``S' (4 c a + 2 c (a + b) + 2 c b + 6 a b)``: the in-chunk key-key and
  query-key products, the UT transform applied to keys and values, the in-chunk attention on the
  new values, and the three products with the running state. Linear in ``S``.

The LM head is left out (prefill needs the last position's logits only). Stock models encode ``N``
patches into ``N / m^2`` LLM tokens; APT encodes its selected patches into ``llm_tokens``
(docs/contract.md, section 5).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .architectures import Architecture, MLPKind


def _attention_pairs(arch: Architecture, patches: int, windows: Sequence[int] | None) -> int:
    """Query-key pairs summed over the vision blocks."""
    full_blocks = arch.vision_depth
    windowed = 0
    if arch.window_size:
        full_blocks = sum(1 for block in arch.fullatt_blocks if block < arch.vision_depth)
        if full_blocks < arch.vision_depth:
            if windows is None:
                raise ValueError(f"{arch.name} attends within windows: give the rows of every window")
            if sum(windows) != patches:
                raise ValueError(f"the windows hold {sum(windows)} rows, not {patches}")
            windowed = (arch.vision_depth - full_blocks) * sum(rows * rows for rows in windows)
    return full_blocks * patches * patches + windowed


def merger_flops(arch: Architecture, llm_tokens: int) -> int:
    """FLOPs of one patch merger (the final one, or one deepstack merger) emitting ``llm_tokens``.

    Args:
        arch: Model sizes.
        llm_tokens: Tokens out of the merger.

    Returns:
        ``2 L (m^2 D)^2 + 2 L (m^2 D) H``.
    """
    merged = arch.merge_size**2 * arch.vision_embed_dim
    return 2 * llm_tokens * merged * merged + 2 * llm_tokens * merged * arch.hidden_size


def vision_flops(arch: Architecture, patches: int, llm_tokens: int, windows: Sequence[int] | None = None) -> int:
    """FLOPs of the vision encoder on one image.

    Args:
        arch: Model sizes.
        patches: Rows the vision blocks see (N stock, the selected cells with APT).
        llm_tokens: Tokens out of the merger (N / m^2 stock, ``llm_tokens`` with APT).
        windows: Rows of every attention window (:mod:`apt_viz.core.windows`); needed when
            ``arch`` has windowed blocks, ignored otherwise.

    Returns:
        Matrix-product FLOPs: patch embedding, every block, the merger and the deepstack mergers.

    Raises:
        ValueError: windows missing for a windowed architecture, or not summing to ``patches``.
    """
    n, d = patches, arch.vision_embed_dim
    patch_pixels = arch.in_channels * arch.temporal_patch_size * arch.patch_size**2
    embed = 2 * n * patch_pixels * d
    mlp_matrices = 3 if arch.vision_mlp is MLPKind.GATED else 2
    linear = 6 * n * d * d + 2 * n * d * d + 2 * mlp_matrices * n * d * arch.vision_mlp_dim
    attention = 4 * d * _attention_pairs(arch, n, windows)
    mergers = 1 + sum(1 for block in arch.deepstack_blocks if block < arch.vision_depth)
    return embed + arch.vision_depth * linear + attention + mergers * merger_flops(arch, llm_tokens)


def full_attention_flops(arch: Architecture, tokens: int, causal: bool = True) -> int:
    """FLOPs of one full-attention layer's attention part (projections and scores) on ``tokens``."""
    s, h, width = tokens, arch.hidden_size, arch.num_heads * arch.head_dim
    kv = arch.num_kv_heads * arch.head_dim
    pairs = s * (s + 1) // 2 if causal else s * s
    query = 2 * s * h * width * (2 if arch.attention_output_gate else 1)
    return query + 4 * s * h * kv + 2 * s * width * h + 4 * pairs * width


def linear_attention_flops(arch: Architecture, tokens: int) -> int:
    """FLOPs of one Gated DeltaNet layer's token mixer on ``tokens`` (projections, conv, chunked delta rule)."""
    s, h = tokens, arch.hidden_size
    a, b, c = arch.linear_key_head_dim, arch.linear_value_head_dim, arch.linear_chunk_size
    keys, values, heads = arch.linear_num_key_heads * a, arch.linear_num_value_heads * b, arch.linear_num_value_heads
    projections = 2 * s * h * (2 * keys + 2 * values + 2 * heads) + 2 * s * values * h
    conv = 2 * s * arch.linear_conv_kernel * (2 * keys + values)
    padded = -(-s // c) * c
    chunked = heads * padded * (4 * c * a + 2 * c * (a + b) + 2 * c * b + 6 * a * b)
    return projections + conv + chunked


def prefill_flops(arch: Architecture, tokens: int, causal: bool = True) -> int:
    """FLOPs of the LLM prefill of one prompt.

    Args:
        arch: Model sizes.
        tokens: Prompt length S (text and image tokens).
        causal: Count the S (S + 1) / 2 query-key pairs under the causal mask (True) or all S^2.

    Returns:
        Matrix-product FLOPs of the decoder layers (full or linear attention, and the MLP).
    """
    mlp = 6 * tokens * arch.hidden_size * arch.intermediate_size
    total = 0
    for kind in arch.layer_kinds:
        mixer = full_attention_flops(arch, tokens, causal) if kind == "full" else linear_attention_flops(arch, tokens)
        total += mixer + mlp
    return total


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
    windows: Sequence[int] | None = None,
    base_windows: Sequence[int] | None = None,
) -> FlopsEstimate:
    """Stock and APT FLOPs of one image, from its token counts (:class:`~apt_viz.core.accounting.TokenStats`).

    Args:
        arch: Model sizes.
        vision_tokens: Vision patches after APT.
        base_tokens: N, vision patches without APT.
        llm_tokens: LLM tokens after APT.
        baseline_llm_tokens: LLM tokens without APT.
        text_tokens: Other tokens of the prompt (0: the image's tokens alone).
        windows: APT rows per attention window (windowed architectures only:
            :func:`apt_viz.core.windows.window_rows`).
        base_windows: Stock rows per attention window (windowed architectures only:
            :func:`apt_viz.core.windows.stock_window_rows`).

    Returns:
        The estimate.
    """
    return FlopsEstimate(
        architecture=arch.name,
        vision_flops=vision_flops(arch, vision_tokens, llm_tokens, windows),
        baseline_vision_flops=vision_flops(arch, base_tokens, baseline_llm_tokens, base_windows),
        prefill_flops=prefill_flops(arch, llm_tokens + text_tokens),
        baseline_prefill_flops=prefill_flops(arch, baseline_llm_tokens + text_tokens),
        text_tokens=text_tokens,
    )
