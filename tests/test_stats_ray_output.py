"""The Ray engine's writer (no Ray needed): one Parquet file, whole or not at all, local or behind a URI."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apt_viz.core.config import APTConfig, Method
from apt_viz.stats.ray_engine import check_output, write_table
from apt_viz.stats.rows import arrow_schema, error_row
from apt_viz.stats.settings import StatsPlan, settings_of
from apt_viz.stats.table import StatsTableError, table_metadata

PLAN = StatsPlan(APTConfig(), settings_of(Method.BUDGET, [0.3, 0.5], [], 3))
SCHEMA = arrow_schema(PLAN, table_metadata(PLAN))


def pieces(names: list[str], fail_after: int | None = None):
    """One table per name (its error rows, one per setting), raising after ``fail_after`` pieces."""
    for i, name in enumerate(names):
        if i == fail_after:
            raise RuntimeError("the cluster went away")
        yield pa.Table.from_pylist([error_row(name, f"{name}: not a readable image", setting, PLAN)
                                    for setting in PLAN.settings], schema=SCHEMA)


@pytest.mark.parametrize("remote", [False, True])
def test_one_file_in_row_groups_with_the_local_schema(tmp_path, remote):
    target = tmp_path / "out" / "t.parquet"
    report = write_table(pieces(["a", "b", "c", "d", "e"]), target.as_uri() if remote else str(target), SCHEMA, 4)
    assert (report.inputs, report.failed, report.internal_errors, report.rows) == (5, 5, 0, 10)
    parquet = pq.ParquetFile(target)
    assert parquet.schema_arrow.equals(SCHEMA, check_metadata=True)
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == [4, 4, 2]
    assert [row["path"] for row in parquet.read().to_pylist()] == [name for name in "abcde" for _ in range(2)]
    assert sorted(p.name for p in target.parent.iterdir()) == ["t.parquet"]


@pytest.mark.parametrize("remote", [False, True])
def test_a_failed_run_leaves_the_old_table_and_no_temporary_file(tmp_path, remote):
    target = tmp_path / "t.parquet"
    write_table(pieces(["old"]), str(target), SCHEMA, 4)
    with pytest.raises(RuntimeError, match="went away"):
        write_table(pieces(["a", "b", "c"], fail_after=2), target.as_uri() if remote else str(target), SCHEMA, 1)
    assert [row["path"] for row in pq.read_table(target).to_pylist()] == ["old", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_an_empty_run_writes_an_empty_table(tmp_path):
    report = write_table(iter(()), str(tmp_path / "t.parquet"), SCHEMA, 4)
    assert report.rows == 0 and pq.read_table(tmp_path / "t.parquet").schema.equals(SCHEMA, check_metadata=True)


def test_outputs_that_cannot_be_one_file(tmp_path):
    with pytest.raises(StatsTableError, match="is a folder"):
        check_output(str(tmp_path))
    with pytest.raises(StatsTableError, match="cannot write there"):
        check_output("nosuchscheme://bucket/t.parquet")
