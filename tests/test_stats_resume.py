"""Interrupted ``apt-viz stats`` runs (real subprocesses) and the table writer's resume rules.

A SIGKILL at any instant must leave what ``--resume`` completes with no duplicate and no lost row;
SIGTERM stops cleanly with the table of what is done (exit 130).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from apt_viz.cli import app, route
from apt_viz.core.config import APTConfig
from apt_viz.stats.settings import StatsPlan, settings_of
from apt_viz.stats.table import StatsTable, StatsTableError

from helpers import PHOTO_PATHS

REPO = Path(__file__).resolve().parent.parent
ARGS = ["-m", "budget", "--alpha", "0.3,0.5", "--device", "cpu"]
IMAGES = 48

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory) -> Path:
    """48 distinct 800x600 photos made from the test photos (rotated crops)."""
    folder = tmp_path_factory.mktemp("many")
    photos = [Image.open(path).convert("RGB") for path in PHOTO_PATHS.values()]
    for index in range(IMAGES):
        photo = photos[index % len(photos)]
        photo.rotate(index * 7).resize((800, 600), Image.Resampling.BILINEAR).save(folder / f"img{index:02d}.jpg",
                                                                                    quality=90)
    return folder


def start(folder: Path, table: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "apt_viz", "stats", str(folder), "-o", str(table), *ARGS, "--workers", "1",
               "--batch-size", "2", "--row-group-size", "4", "-q", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {path.name} appeared: {process.stderr.read() if process.stderr else ''}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not appear in {timeout} s")
        time.sleep(0.005)


def keys(table: Path) -> list[tuple[str, str]]:
    return [(row["path"], row["setting"]) for row in pq.read_table(table, columns=["path", "setting"]).to_pylist()]


def sorted_rows(table: Path) -> list[dict]:
    return sorted(pq.read_table(table).to_pylist(), key=lambda row: (row["path"], row["setting"]))


@pytest.fixture(scope="module")
def complete_table(many_photos, tmp_path_factory) -> Path:
    table = tmp_path_factory.mktemp("complete") / "stats.parquet"
    result = CliRunner().invoke(app, route(["stats", str(many_photos), "-o", str(table), *ARGS]))
    assert result.exit_code == 0, result.output
    return table


def worker_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux's")
def test_sigkill_mid_run_then_resume_completes_without_duplicate_or_lost_row(many_photos, complete_table, tmp_path):
    table = tmp_path / "stats.parquet"
    partial = tmp_path / "stats.parquet.partial"
    process = start(many_photos, table)
    wait_for(partial / "part-000002.parquet", process)
    workers = worker_pids(process.pid)
    os.kill(process.pid, signal.SIGKILL)  # the main process only: its workers must not outlive it
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    time.sleep(0.5)
    assert workers and not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                            and "zombie" not in Path(f"/proc/{pid}/status").read_text()]
    assert not table.exists()  # never a half-written table
    committed = sorted(partial.glob("part-*.parquet"))
    assert 3 <= len(committed) < IMAGES  # killed mid-run: some rows committed, far from all

    resumed = start(many_photos, table, "--resume", "--json")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert not partial.exists()
    found = keys(table)
    assert len(found) == len(set(found)) == 2 * IMAGES
    assert sorted_rows(table) == sorted_rows(complete_table)
    assert '"skipped_existing": ' in out


def test_sigterm_stops_cleanly_and_resume_adds_the_rest(many_photos, complete_table, tmp_path):
    table = tmp_path / "stats.parquet"
    process = start(many_photos, table)
    wait_for(tmp_path / "stats.parquet.partial" / "part-000001.parquet", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "--resume" in err
    assert not (tmp_path / "stats.parquet.partial").exists()
    done = keys(table)
    assert 0 < len(done) < 2 * IMAGES and len(done) == len(set(done))

    resumed = start(many_photos, table, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert sorted_rows(table) == sorted_rows(complete_table)


# --- the writer's rules, on hand-made states -------------------------------------------------------------

def plan() -> StatsPlan:
    return StatsPlan(APTConfig(device="cpu"), settings_of("v2", [1.0]))


def row(path: str, error: str | None = None, tokens: int = 10) -> dict:
    return {"path": path, "setting": "v2 alpha=1", "error": error, "vision_tokens": None if error else tokens}


def test_latest_row_wins_when_parts_were_already_merged(tmp_path):
    """A kill between the merge's rename and the removal of the parts: OUT and the parts hold the same rows."""
    output = str(tmp_path / "t.parquet")
    with StatsTable(output, plan(), row_group_size=2) as table:
        table.add([row("a"), row("b", error="b: not a readable image")])
        table.add([row("c")])
        table.commit()
    parts = sorted((tmp_path / "t.parquet.partial").glob("part-*"))
    saved = [part.read_bytes() for part in parts]
    StatsTable(output, plan(), resume=True).finish()  # merged into OUT, parts removed ...
    (tmp_path / "t.parquet.partial").mkdir()  # ... and brought back, as if the kill came before their removal
    for part, data in zip(parts, saved):
        part.write_bytes(data)
    table = StatsTable(output, plan(), resume=True)
    assert table.done() == {("a", "v2 alpha=1"), ("c", "v2 alpha=1")}  # b failed: it is retried
    table.add([row("b", tokens=12)])
    assert table.finish() == 3
    rows = {r["path"]: r for r in pq.read_table(output).to_pylist()}
    assert sorted(rows) == ["a", "b", "c"] and rows["b"]["error"] is None and rows["b"]["vision_tokens"] == 12


def test_two_runs_cannot_write_one_table(tmp_path):
    output = str(tmp_path / "t.parquet")
    with StatsTable(output, plan()), pytest.raises(StatsTableError, match="another apt-viz stats run"):
        StatsTable(output, plan(), resume=True)


def test_an_empty_run_still_writes_a_readable_table(tmp_path):
    output = tmp_path / "t.parquet"
    assert StatsTable(str(output), plan()).finish() == 0
    assert pq.read_table(output).num_rows == 0
