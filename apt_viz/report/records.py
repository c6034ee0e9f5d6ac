"""The per-image record: the content of ``stats.json`` (docs/stats_schema.md).

Every report (tables, summaries, CSV, ``index.html``, ``apt-viz stats``) reads these records, so
results from worker processes and from earlier runs (``--skip-existing``) are reported the same
way as fresh ones.

Schema history (docs/stats_schema.md has the changelog): version 3 (apt-viz 0.3) uses one name per
quantity: ``tokens`` became ``vision_tokens``, the ``qwen2vl`` block's LLM counts moved to the top
level (``llm_ratio`` became ``llm_retention``; its ``vision_*`` copies are gone), and the ``flops``
keys are named as the Parquet columns. Version 2 (apt-viz 0.2) gave ``base_tokens`` one meaning, N.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, TypedDict

from .. import __version__
from ..core.architectures import ARCHITECTURES
from ..core.families import family_spec
from ..core.flops import image_flops
from ..core.grids import grid_shape
from ..core.windows import mask_cells, stock_window_rows, window_rows

if TYPE_CHECKING:  # pragma: no cover
    from ..analysis import ImageAnalysis

SCHEMA_VERSION = 3


class SizeRecord(TypedDict):
    width: int
    height: int


class FlopsRecord(TypedDict):
    """Analytic FLOPs of the image on its model family's architecture (apt_viz.core.flops), stock against APT."""

    architecture: str
    text_tokens: int
    vision_flops: int
    baseline_vision_flops: int
    vision_flops_ratio: float
    prefill_flops: int
    baseline_prefill_flops: int
    prefill_flops_ratio: float


class _RequiredStats(TypedDict):
    schema_version: int
    input: Optional[str]
    original_size: SizeRecord
    resized_size: SizeRecord
    grid_sizes: dict[str, dict[str, int]]
    scorer: str
    backend: str
    method: str
    alpha: Optional[float]
    thresholds: Optional[list[Optional[float]]]
    tokens_per_scale: dict[str, int]
    vision_tokens: int
    base_tokens: int
    retention: float
    target_retention: Optional[float]
    llm_tokens: int
    baseline_llm_tokens: int
    llm_retention: float
    budget_info: Optional[dict[str, Any]]
    flops: Optional[FlopsRecord]  # null when the FLOPs model lacks the model family's architecture
    config: dict[str, Any]
    apt_viz_version: str


class StatsRecord(_RequiredStats, total=False):
    """One image's ``stats.json``; ``name`` and ``artifacts`` are added by a folder run, ``fidelity``
    when it was measured (``run --fidelity``, the default)."""

    name: str
    artifacts: list[str]
    fidelity: dict[str, dict[str, Any]]  # apt_viz.fidelity.Fidelity.to_dict()


# The flat fidelity columns of summary.csv and of the stats Parquet table: column -> (view, metric).
FIDELITY_COLUMNS: dict[str, tuple[str, str]] = {
    "psnr": ("apt", "psnr"),
    "ssim": ("apt", "ssim"),
    "psnr_detail": ("apt", "psnr_detail"),
    "uniform_vision_psnr": ("uniform_equal_vision", "psnr"),
    "uniform_vision_ssim": ("uniform_equal_vision", "ssim"),
    "uniform_llm_psnr": ("uniform_equal_llm", "psnr"),
    "uniform_llm_ssim": ("uniform_equal_llm", "ssim"),
    "random_psnr": ("random_equal_vision", "psnr"),
    "random_ssim": ("random_equal_vision", "ssim"),
}


def fidelity_columns(fidelity: Mapping[str, Mapping[str, Any]] | None) -> dict[str, float | None]:
    """The flat :data:`FIDELITY_COLUMNS` of a record's ``fidelity`` block (all None without one)."""
    return {column: None if fidelity is None else fidelity[view][metric]
            for column, (view, metric) in FIDELITY_COLUMNS.items()}


class CompareRecord(TypedDict):
    """One image of ``apt-viz compare``: its sheet and the record of every panel, in sheet order."""

    name: str  # the output folder, named as by ``run``
    input: str
    sheet: str  # path of the sheet relative to the output folder, with "/"
    panels: list[StatsRecord]  # each with ``name``
    skipped: list[str]  # settings that could not run (budget alpha > 1), one line each


def size_record(height: int, width: int) -> SizeRecord:
    return {"width": width, "height": height}


def stats_record(analysis: ImageAnalysis, fidelity: dict[str, dict[str, Any]] | None = None) -> StatsRecord:
    """The ``stats.json`` content of an analysis.

    Args:
        analysis: One image's analysis.
        fidelity: Its ``fidelity`` block (:meth:`apt_viz.fidelity.Fidelity.to_dict`), if measured.

    Returns:
        The record of docs/stats_schema.md, without ``name`` and ``artifacts`` (a folder run adds
        them); ``fidelity`` only when given.
    """
    height, width = analysis.resized_hw
    stats = analysis.stats
    info = analysis.budget_info
    record: StatsRecord = {
        "schema_version": SCHEMA_VERSION,
        "input": analysis.source,
        "original_size": size_record(*analysis.original_hw),
        "resized_size": size_record(height, width),
        "grid_sizes": {
            str(size): {"rows": rows, "cols": cols}
            for size in analysis.config.patch_sizes
            for rows, cols in [grid_shape(height, width, size)]
        },
        "scorer": str(analysis.config.scorer),
        "backend": str(analysis.config.backend),
        "method": str(analysis.selection.method),
        "alpha": analysis.selection.alpha,
        "thresholds": analysis.thresholds,
        "tokens_per_scale": {str(size): n for size, n in stats.tokens_per_scale.items()},
        "vision_tokens": stats.vision_tokens,
        "base_tokens": stats.base_tokens,
        "retention": stats.retention,
        "target_retention": analysis.target_retention,
        "llm_tokens": stats.llm_tokens,
        "baseline_llm_tokens": stats.baseline_llm_tokens,
        "llm_retention": stats.llm_retention,
        "budget_info": None if info is None else info.to_dict(),
        "flops": flops_record(analysis),
        "config": analysis.config.to_dict(),
        "apt_viz_version": __version__,
    }
    if fidelity is not None:
        record["fidelity"] = fidelity
    return record


def flops_record(analysis: ImageAnalysis, architecture: str | None = None) -> FlopsRecord | None:
    """Vision-encoder and LLM-prefill FLOPs of the image alone (no text), stock against APT.

    Args:
        analysis: One image's analysis (its token counts).
        architecture: An architecture of :data:`apt_viz.core.architectures.ARCHITECTURES`
            (default: the model family's default architecture).

    Returns:
        The ``flops`` block of ``stats.json``; None when the FLOPs model lacks the family's default
        architecture (never a count on another family's shapes).
    """
    if architecture is None:
        architecture = family_spec(analysis.config.model_family).default_architecture
        if architecture not in ARCHITECTURES:
            return None
    arch, stats = ARCHITECTURES[architecture], analysis.stats
    windows = base_windows = None
    if arch.window_size:  # Qwen2.5-VL: attention cost depends on how the rows fall into windows
        grid = grid_shape(*analysis.resized_hw, min(analysis.masks))
        windows = window_rows(*mask_cells(analysis.selection.masks), grid, arch.window_cells)
        base_windows = stock_window_rows(grid, arch.window_cells)
    estimate = image_flops(
        arch, stats.vision_tokens, stats.base_tokens, stats.llm_tokens, stats.baseline_llm_tokens,
        windows=windows, base_windows=base_windows,
    )
    return estimate.to_dict()  # type: ignore[return-value]
