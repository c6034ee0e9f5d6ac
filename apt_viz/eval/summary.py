"""The end of an eval run: one summary per setting, read back from the written table.

Read from the table, so it covers every row, those an earlier run wrote and ``--resume`` completed
included. Per setting: examples (rows without error) and failures; the mean ``first_token_kl``;
top-1 and answer agreement with stock; accuracy against gold (over the rows that have one); the
mean vision and LLM tokens and prefill time. Printed as a rich table and written as JSON.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .._text import format_percent

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table


@dataclass(frozen=True)
class SettingSummary:
    """One setting over the table's examples (means over its rows without error; None: no such row)."""

    setting: str
    baseline: str | None
    examples: int
    failed: int
    first_token_kl: float | None
    top1_agreement: float | None
    answer_agreement: float | None
    accuracy: float | None  # over the rows with gold
    with_gold: int
    vision_tokens: float | None
    llm_tokens: float | None
    prefill_ms: float | None


def summarise(table: str | os.PathLike, order: Sequence[str] = ()) -> list[SettingSummary]:
    """Summaries per setting of an eval table.

    Args:
        table: The Parquet file ``apt-viz eval`` wrote.
        order: Settings to list first, in this order (the run's); others follow sorted.

    Returns:
        One :class:`SettingSummary` per setting in the table.
    """
    import pyarrow.parquet as pq

    columns = ["setting", "baseline", "error", "first_token_kl", "top1_agree", "answer_agree", "correct",
               "vision_tokens", "llm_tokens", "prefill_ms"]
    rows = pq.read_table(os.fspath(table), columns=columns).to_pylist()
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_setting.setdefault(row["setting"], []).append(row)
    names = [name for name in order if name in by_setting]
    names += sorted(set(by_setting) - set(names))
    return [_summary(name, by_setting[name]) for name in names]


def _summary(name: str, rows: list[dict[str, Any]]) -> SettingSummary:
    good = [row for row in rows if row["error"] is None]
    graded = [row["correct"] for row in good if row["correct"] is not None]

    def mean(values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return SettingSummary(
        setting=name,
        baseline=rows[0]["baseline"],
        examples=len(good),
        failed=len(rows) - len(good),
        first_token_kl=mean([row["first_token_kl"] for row in good]),
        top1_agreement=mean([float(row["top1_agree"]) for row in good]),
        answer_agreement=mean([float(row["answer_agree"]) for row in good]),
        accuracy=mean([float(value) for value in graded]),
        with_gold=len(graded),
        vision_tokens=mean([row["vision_tokens"] for row in good]),
        llm_tokens=mean([row["llm_tokens"] for row in good]),
        prefill_ms=mean([row["prefill_ms"] for row in good]),
    )


def summary_document(summaries: Sequence[SettingSummary], **context: Any) -> dict[str, Any]:
    """``summary.json``: ``context`` (table, model, data, ...) and ``settings``, one object per setting."""
    return {**context, "settings": [asdict(summary) for summary in summaries]}


def summary_table(summaries: Sequence[SettingSummary]) -> Table:
    """The rich table printed at the end of a run: one line per setting."""
    from rich.table import Table

    table = Table(title="apt-viz eval: each setting against the stock model (means over examples)",
                  title_justify="left", header_style="bold")
    for title in ("setting", "examples", "failed", "first-token KL", "top-1 agree", "answer agree", "accuracy",
                  "vision tokens", "LLM tokens", "prefill ms"):
        table.add_column(title, justify="left" if title == "setting" else "right")
    for entry in summaries:
        table.add_row(
            entry.setting, str(entry.examples), str(entry.failed),
            "-" if entry.first_token_kl is None else f"{entry.first_token_kl:.3g}",
            format_percent(entry.top1_agreement), format_percent(entry.answer_agreement),
            "-" if entry.accuracy is None else f"{entry.accuracy:.1%} of {entry.with_gold}",
            _decimal(entry.vision_tokens), _decimal(entry.llm_tokens), _decimal(entry.prefill_ms),
            style="dim" if entry.baseline else None,
        )
    return table


def _decimal(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def output_paths(output: str) -> dict[str, str]:
    """Where a run's summary and page go beside its table: ``results.parquet`` -> ``results.summary.json``,
    ``results.html``."""
    stem = output[: -len(".parquet")] if output.endswith(".parquet") else output
    return {"summary": f"{stem}.summary.json", "html": f"{stem}.html"}
