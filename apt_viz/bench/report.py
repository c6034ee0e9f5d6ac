"""``bench.json`` and ``bench.csv`` of a finished run, and the three files written atomically."""
from __future__ import annotations

import io
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import write_bytes, write_json, write_text
from ..report.csv_text import csv_text
from .plot import bench_figure
from .settings import RANDOM_WEIGHTS_NOTE, BenchResult, Timing

FILES = ("bench.json", "bench.csv", "bench.png")


def bench_document(result: BenchResult) -> dict[str, Any]:
    """The content of ``bench.json``.

    Args:
        result: A finished run.

    Returns:
        Model, weights, machine, settings, image sizes and every row (all run times, speedups).
    """
    rows = []
    for row in result.rows:
        entry: dict[str, Any] = {
            "batch_size": row.batch_size, "alpha": row.alpha, "setting": row.setting,
            "vision_tokens": row.vision_tokens, "llm_tokens": row.llm_tokens, "prompt_tokens": row.prompt_tokens,
            "vision_flops": row.vision_flops, "prefill_flops": row.prefill_flops,
            "vision_peak_mb": row.vision_peak_mb, "prefill_peak_mb": row.prefill_peak_mb,
        }
        for name in ("processor", "encoder", "vision", "prefill"):
            timing = getattr(row, name)
            entry[name] = None if timing is None else timing.to_dict()
        entry["speedup"] = result.speedups(row)
        rows.append(entry)
    return {
        "apt_viz_version": __version__,
        "model": result.model,
        "weights": "none (analytic)" if result.flops_only else (
            RANDOM_WEIGHTS_NOTE if result.random_weights else "checkpoint"
        ),
        "architecture": result.architecture.to_dict(),
        "device": result.device,
        "dtype": result.dtype,
        "attention": result.attention,
        "flops_only": result.flops_only,
        "settings": asdict(result.settings),
        "images": result.images,
        "rows": rows,
    }


CSV_COLUMNS = (
    "batch_size", "setting", "alpha", "vision_tokens", "llm_tokens", "prompt_tokens",
    "processor_ms", "encoder_ms", "vision_ms", "vision_q1_ms", "vision_q3_ms", "vision_speedup",
    "prefill_ms", "prefill_q1_ms", "prefill_q3_ms", "prefill_speedup",
    "vision_peak_mb", "prefill_peak_mb", "vision_gflops", "prefill_gflops", "vision_flops_speedup",
    "prefill_flops_speedup",
)


def bench_csv(result: BenchResult) -> str:
    """``bench.csv``: one row per batch size and setting (medians; quartiles of the totals).

    Args:
        result: A finished run.

    Returns:
        CSV text (the one CSV writer of :mod:`apt_viz.report.csv_text`).
    """

    def median(timing: Timing | None) -> float | None:
        return None if timing is None else round(timing.median_ms, 3)

    def quartile(timing: Timing | None, index: int) -> float | None:
        return None if timing is None else round(timing.quartiles_ms[index], 3)

    lines = []
    for row in result.rows:
        speedup = result.speedups(row)
        lines.append({
            "batch_size": row.batch_size, "setting": row.setting, "alpha": row.alpha,
            "vision_tokens": row.vision_tokens, "llm_tokens": row.llm_tokens, "prompt_tokens": row.prompt_tokens,
            "processor_ms": median(row.processor), "encoder_ms": median(row.encoder), "vision_ms": median(row.vision),
            "vision_q1_ms": quartile(row.vision, 0), "vision_q3_ms": quartile(row.vision, 1),
            "vision_speedup": _round(speedup["vision"]), "prefill_ms": median(row.prefill),
            "prefill_q1_ms": quartile(row.prefill, 0), "prefill_q3_ms": quartile(row.prefill, 1),
            "prefill_speedup": _round(speedup["prefill"]), "vision_peak_mb": _round(row.vision_peak_mb),
            "prefill_peak_mb": _round(row.prefill_peak_mb), "vision_gflops": round(row.vision_flops / 1e9, 3),
            "prefill_gflops": round(row.prefill_flops / 1e9, 3),
            "vision_flops_speedup": _round(speedup["vision_flops"]),
            "prefill_flops_speedup": _round(speedup["prefill_flops"]),
        })
    return csv_text(CSV_COLUMNS, lines)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def write_bench(result: BenchResult, output: str | os.PathLike) -> list[str]:
    """Write ``bench.json``, ``bench.csv`` and ``bench.png`` into ``output`` (atomically).

    Args:
        result: A finished run.
        output: The output folder (created when missing).

    Returns:
        The three paths.
    """
    folder = Path(output)
    paths = [str(folder / name) for name in FILES]
    write_json(paths[0], bench_document(result))
    write_text(paths[1], bench_csv(result))
    buffer = io.BytesIO()
    bench_figure(result).savefig(buffer, format="png")
    write_bytes(paths[2], buffer.getvalue())
    return paths

