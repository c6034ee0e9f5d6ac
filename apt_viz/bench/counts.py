"""Token counts and analytic FLOPs of a bench row (:mod:`apt_viz.core.flops`), and ``--flops-only``."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from PIL import Image

from ..core.architectures import Architecture
from ..core.flops import prefill_flops, vision_flops
from ..core.windows import mask_cells, stock_window_rows, window_rows
from ..imaging import pil_to_tensor
from .settings import BenchRow, BenchSettings

Windows = list[int] | None  # rows per attention window of one image (None: the architecture has none)


def stock_windows(arch: Architecture, grids: Sequence[tuple[int, int]]) -> list[Windows]:
    """Rows per attention window of each image's stock rows (None without windows).

    Args:
        arch: Model sizes.
        grids: Each image's base grid (rows, cols).

    Returns:
        One entry per image.
    """
    return [stock_window_rows(grid, arch.window_cells) if arch.window_size else None for grid in grids]


def apt_windows(arch: Architecture, apt: Mapping[str, torch.Tensor], grids: Sequence[tuple[int, int]]) -> list[Windows]:
    """Rows per attention window of each image's APT rows (None without windows).

    Args:
        arch: Model sizes.
        apt: The ``apt_*`` inputs of a batch (positions, sizes, rows per image).
        grids: Each image's base grid (rows, cols).

    Returns:
        One entry per image.
    """
    if not arch.window_size:
        return [None] * len(grids)
    counts = apt["apt_num_tokens"].tolist()
    positions = apt["apt_patch_positions"].cpu().split(counts)
    sides = (apt["apt_patch_sizes"].cpu() // arch.patch_size).split(counts)
    return [window_rows(p, s, grid, arch.window_cells) for p, s, grid in zip(positions, sides, grids)]


def counted_row(
    arch: Architecture,
    alpha: float | None,
    tokens: Sequence[int],
    llm_tokens: Sequence[int],
    text: int,
    windows: Sequence[Windows],
) -> BenchRow:
    """A row's token counts and analytic FLOPs.

    Args:
        arch: Model sizes.
        alpha: The APT setting, None for stock.
        tokens: Vision-encoder rows of each image.
        llm_tokens: LLM tokens of each image.
        text: Other tokens of each prompt.
        windows: Rows per attention window of each image (entries None without windows).

    Returns:
        A row without timings.
    """
    return BenchRow(
        batch_size=len(tokens), alpha=alpha, vision_tokens=sum(tokens), llm_tokens=sum(llm_tokens),
        prompt_tokens=sum(llm_tokens) + text * len(tokens),
        vision_flops=sum(vision_flops(arch, n, llm, rows) for n, llm, rows in zip(tokens, llm_tokens, windows)),
        prefill_flops=sum(prefill_flops(arch, llm + text) for llm in llm_tokens),
    )


def count_batch(arch: Architecture, images: Sequence[Image.Image], settings: BenchSettings) -> list[BenchRow]:
    """``--flops-only``: token counts from the selection (CPU) and the cost model; nothing is timed.

    Args:
        arch: Model sizes (its patch and merge sizes set the selection's).
        images: The batch's images, smart-resized.
        settings: Alphas, method and scorer.

    Returns:
        Rows with counts and FLOPs only, stock first.
    """
    from ..core.pipeline import run_apt

    text = settings.question_tokens + 2
    pixels = [pil_to_tensor(image) for image in images]
    grids = [(p.shape[-2] // arch.patch_size, p.shape[-1] // arch.patch_size) for p in pixels]
    base = [rows * cols for rows, cols in grids]
    llm = [n // arch.merge_size**2 for n in base]
    rows = [counted_row(arch, None, base, llm, text, stock_windows(arch, grids))]
    for alpha in settings.alphas:
        config = settings.config(alpha, arch.patch_size, arch.merge_size)
        results = [run_apt(p, config) for p in pixels]
        stats = [result.stats[0] for result in results]
        windows: list[Windows] = [None] * len(grids)
        if arch.window_size:
            cells = [mask_cells(result.selection.masks) for result in results]
            windows = [window_rows(p, s, grid, arch.window_cells) for (p, s), grid in zip(cells, grids)]
        tokens, llm_tokens = [s.vision_tokens for s in stats], [s.llm_tokens for s in stats]
        rows.append(counted_row(arch, alpha, tokens, llm_tokens, text, windows))
    return rows
