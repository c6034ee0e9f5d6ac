"""The output table of a local ``stats`` run: committed parts while it runs, one Parquet file at the end.

The writer is :class:`apt_viz.batch.parts.PartsTable` (committed parts, atomic merge, ``--resume``,
a lock; its docstring gives the guarantees after a kill). Rows are keyed by (path, setting); a
table can be resumed only with the image settings (and ``--save-masks``) it was written with,
which its Parquet metadata records.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .. import __version__
from ..batch.parts import PartsTable, TableError
from .rows import arrow_schema
from .settings import StatsPlan

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

METADATA_KEY = b"apt_viz.stats"
TABLE_FORMAT = 1

Key = tuple[str, str]  # (path, setting)
StatsTableError = TableError  # the output cannot be written as asked (a usage error: exit 2)


def table_metadata(plan: StatsPlan) -> dict[str, str]:
    """The Parquet key-value metadata of a table.

    Args:
        plan: The run.

    Returns:
        ``{"apt_viz.stats": JSON}`` with the table format, apt-viz version, image settings and
        ``save_masks`` and ``fidelity`` (what ``--resume`` checks).
    """
    document = {
        "format": TABLE_FORMAT,
        "apt_viz_version": __version__,
        "image_settings": plan.image_settings(),
        "save_masks": plan.save_masks,
        "fidelity": plan.fidelity,
    }
    return {METADATA_KEY.decode(): json.dumps(document, sort_keys=True)}


class StatsTable(PartsTable):
    """The single writer of a ``stats`` table, rows keyed by (path, setting).

    Args:
        output: The Parquet file to produce.
        plan: What the run computes (schema and image settings).
        resume: Keep the rows of ``output`` and of an interrupted run's parts, and add to them.
        row_group_size: Rows per committed part (and row group of ``output``).
        flush_seconds: Also commit when the oldest uncommitted row is this old.

    Raises:
        StatsTableError: the output is not writable as asked (a folder, an interrupted run
            without ``--resume``, a table of other image settings, another run writing it).
    """

    key_columns = ("path", "setting")
    writer = "apt-viz stats"

    def __init__(self, output: str, plan: StatsPlan, *, resume: bool = False, row_group_size: int = 4096,
                 flush_seconds: float = 60.0) -> None:
        self.metadata = table_metadata(plan)
        super().__init__(output, arrow_schema(plan, self.metadata), resume=resume, row_group_size=row_group_size,
                         flush_seconds=flush_seconds)

    def check_compatible(self, source: str, schema: pa.Schema) -> None:
        """Only a ``stats`` table of the same image settings, ``--save-masks`` and columns can be added to."""
        found = json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}"))
        ours = json.loads(self.metadata[METADATA_KEY.decode()])
        if found.get("format") != TABLE_FORMAT:
            raise StatsTableError(f"{source}: not a table written by apt-viz stats; cannot --resume it")
        differ = [
            f"{name} {found['image_settings'].get(name)} (now {value})"
            for name, value in ours["image_settings"].items()
            if found["image_settings"].get(name) != value
        ]
        if found.get("save_masks") != ours["save_masks"]:
            differ.append(f"--save-masks {'on' if found.get('save_masks') else 'off'}")
        if bool(found.get("fidelity")) != ours["fidelity"]:
            differ.append(f"--fidelity {'on' if found.get('fidelity') else 'off'}")
        if differ:
            raise StatsTableError(
                f"{source} was written with other image settings: {', '.join(differ)}; "
                f"use the same settings to --resume, or another --output"
            )
        super().check_compatible(source, schema)
