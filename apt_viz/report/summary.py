"""What a run reports: the run document (summary.json / ``--json``), summary.csv rows, closing lines.

Everything here works on the per-image records (:func:`apt_viz.report.records.stats_record`), so
results from worker processes and from earlier runs (``--skip-existing``) are reported the same
way. No I/O: callers print or write what these functions return.
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .. import __version__
from .._text import format_number, format_percent, format_setting
from .csv_text import csv_text
from .records import FIDELITY_COLUMNS, SCHEMA_VERSION, StatsRecord, fidelity_columns

FailureKind = Literal["input", "internal"]


@dataclass(frozen=True)
class Failure:
    """An input that could not be processed, with the one-line reason.

    ``kind`` is ``input`` for an unusable input (unreadable, refused size, unwritable output) and
    ``internal`` for an unexpected error, i.e. a bug in apt-viz.
    """

    input: str
    error: str
    kind: FailureKind = "input"


def selection_setting(stats: Mapping[str, Any]) -> str:
    """:func:`apt_viz._text.format_setting` of a record."""
    return format_setting(stats["method"], stats["alpha"], stats.get("thresholds"))


def scale_sizes_of(stats_list: Sequence[StatsRecord]) -> list[int]:
    """Every patch size that occurs in the runs, smallest first."""
    return sorted({int(size) for stats in stats_list for size in stats["tokens_per_scale"]})


def retention_summary(stats_list: Sequence[StatsRecord]) -> dict[str, float] | None:
    """Mean / min / max of the retention (tokens / N) over the images; None without images."""
    values = [stats["retention"] for stats in stats_list]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def run_document(
    stats_list: Sequence[StatsRecord],
    failures: Sequence[Failure],
    config: Mapping[str, Any],
    *,
    skipped: int = 0,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The machine-readable result of a run: ``summary.json`` and the ``--json`` output.

    ``images`` holds each image's full ``stats.json`` content, ``failures`` one entry per input
    that failed, ``summary`` the counts and the retention / LLM-token totals.
    """
    llm = sum(stats["llm_tokens"] for stats in stats_list)
    llm_baseline = sum(stats["baseline_llm_tokens"] for stats in stats_list)
    tokens = sum(stats["vision_tokens"] for stats in stats_list)
    base = sum(stats["base_tokens"] for stats in stats_list)
    return {
        "schema_version": SCHEMA_VERSION,
        "apt_viz_version": __version__,
        "config": dict(config),
        "summary": {
            "images": len(stats_list),
            "failed": len(failures),
            "skipped_existing": skipped,
            "interrupted": interrupted,
            "retention": retention_summary(stats_list),
            "vision_tokens": tokens,
            "base_tokens": base,
            "llm_tokens": llm,
            "baseline_llm_tokens": llm_baseline,
            "overall_retention": tokens / base if base else None,
            "overall_llm_retention": llm / llm_baseline if llm_baseline else None,
            "fidelity": fidelity_summary(stats_list),
        },
        "images": list(stats_list),
        "failures": [asdict(failure) for failure in failures],
    }


def fidelity_summary(stats_list: Sequence[StatsRecord]) -> dict[str, dict[str, float | int | None]] | None:
    """Per flat fidelity column (:data:`~apt_viz.report.records.FIDELITY_COLUMNS`): ``mean``, ``min``,
    ``max`` over the images that have a value and their count ``images`` (an exact image has no PSNR);
    None when no image has a ``fidelity`` block."""
    flat = [fidelity_columns(stats["fidelity"]) for stats in stats_list if "fidelity" in stats]
    if not flat:
        return None
    out: dict[str, dict[str, float | int | None]] = {}
    for column in FIDELITY_COLUMNS:
        values = [value for row in flat if (value := row[column]) is not None]
        out[column] = {"mean": statistics.fmean(values) if values else None, "min": min(values, default=None),
                       "max": max(values, default=None), "images": len(values)}
    return out


def sweep_document(
    method: str,
    rows: Sequence[Mapping[str, Any]],
    image_rows: Sequence[Mapping[str, Any]],
    failures: Sequence[Failure],
    config: Mapping[str, Any],
    *,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The machine-readable result of a sweep: the ``sweep --json`` output.

    Args:
        method: The swept selection method.
        rows: One per value: the rows of ``sweep_<method>.csv``, the same dicts.
        image_rows: One per image and value: the rows of ``sweep_<method>_per_image.csv``.
        failures: The inputs that failed.
        config: The settings shared by every value.
        interrupted: Stopped by Ctrl-C / SIGTERM (nothing was aggregated then).

    Returns:
        The document; ``rows`` and ``per_image`` hold exactly the CSV files' values (an empty CSV
        cell is null).
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "apt_viz_version": __version__,
        "method": method,
        "config": dict(config),
        "interrupted": interrupted,
        "rows": [dict(row) for row in rows],
        "per_image": [dict(row) for row in image_rows],
        "failures": [asdict(failure) for failure in failures],
    }


def csv_rows(stats_list: Sequence[StatsRecord], failures: Sequence[Failure]) -> list[dict[str, Any]]:
    """One flat row per input (failures too, with ``status`` = failed and the error); with fidelity
    the flat columns of the stats table (``psnr``, ``ssim``, ..., ``random_ssim``) at the end."""
    sizes = scale_sizes_of(stats_list)
    fidelity = any("fidelity" in stats for stats in stats_list)  # its columns, empty for an image without
    rows = []
    for stats in stats_list:
        row: dict[str, Any] = {
            "name": stats.get("name"),
            "input": stats["input"],
            "status": "ok",
            "error": "",
            "method": stats["method"],
            "alpha": stats["alpha"],
            "thresholds": " ".join(format_number(t) for t in stats.get("thresholds") or []),
            "original_width": stats["original_size"]["width"],
            "original_height": stats["original_size"]["height"],
            "resized_width": stats["resized_size"]["width"],
            "resized_height": stats["resized_size"]["height"],
        }
        row.update({f"tokens_{size}": stats["tokens_per_scale"].get(str(size), 0) for size in sizes})
        row.update(
            {
                "vision_tokens": stats["vision_tokens"],
                "base_tokens": stats["base_tokens"],
                "retention": stats["retention"],
                "target_retention": stats["target_retention"],
                "llm_tokens": stats["llm_tokens"],
                "baseline_llm_tokens": stats["baseline_llm_tokens"],
                "llm_retention": stats["llm_retention"],
            }
        )
        if fidelity:
            row.update(fidelity_columns(stats.get("fidelity")))
        rows.append(row)
    rows.extend({"input": failure.input, "status": "failed", "error": failure.error} for failure in failures)
    return rows


def summary_csv(stats_list: Sequence[StatsRecord], failures: Sequence[Failure]) -> str:
    """``summary.csv``: :func:`csv_rows` with a header (columns of the first successful row)."""
    rows = csv_rows(stats_list, failures)
    return csv_text(list(rows[0]) if stats_list else ["input", "status", "error"], rows)


def summary_lines(document: Mapping[str, Any]) -> list[str]:
    """Closing lines of a multi-image run: counts and retention mean/min/max (failures are listed apart)."""
    summary = document["summary"]
    lines = [f"{summary['images']} image(s) done, {summary['failed']} failed"
             + (f", {summary['skipped_existing']} already done (skipped)" if summary["skipped_existing"] else "")
             + (" - interrupted, the rest was not started" if summary["interrupted"] else "")]
    retention = summary["retention"]
    if retention is not None:
        lines.append(
            f"retention mean {retention['mean']:.1%}, min {retention['min']:.1%}, max {retention['max']:.1%}; "
            f"LLM tokens {summary['llm_tokens']} / {summary['baseline_llm_tokens']} "
            f"({format_percent(summary['overall_llm_retention'])})"
        )
    return lines
