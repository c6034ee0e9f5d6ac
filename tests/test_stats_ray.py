"""``apt-viz stats --engine ray`` on a local Ray with 2 CPUs gives the local engine's table, in the same shape.

One Ray run: Ray's start-up takes seconds, so everything is checked on it. A cluster started
separately (``ray start --head``, token authentication) is tested in test_stats_ray_cluster.py.
"""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from apt_viz.cli import app, route
from apt_viz.stats import read_masks

from helpers import PHOTO_PATHS

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'apt-viz[ray]')")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # Ray's own


def rows(table):
    return sorted(pq.read_table(table).to_pylist(), key=lambda row: (row["path"], row["setting"]))


def test_ray_engine_equals_the_local_engine(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("coffee", "rocket", "chelsea"):
        shutil.copy(PHOTO_PATHS[name], folder / f"{name}.jpg")
    (folder / "broken.jpg").write_text("not an image")
    args = [str(folder), "-m", "v2", "--alpha", "0.9,1.3", "--save-masks", "--device", "cpu", "--workers", "2", "-q"]
    runner = CliRunner()
    local = runner.invoke(app, route(["stats", *args, "-o", str(tmp_path / "local.parquet")]))
    assert local.exit_code == 1, local.output
    (tmp_path / "ray.parquet").write_text("an older table is replaced")
    remote = runner.invoke(app, route(["stats", *args, "-o", str(tmp_path / "ray.parquet"), "--engine", "ray",
                                       "--row-group-size", "3"]))
    assert remote.exit_code == 1, remote.output  # the broken file: error rows, exit 1, as locally
    assert (tmp_path / "ray.parquet").is_file() and (tmp_path / "ray.savings.png").is_file()  # one file, as locally

    expected, found = rows(tmp_path / "local.parquet"), rows(tmp_path / "ray.parquet")
    assert len(found) == 8 and found == expected
    ray_file, local_file = pq.ParquetFile(tmp_path / "ray.parquet"), pq.ParquetFile(tmp_path / "local.parquet")
    assert ray_file.schema_arrow.equals(local_file.schema_arrow, check_metadata=True)  # what --resume checks
    assert [ray_file.metadata.row_group(i).num_rows for i in range(ray_file.num_row_groups)] == [3, 3, 2]
    assert sorted((s.path, s.setting) for s in read_masks(tmp_path / "ray.parquet")) == sorted(
        (row["path"], row["setting"]) for row in expected if row["error"] is None)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind

    # The local engine resumes a table the Ray engine wrote: the three photos are done, the broken
    # file is retried and the new photo added.
    shutil.copy(PHOTO_PATHS["astronaut"], folder / "astronaut.jpg")
    resumed = runner.invoke(app, route(["stats", *args, "-o", str(tmp_path / "ray.parquet"), "--resume", "--json"]))
    assert resumed.exit_code == 1, resumed.output
    document = json.loads(resumed.stdout)
    assert (document["skipped_existing"], document["processed"]) == (3, 2)
    local = runner.invoke(app, route(["stats", *args, "-o", str(tmp_path / "local.parquet")]))
    assert rows(tmp_path / "ray.parquet") == rows(tmp_path / "local.parquet")
