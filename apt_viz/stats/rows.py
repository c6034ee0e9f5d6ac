"""The rows of a ``stats`` table: one per (input, setting), flattened from the ``stats.json`` record.

Every number is read from :func:`apt_viz.report.records.stats_record` of the image's analysis, so
a row holds exactly what ``apt-viz run --stats-only`` writes for the same file and settings.
A failed input gets one row per setting with the reason in ``error`` and nulls for the numbers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .settings import Setting, StatsPlan

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from ..report.records import StatsRecord

Row = dict[str, Any]

# Column -> (arrow type name, meaning). tokens_<size> columns follow base_tokens, one per scale.
COLUMNS: dict[str, tuple[str, str]] = {
    "path": ("string", "the input as given (a folder's files: folder/relative path)"),
    "setting": ("string", "the selection setting, e.g. 'budget alpha=0.3' or 'v1 thresholds=3,2'"),
    "error": ("string", "why the input failed (null when fine); the numbers are null then"),
    "width": ("int32", "original width (EXIF orientation applied)"),
    "height": ("int32", "original height"),
    "resized_width": ("int32", "width after smart_resize: what Qwen2-VL sees"),
    "resized_height": ("int32", "height after smart_resize"),
    "scorer": ("string", "importance scorer"),
    "backend": ("string", "resize backend"),
    "method": ("string", "v1, v2 or budget"),
    "alpha": ("float64", "v2 / budget alpha (null for v1)"),
    "thresholds": ("list<float64>", "v1: the thresholds; v2: the effective per-image ones (28 px first)"),
    "base_tokens": ("int32", "N: base patches without APT"),
    "vision_tokens": ("int32", "vision-encoder patches after APT"),
    "retention": ("float64", "vision_tokens / N"),
    "target_retention": ("float64", "budget: round(alpha * N) / N (null otherwise)"),
    "llm_tokens": ("int32", "Qwen2-VL LLM tokens after the 2x2 merger"),
    "baseline_llm_tokens": ("int32", "N / 4: LLM tokens without APT"),
    "llm_retention": ("float64", "llm_tokens / baseline_llm_tokens"),
    "budget": ("int32", "budget: the target round(alpha * N) (null otherwise)"),
    "clamped": ("bool", "budget: the target was below the forced minimum (null otherwise)"),
    "vision_flops": ("int64", "analytic FLOPs of the vision encoder on the APT tokens (apt_viz.core.flops)"),
    "baseline_vision_flops": ("int64", "the same without APT (all N base patches)"),
    "prefill_flops": ("int64", "analytic FLOPs of the LLM prefill of the image's APT tokens"),
    "baseline_prefill_flops": ("int64", "the same without APT (N / 4 LLM tokens)"),
    "flops_architecture": ("string", "the model family's architecture of the FLOPs, e.g. qwen2-vl-2b (the FLOPs "
                           "columns are null when the FLOPs model lacks it)"),
    # --fidelity (docs/fidelity.md): stats.json's fidelity block, flat; null without --fidelity
    "psnr": ("float64", "PSNR (dB) of APT's reconstruction against the full resized image (null: exact)"),
    "ssim": ("float64", "SSIM of APT's reconstruction"),
    "psnr_detail": ("float64", "PSNR of APT over the 25% most detailed base cells"),
    "uniform_vision_psnr": ("float64", "PSNR of the stock processor at max_pixels matched on APT's vision tokens"),
    "uniform_vision_ssim": ("float64", "SSIM of that uniform baseline"),
    "uniform_llm_psnr": ("float64", "PSNR of the stock processor at max_pixels matched on APT's LLM tokens"),
    "uniform_llm_ssim": ("float64", "SSIM of that uniform baseline"),
    "random_psnr": ("float64", "PSNR of the budget on seeded random maps at APT's vision tokens (--seed)"),
    "random_ssim": ("float64", "SSIM of that random baseline"),
}
MASKS_COLUMN = ("binary", "--save-masks: the selection, encoded (apt_viz.decode_masks)")


def column_names(patch_sizes: Sequence[int], save_masks: bool = False) -> list[str]:
    """Every column of a table, in order.

    Args:
        patch_sizes: The cell sizes of the run (one ``tokens_<size>`` column each).
        save_masks: Whether the table has the ``masks`` column.

    Returns:
        The column names.
    """
    names = list(COLUMNS)
    at = names.index("base_tokens") + 1
    names[at:at] = [f"tokens_{size}" for size in patch_sizes]
    return [*names, "masks"] if save_masks else names


def arrow_schema(plan: StatsPlan, metadata: dict[str, str] | None = None) -> pa.Schema:
    """The Arrow schema of a table.

    Args:
        plan: The run (patch sizes, ``--save-masks``).
        metadata: Schema key-value metadata (see :func:`apt_viz.stats.table.table_metadata`).

    Returns:
        The schema: :data:`COLUMNS` with a ``tokens_<size>`` column per scale (and ``masks``).
    """
    import pyarrow as pa

    types = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(),
             "bool": pa.bool_(), "binary": pa.binary(),
             "list<float64>": pa.list_(pa.field("element", pa.float64()))}  # the item name Parquet gives lists
    kinds = {name: kind for name, (kind, _) in COLUMNS.items()}
    kinds.update({f"tokens_{size}": "int32" for size in plan.patch_sizes})
    kinds["masks"] = MASKS_COLUMN[0]
    fields = [pa.field(name, types[kinds[name]]) for name in column_names(plan.patch_sizes, plan.save_masks)]
    return pa.schema(fields, metadata=metadata)


def record_row(record: StatsRecord, setting: Setting, masks: bytes | None = None) -> Row:
    """The row of one image under one setting, read from its ``stats.json`` record.

    Args:
        record: :func:`apt_viz.report.records.stats_record` of the image's analysis under ``setting``.
        setting: The selection setting (its label is the ``setting`` column).
        masks: The encoded selection (``--save-masks``), or None.

    Returns:
        The row, keyed by column name.
    """
    info = record["budget_info"]
    row: Row = {
        "path": record["input"],
        "setting": setting.label,
        "error": None,
        "width": record["original_size"]["width"],
        "height": record["original_size"]["height"],
        "resized_width": record["resized_size"]["width"],
        "resized_height": record["resized_size"]["height"],
        "scorer": record["scorer"],
        "backend": record["backend"],
        "method": record["method"],
        "alpha": record["alpha"],
        "thresholds": record["thresholds"],
        "base_tokens": record["base_tokens"],
    }
    row.update({f"tokens_{size}": count for size, count in record["tokens_per_scale"].items()})
    row.update({
        "vision_tokens": record["vision_tokens"],
        "retention": record["retention"],
        "target_retention": record["target_retention"],
        "llm_tokens": record["llm_tokens"],
        "baseline_llm_tokens": record["baseline_llm_tokens"],
        "llm_retention": record["llm_retention"],
        "budget": None if info is None else info["budget"],
        "clamped": None if info is None else info["clamped"],
    })
    flops: Mapping[str, Any] = record["flops"] or {}  # null: the FLOPs model lacks the family's architecture
    row.update({
        "vision_flops": flops.get("vision_flops"),
        "baseline_vision_flops": flops.get("baseline_vision_flops"),
        "prefill_flops": flops.get("prefill_flops"),
        "baseline_prefill_flops": flops.get("baseline_prefill_flops"),
        "flops_architecture": flops.get("architecture"),
    })
    from ..report.records import fidelity_columns

    row.update(fidelity_columns(record.get("fidelity")))
    if masks is not None:
        row["masks"] = masks
    return row


def error_row(path: str, error: str, setting: Setting, plan: StatsPlan,
              original_hw: tuple[int, int] | None = None) -> Row:
    """The row of an input that failed: what is known (setting, original size) and the reason.

    Args:
        path: The input.
        error: The one-line reason.
        setting: The setting of the row.
        plan: The run (scorer and backend).
        original_hw: The original (H, W) when the image could be loaded.

    Returns:
        The row; the columns it does not name are null.
    """
    config = plan.config
    return {
        "path": path,
        "setting": setting.label,
        "error": error,
        "width": None if original_hw is None else original_hw[1],
        "height": None if original_hw is None else original_hw[0],
        "scorer": str(config.scorer),
        "backend": str(config.backend),
        "method": str(setting.method),
        "alpha": setting.alpha,
        "thresholds": list(setting.thresholds) if setting.thresholds is not None else None,
    }
