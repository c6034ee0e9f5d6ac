"""``apt-viz stats --engine ray`` on a local Ray with 2 CPUs gives the local engine's table.

One test: Ray's start-up takes seconds, so everything is checked on one run.
"""
from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from apt_viz.cli import app, route

from helpers import PHOTO_PATHS

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'apt-viz[ray]')")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # Ray's own


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
    remote = runner.invoke(app, route(["stats", *args, "-o", str(tmp_path / "ray.parquet"), "--engine", "ray"]))
    assert remote.exit_code == 1, remote.output  # the broken file: error rows, exit 1, as locally
    assert (tmp_path / "ray.parquet").is_dir() and (tmp_path / "ray.savings.png").is_file()

    def rows(table):
        return sorted(pq.read_table(table).to_pylist(), key=lambda row: (row["path"], row["setting"]))

    expected, found = rows(tmp_path / "local.parquet"), rows(tmp_path / "ray.parquet")
    assert len(found) == 8 and found == expected
    assert pq.read_schema(next((tmp_path / "ray.parquet").glob("*.parquet"))).names == pq.read_schema(
        tmp_path / "local.parquet").names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
