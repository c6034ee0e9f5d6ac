"""What a run reports: table rows, the run document (summary.json / ``--json``), summary.csv, rich tables.

Everything here works on the per-image ``stats.json`` dicts (:meth:`ImageAnalysis.to_dict` plus
``name``), so results from worker processes and from earlier runs (``--skip-existing``) are
reported the same way. No I/O: callers print or write what these functions return.
"""
from __future__ import annotations

import csv
import io
import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from . import __version__

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

Stats = Mapping[str, Any]
MAX_TABLE_ROWS = 50  # larger runs: the first rows, then a pointer to summary.csv


@dataclass(frozen=True)
class Failure:
    """An input that could not be processed, with the one-line reason."""

    input: str
    error: str


def format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def format_percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def setting_text(stats: Stats) -> str:
    """The selection setting in a few characters: ``alpha 0.3``, ``t 3, 2`` or ``alpha 1 (t 6.74, 7.36)``."""
    thresholds = ", ".join(format_number(t) for t in stats.get("thresholds") or [])
    if stats["method"] == "v1":
        return f"t {thresholds}"
    text = f"alpha {format_number(stats['alpha'])}"
    return f"{text} (t {thresholds})" if stats["method"] == "v2" else text


def scale_sizes_of(stats_list: Sequence[Stats]) -> list[int]:
    """Every patch size that occurs in the runs, smallest first."""
    return sorted({int(size) for stats in stats_list for size in stats["tokens_per_scale"]})


def retention_summary(stats_list: Sequence[Stats]) -> dict[str, float] | None:
    """Mean / min / max of the retention (tokens / N) over the images; None without images."""
    values = [stats["retention"] for stats in stats_list]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def run_document(
    stats_list: Sequence[Stats],
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
    llm = sum(stats["qwen2vl"]["llm_tokens"] for stats in stats_list)
    llm_baseline = sum(stats["qwen2vl"]["baseline_llm_tokens"] for stats in stats_list)
    tokens = sum(stats["tokens"] for stats in stats_list)
    base = sum(stats["base_tokens"] for stats in stats_list)
    return {
        "apt_viz_version": __version__,
        "config": dict(config),
        "summary": {
            "images": len(stats_list),
            "failed": len(failures),
            "skipped_existing": skipped,
            "interrupted": interrupted,
            "retention": retention_summary(stats_list),
            "tokens": tokens,
            "base_tokens": base,
            "llm_tokens": llm,
            "baseline_llm_tokens": llm_baseline,
            "overall_retention": tokens / base if base else None,
            "overall_llm_ratio": llm / llm_baseline if llm_baseline else None,
        },
        "images": list(stats_list),
        "failures": [asdict(failure) for failure in failures],
    }


def csv_rows(stats_list: Sequence[Stats], failures: Sequence[Failure]) -> list[dict[str, Any]]:
    """One flat row per input (failures too, with ``status`` = failed and the error)."""
    sizes = scale_sizes_of(stats_list)
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
                "tokens": stats["tokens"],
                "base_tokens": stats["base_tokens"],
                "retention": stats["retention"],
                "target_retention": stats["target_retention"],
                "llm_tokens": stats["qwen2vl"]["llm_tokens"],
                "baseline_llm_tokens": stats["qwen2vl"]["baseline_llm_tokens"],
                "llm_ratio": stats["qwen2vl"]["llm_ratio"],
            }
        )
        rows.append(row)
    rows.extend({"input": failure.input, "status": "failed", "error": failure.error} for failure in failures)
    return rows


def summary_csv(stats_list: Sequence[Stats], failures: Sequence[Failure]) -> str:
    """``summary.csv``: :func:`csv_rows` with a header (columns of the first successful row)."""
    rows = csv_rows(stats_list, failures)
    columns: list[str] = list(rows[0]) if stats_list else ["input", "status", "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def results_table(stats_list: Sequence[Stats], max_rows: int = MAX_TABLE_ROWS) -> "Table":
    """The rich table of a run: per image method, setting, target vs. actual retention, tokens."""
    from rich.table import Table

    sizes = scale_sizes_of(stats_list)
    table = Table(title="APT patch selection", title_justify="left", header_style="bold")
    table.add_column("image", overflow="fold")
    table.add_column("method")
    table.add_column("alpha / thresholds")
    table.add_column("target retention", justify="right")
    table.add_column("actual retention", justify="right")
    table.add_column("tokens " + "/".join(str(size) for size in sizes) + " px", justify="right")
    table.add_column("tokens / N", justify="right")
    table.add_column("Qwen2-VL LLM tokens", justify="right")
    for stats in stats_list[:max_rows]:
        qwen = stats["qwen2vl"]
        table.add_row(
            str(stats.get("name") or stats["input"]),
            stats["method"],
            setting_text(stats),
            format_percent(stats["target_retention"]),
            format_percent(stats["retention"]),
            " / ".join(str(stats["tokens_per_scale"].get(str(size), 0)) for size in sizes),
            f"{stats['tokens']} / {stats['base_tokens']}",
            f"{qwen['llm_tokens']} / {qwen['baseline_llm_tokens']} ({qwen['llm_ratio']:.1%})",
        )
    if len(stats_list) > max_rows:
        table.caption = f"first {max_rows} of {len(stats_list)} images; all of them are in summary.csv"
    return table


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
            f"({format_percent(summary['overall_llm_ratio'])})"
        )
    return lines
