"""A Parquet table written by one process in committed parts, merged atomically at the end (``--resume``).

Why parts: a Parquet file is readable only once its footer is written, so a process killed while
appending to one leaves nothing usable. Instead the single writer commits its buffered rows (every
``row_group_size`` rows, or every ``flush_seconds``) as one small Parquet file,

    OUT.partial/part-000000.parquet, part-000001.parquet, ...

each written to a temporary name, fsynced and renamed: a part exists completely or not at all,
and its existence is the commit (no separate manifest that could disagree with it). When the
run ends (or stops on Ctrl-C / SIGTERM) the parts are streamed, row group by row group, into a
temporary file beside OUT that is fsynced and renamed over OUT; then OUT.partial is removed.
So OUT is never half-written, and after a kill (even SIGKILL, at any instant):

- the rows of committed parts are kept, the rows in memory are lost and will be recomputed;
- ``--resume`` reads OUT (if any) and the parts, skips every key (the :attr:`PartsTable.key_columns`
  of a row, e.g. (path, setting)) that has a row without error, recomputes the rest, and merges.
  Where one key has several rows (an error row retried later, or parts that were already merged
  into OUT when the kill came between the rename and the clean-up) the latest wins: OUT, then the
  parts in commit order. Hence no duplicate and no lost row.

A lock (``flock`` on OUT.partial/.lock, released by the kernel when the process dies) keeps two
runs from writing the same table. ``apt-viz stats`` (:class:`apt_viz.stats.table.StatsTable`) and
``apt-viz eval`` (:class:`apt_viz.eval.table.EvalTable`) write their tables through it; each says
what its rows are keyed by and which tables it may add to (:meth:`PartsTable.check_compatible`).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self

from ..atomic import TEMP_SUFFIX, atomic_open

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

PARTIAL_SUFFIX = ".partial"
PART_PREFIX = "part-"

Row = dict[str, Any]
Key = tuple[Any, ...]


class TableError(ValueError):
    """The output cannot be written as asked (a usage error: exit 2)."""


def partial_folder(output: str) -> str:
    """Where a run keeps its committed parts until they are merged into ``output``."""
    return output + PARTIAL_SUFFIX


class PartsTable:
    """The single writer of a run's table (see the module docstring for the layout and guarantees).

    Args:
        output: The Parquet file to produce.
        schema: Its Arrow schema, with the key-value metadata that :meth:`check_compatible` reads.
        resume: Keep the rows of ``output`` and of an interrupted run's parts, and add to them.
        row_group_size: Rows per committed part (and row group of ``output``).
        flush_seconds: Also commit when the oldest uncommitted row is this old.

    Raises:
        TableError: the output is not writable as asked (a folder, an interrupted run without
            ``--resume``, a table :meth:`check_compatible` refuses, another run writing it).
    """

    key_columns: tuple[str, ...] = ("path", "setting")  # what identifies a row (with an ``error`` column)
    writer: str = "apt-viz"  # the command, in messages

    def __init__(self, output: str, schema: pa.Schema, *, resume: bool = False, row_group_size: int = 4096,
                 flush_seconds: float = 60.0) -> None:
        import pyarrow  # noqa: F401 - fail here, before any work, when pyarrow is missing

        self.output = os.fspath(output)
        self.partial = partial_folder(self.output)
        self.schema = schema
        self.row_group_size = row_group_size
        self.flush_seconds = flush_seconds
        self.resumed = resume
        self._rows: list[Row] = []
        self._oldest: float | None = None
        self._lock_fd: int | None = None
        self._next_part = 0
        # key -> (source index, row has no error); sources are OUT (0) then the parts in commit
        # order. Kept only when resuming: a fresh run writes every key once.
        self._latest: dict[Key, tuple[int, bool]] | None = {} if resume else None
        self.existing_rows = 0
        if os.path.isdir(self.output):
            raise TableError(f"--output {self.output}: is a folder; give the Parquet file to write")
        self._open_partial()
        if resume:
            self._scan_existing()

    def check_compatible(self, source: str, schema: pa.Schema) -> None:
        """Refuse (:class:`TableError`, one line) to add to ``source``, whose schema is ``schema``, when its
        rows are not of this run's kind; by default its columns must be this table's."""
        if not schema.remove_metadata().equals(self.schema.remove_metadata()):
            raise TableError(f"{source}: its columns differ from this version's; write a new table")

    # --- what is already there ---------------------------------------------------------------------

    def done(self) -> set[Key]:
        """Keys that already have a row without error (empty unless resuming)."""
        if self._latest is None:
            return set()
        return {key for key, (_, ok) in self._latest.items() if ok}

    def _key(self, row: Row) -> Key:
        return tuple(row[name] for name in self.key_columns)

    def _open_partial(self) -> None:
        parts = self._parts()
        if parts and not self.resumed:
            raise TableError(
                f"{self.partial} holds {len(parts)} committed part(s) of an interrupted run: rerun with --resume "
                f"to complete it, or remove that folder to start over"
            )
        os.makedirs(self.partial, exist_ok=True)
        fd = os.open(os.path.join(self.partial, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TableError(f"{self.output}: another {self.writer} run is writing this table") from None
        self._lock_fd = fd
        for name in os.listdir(self.partial):  # temporary files of a write cut short by a kill
            if name.endswith(TEMP_SUFFIX):
                os.unlink(os.path.join(self.partial, name))
        parts = self._parts()
        self._next_part = (int(parts[-1][len(PART_PREFIX):-len(".parquet")]) + 1) if parts else 0

    def _parts(self) -> list[str]:
        """Committed part files, in commit order."""
        if not os.path.isdir(self.partial):
            return []
        return sorted(name for name in os.listdir(self.partial)
                      if name.startswith(PART_PREFIX) and name.endswith(".parquet"))

    def _sources(self) -> list[str]:
        """The files a merge reads, oldest first: OUT (when resuming and it exists), then the committed parts."""
        existing = [self.output] if self.resumed and os.path.isfile(self.output) else []
        return existing + [os.path.join(self.partial, name) for name in self._parts()]

    def _scan_existing(self) -> None:
        import pyarrow.parquet as pq

        columns = [*self.key_columns, "error"]
        for index, source in enumerate(self._sources()):
            try:
                parquet = pq.ParquetFile(source)
            except Exception as exc:  # any reader error: not a table this run can add to
                raise TableError(f"{source}: not a readable Parquet table ({exc}); cannot --resume it") from None
            self.check_compatible(source, parquet.schema_arrow)
            for batch in parquet.iter_batches(columns=columns):
                values = [batch.column(i).to_pylist() for i in range(len(columns))]
                for *key, error in zip(*values):
                    self._latest[tuple(key)] = (index, error is None)  # type: ignore[index]
                    self.existing_rows += 1

    # --- writing ---------------------------------------------------------------------------------------

    def add(self, rows: Sequence[Row]) -> None:
        """Buffer ``rows``; commit a part when enough rows (or time) have gathered."""
        if not rows:
            return
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._rows.extend(rows)
        if len(self._rows) >= self.row_group_size or time.monotonic() - self._oldest >= self.flush_seconds:
            self.commit()

    def commit(self) -> None:
        """Write the buffered rows as the next part (atomically); from then on a kill keeps them."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        name = f"{PART_PREFIX}{self._next_part:06d}.parquet"
        with atomic_open(os.path.join(self.partial, name), "wb") as handle:
            pq.write_table(table, handle)
        if self._latest is not None:
            index = len(self._sources()) - 1
            for row in self._rows:
                self._latest[self._key(row)] = (index, row["error"] is None)
        self._next_part += 1
        self._rows = []
        self._oldest = None

    def finish(self) -> int:
        """Commit, merge everything into the output file atomically, remove the parts; returns the row count."""
        import pyarrow.parquet as pq

        self.commit()
        sources = self._sources()
        rows = 0
        with atomic_open(self.output, "wb") as handle, pq.ParquetWriter(handle, self.schema) as writer:
            for index, source in enumerate(sources):
                for table in self._kept_row_groups(index, source):
                    writer.write_table(table)
                    rows += table.num_rows
            if not sources:
                writer.write_table(self.schema.empty_table())
        shutil.rmtree(self.partial, ignore_errors=True)
        self.close()
        return rows

    def _kept_row_groups(self, index: int, source: str) -> Iterator[pa.Table]:
        """The row groups of ``source`` without the rows a later source replaces."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(source)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group).replace_schema_metadata(self.schema.metadata)
            if self._latest is not None:
                keys = zip(*(table.column(name).to_pylist() for name in self.key_columns))
                keep = pa.array([self._latest[key][0] == index for key in keys], type=pa.bool_())
                table = table.filter(keep)
            if table.num_rows:
                yield table

    def close(self) -> None:
        """Release the lock (the parts stay for ``--resume`` unless :meth:`finish` removed them)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def abandon(self) -> None:
        """Release the lock and, when no part was committed, remove OUT.partial: a run that stopped before its
        first row (its model did not load) leaves nothing behind."""
        parts = self._parts()
        self.close()
        if not parts:
            shutil.rmtree(self.partial, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
