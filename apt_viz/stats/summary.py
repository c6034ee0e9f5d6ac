"""The end of a ``stats`` run: per-setting percentiles read back from the table, a rich table, a plot.

The summary is computed from the written table (streamed, a few columns at a time), so it covers
every row, those of an earlier run that ``--resume`` completed included.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from matplotlib.figure import Figure
    from rich.table import Table

PERCENTILES = (5, 25, 50, 75, 95)
MAX_FAILURES_LISTED = 20
SUMMARY_COLUMNS = ["path", "setting", "error", "retention", "llm_tokens", "baseline_llm_tokens", "vision_flops",
                   "baseline_vision_flops"]
METRICS = ("retention", "llm_tokens", "baseline_llm_tokens", "vision_flops", "baseline_vision_flops")


@dataclass(frozen=True)
class Distribution:
    """Mean and percentiles (linear interpolation) of a metric over the images of a setting."""

    mean: float
    percentiles: dict[int, float]  # {5: ..., 25: ..., 50: ..., 75: ..., 95: ...}

    @staticmethod
    def of(values: np.ndarray) -> Distribution | None:
        import numpy as np

        if values.size == 0:
            return None
        points = np.percentile(values, PERCENTILES)
        return Distribution(float(values.mean()), {p: float(v) for p, v in zip(PERCENTILES, points)})

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, **{f"p{p}": v for p, v in self.percentiles.items()}}


@dataclass(frozen=True)
class SettingSummary:
    """One selection setting over the table's images."""

    setting: str
    images: int  # rows without error
    failed: int  # rows with an error
    retention: Distribution | None  # tokens / N
    llm_tokens: Distribution | None
    llm_savings: Distribution | None  # 1 - llm_tokens / baseline_llm_tokens
    vision_flops_savings: Distribution | None  # 1 - vision_flops / baseline_vision_flops
    savings: np.ndarray = field(repr=False)  # LLM-token savings per image, for the histogram

    def to_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting, "images": self.images, "failed": self.failed,
            **{name: None if value is None else value.to_dict()
               for name, value in (("retention", self.retention), ("llm_tokens", self.llm_tokens),
                                   ("llm_savings", self.llm_savings),
                                   ("vision_flops_savings", self.vision_flops_savings))},
        }


@dataclass(frozen=True)
class TableSummary:
    """What a table holds: per-setting distributions and the inputs that failed."""

    rows: int
    settings: list[SettingSummary]
    failed_inputs: int  # distinct paths with an error row
    failures: list[tuple[str, str]]  # (path, error), the first MAX_FAILURES_LISTED

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "settings": [summary.to_dict() for summary in self.settings],
            "failed_inputs": self.failed_inputs,
            "failures": [{"input": path, "error": error} for path, error in self.failures],
        }


def summarise(table: str, order: Sequence[str] = ()) -> TableSummary:
    """Read the summary columns of ``table`` (a Parquet file or URI) and summarise them per setting.

    Args:
        table: The table written by ``apt-viz stats``.
        order: Settings to list first, in this order (the command line's); others follow sorted.

    Returns:
        The :class:`TableSummary`.
    """
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    chunks: dict[str, dict[str, list[np.ndarray]]] = {}
    failed: dict[str, int] = {}
    failed_paths: set[str] = set()
    failures: list[tuple[str, str]] = []
    rows = 0
    for batch in ds.dataset(os.fspath(table), format="parquet").to_batches(columns=SUMMARY_COLUMNS):
        rows += batch.num_rows
        errors = batch.column("error")
        ok = pc.is_null(errors)
        bad = batch.filter(pc.invert(ok))
        for path, setting, error in zip(*(bad.column(name).to_pylist() for name in ("path", "setting", "error"))):
            failed[setting] = failed.get(setting, 0) + 1
            if path not in failed_paths:
                failed_paths.add(path)
                if len(failures) < MAX_FAILURES_LISTED:
                    failures.append((path, error))
        good = batch.filter(ok)
        settings = good.column("setting").to_numpy(zero_copy_only=False)
        metrics = {name: good.column(name).to_numpy(zero_copy_only=False).astype(np.float64) for name in METRICS}
        for setting in np.unique(settings):
            where = settings == setting
            per = chunks.setdefault(str(setting), {name: [] for name in metrics})
            for name, values in metrics.items():
                per[name].append(values[where])
    names = [name for name in order if name in chunks or name in failed]
    names += sorted((set(chunks) | set(failed)) - set(names))
    summaries = []
    for name in names:
        values = {metric: np.concatenate(parts) if parts else np.empty(0)
                  for metric, parts in chunks.get(name, {}).items()}
        retention = values.get("retention", np.empty(0))
        llm = values.get("llm_tokens", np.empty(0))
        savings = 1.0 - llm / values["baseline_llm_tokens"] if llm.size else np.empty(0)
        flops = 1.0 - values["vision_flops"] / values["baseline_vision_flops"] if llm.size else np.empty(0)
        flops = flops[~np.isnan(flops)]  # null FLOPs: no architecture of the model family in the FLOPs model
        summaries.append(SettingSummary(name, int(retention.size), failed.get(name, 0), Distribution.of(retention),
                                        Distribution.of(llm), Distribution.of(savings), Distribution.of(flops),
                                        savings))
    return TableSummary(rows, summaries, len(failed_paths), failures)


def summary_table(summary: TableSummary) -> Table:
    """The rich table printed at the end of a run.

    Args:
        summary: :func:`summarise` of the table.

    Returns:
        One line per setting: images, failures, retention and LLM-token percentiles, savings.
    """
    from rich.table import Table

    table = Table(title="APT over the dataset (per setting; p5 / median / p95)", title_justify="left",
                  header_style="bold")
    table.add_column("setting")
    table.add_column("images", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("retention mean", justify="right")
    table.add_column("retention p5 / p50 / p95", justify="right")
    table.add_column("LLM tokens p5 / p50 / p95", justify="right")
    table.add_column("LLM tokens saved mean", justify="right")
    table.add_column("vision FLOPs saved mean", justify="right")
    for entry in summary.settings:
        table.add_row(
            entry.setting, str(entry.images), str(entry.failed),
            "-" if entry.retention is None else f"{entry.retention.mean:.1%}",
            _spread(entry.retention, "{:.1%}"), _spread(entry.llm_tokens, "{:.0f}"),
            "-" if entry.llm_savings is None else f"{entry.llm_savings.mean:.1%}",
            "-" if entry.vision_flops_savings is None else f"{entry.vision_flops_savings.mean:.1%}",
        )
    return table


def _spread(distribution: Distribution | None, form: str) -> str:
    if distribution is None:
        return "-"
    return " / ".join(form.format(distribution.percentiles[p]) for p in (5, 50, 95))


def savings_figure(summary: TableSummary, title: str = "") -> Figure | None:
    """Histogram of the LLM tokens saved per image (1 - llm_tokens / baseline), one outline per setting.

    Args:
        summary: :func:`summarise` of the table.
        title: The figure's title (default: the number of images).

    Returns:
        The figure, or None when no setting has a successful image.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    from matplotlib.figure import Figure

    drawn = [entry for entry in summary.settings if entry.savings.size]
    if not drawn:
        return None
    figure = Figure(figsize=(6.4, 3.6), dpi=110, layout="constrained")
    axis = figure.subplots()
    low = min(0.0, min(float(entry.savings.min()) for entry in drawn))
    edges = np.linspace(low * 100, 100, 41)
    for entry in drawn:
        axis.hist(entry.savings * 100, bins=edges.tolist(), histtype="step", linewidth=1.5,
                  label=f"{entry.setting} (mean {entry.llm_savings.mean:.0%})" if entry.llm_savings else entry.setting)
    axis.set_xlabel("Qwen2-VL LLM tokens saved per image (%)")
    axis.set_ylabel("images")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize="small", loc="best")
    images = max(entry.images for entry in drawn)
    axis.set_title(title or f"LLM-token savings over {images} image{'s' if images != 1 else ''}", fontsize="medium")
    return figure


def plot_path(output: str) -> str:
    """Where the savings histogram of ``output`` goes: ``stats.parquet`` -> ``stats.savings.png``."""
    stem = output[: -len(".parquet")] if output.endswith(".parquet") else output
    return stem.rstrip("/") + ".savings.png"
