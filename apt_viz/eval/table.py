"""The eval table: one Parquet row per (example, setting), written in committed parts (``--resume``).

The writer is :class:`apt_viz.batch.parts.PartsTable`, as for ``apt-viz stats``: rows are
committed after every batch, a kill keeps them, and ``--resume`` adds the missing (example,
setting) rows (error rows are retried) and merges, with no duplicate. A table is resumed only with
the same checkpoint, dtype, ``--max-new-tokens`` and data, which its Parquet metadata records.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..batch.parts import PartsTable, Row, TableError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from .data import Example
    from .runner import Pass
    from .settings import EvalSetting

METADATA_KEY = b"apt_viz.eval"
TABLE_FORMAT = 1
EvalTableError = TableError  # the output cannot be written as asked (a usage error: exit 2)

# Column -> (arrow type, meaning). docs/eval.md lists them.
COLUMNS: dict[str, tuple[str, str]] = {
    "example": ("int64", "the example's position in DATA (0-based)"),
    "image": ("string", "the image as written in DATA (a folder's: relative to it)"),
    "prompt": ("string", "the prompt as given"),
    "setting": ("string", "stock, an APT setting (budget alpha=0.3), or a baseline (uniform_equal_llm @ budget "
                "alpha=0.3)"),
    "method": ("string", "the APT setting's method (also on its baselines); null for stock"),
    "alpha": ("float64", "the APT setting's alpha (also on its baselines); null for stock and v1"),
    "baseline": ("string", "uniform_equal_llm, uniform_equal_vision or random_equal_vision; null otherwise"),
    "vision_tokens": ("int32", "rows the vision tower saw"),
    "llm_tokens": ("int32", "image tokens in the prompt"),
    "prefill_ms": ("float64", "vision encoder + LLM prefill, ms per example (a batch's time over its examples)"),
    "first_token_kl": ("float64", "KL(stock || setting) of the next-token distribution after the prompt (nats)"),
    "top1_agree": ("bool", "the same most likely first token as stock"),
    "answer": ("string", "the greedy answer"),
    "stock_answer": ("string", "the stock model's greedy answer"),
    "answer_agree": ("bool", "answer == stock_answer"),
    "gold": ("string", "the given answer, or null"),
    "correct": ("bool", "normalized exact match or containment of gold; null without gold"),
    "error": ("string", "why the example failed under this setting (null when fine); the numbers are null then"),
}
_TYPES = {"string": "string", "int64": "int64", "int32": "int32", "float64": "float64", "bool": "bool_"}


def arrow_schema(metadata: dict[str, str] | None = None) -> pa.Schema:
    """The Arrow schema of an eval table (:data:`COLUMNS`) with ``metadata``."""
    import pyarrow as pa

    return pa.schema([pa.field(name, getattr(pa, _TYPES[kind])()) for name, (kind, _) in COLUMNS.items()],
                     metadata=metadata)


def table_metadata(run: dict[str, Any]) -> dict[str, str]:
    """``{"apt_viz.eval": JSON}``: the table format, apt-viz version and ``run`` (what ``--resume`` checks)."""
    document = {"format": TABLE_FORMAT, "apt_viz_version": __version__, "run": run}
    return {METADATA_KEY.decode(): json.dumps(document, sort_keys=True)}


class EvalTable(PartsTable):
    """The single writer of an eval table, rows keyed by (example, setting).

    Args:
        output: The Parquet file to produce.
        run: What must match for ``--resume`` (checkpoint, dtype, generation, data fingerprint).
        resume: Keep the rows of ``output`` and of an interrupted run's parts, and add to them.

    Raises:
        EvalTableError: the output is not writable as asked.
    """

    key_columns = ("example", "setting")
    writer = "apt-viz eval"

    def __init__(self, output: str, run: dict[str, Any], *, resume: bool = False) -> None:
        self.metadata = table_metadata(run)
        # Rows are committed by the run after every batch: a size or age limit is never what commits.
        super().__init__(output, arrow_schema(self.metadata), resume=resume, row_group_size=1 << 30,
                         flush_seconds=float("inf"))

    def check_compatible(self, source: str, schema: pa.Schema) -> None:
        """Only an eval table of the same run settings and data can be added to."""
        found = json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}"))
        if found.get("format") != TABLE_FORMAT:
            raise EvalTableError(f"{source}: not a table written by apt-viz eval; cannot --resume it")
        ours = json.loads(self.metadata[METADATA_KEY.decode()])["run"]
        differ = [f"{name} {found['run'].get(name)!r} (now {value!r})" for name, value in ours.items()
                  if found["run"].get(name) != value]
        if differ:
            raise EvalTableError(f"{source} was written by another run: {', '.join(differ)}; use the same model, "
                                 "data and settings to --resume, or another --output")
        super().check_compatible(source, schema)


def result_row(example: Example, setting: EvalSetting, tokens: tuple[int, int], result: Pass, stock: Pass) -> Row:
    """The row of one example under one setting that ran.

    Args:
        example: The example.
        setting: The setting.
        tokens: (vision_tokens, llm_tokens) of its inputs.
        result: What the setting gave.
        stock: What the stock model gave (the reference).

    Returns:
        The row, keyed by column name.
    """
    from .metrics import first_token_kl, is_correct, top1_agree

    return {
        **_identity(example, setting),
        "vision_tokens": tokens[0],
        "llm_tokens": tokens[1],
        "prefill_ms": result.prefill_ms,
        "first_token_kl": first_token_kl(stock.logits, result.logits),
        "top1_agree": top1_agree(stock.logits, result.logits),
        "answer": result.answer,
        "stock_answer": stock.answer,
        "answer_agree": result.answer == stock.answer,
        "correct": is_correct(result.answer, example.gold),
        "error": None,
    }


def error_row(example: Example, setting: EvalSetting, error: str, stock: Pass | None = None) -> Row:
    """The row of an example that failed under ``setting`` (``error``: one line); the numbers are null."""
    row: Row = {name: None for name in COLUMNS}
    row.update(_identity(example, setting))
    row.update(stock_answer=None if stock is None else stock.answer, error=error)
    return row


def _identity(example: Example, setting: EvalSetting) -> Row:
    return {
        "example": example.index,
        "image": example.image,
        "prompt": example.prompt,
        "setting": setting.label,
        "method": setting.method,
        "alpha": setting.alpha,
        "baseline": None if setting.baseline is None else str(setting.baseline),
        "gold": example.gold,
    }
