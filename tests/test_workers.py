"""The worker engine (apt_viz.batch.workers) and the one failure classifier, then ``run`` and ``stats``
with a worker killed mid-run (real subprocesses, ``os.kill`` of a worker's pid)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from apt_viz.atomic import leftover_temp_files
from apt_viz.batch.failures import TaskError, WorkerDied, failure_of
from apt_viz.batch.workers import WorkerPool
from apt_viz.cli import EXIT_FAILURES, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK
from apt_viz.cli.app import exit_code
from apt_viz.imaging import ImageLoadError

from helpers import PHOTO_PATHS

REPO = Path(__file__).resolve().parent.parent
LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux's")


# --- tasks of the engine tests (module level: a spawned worker imports them) ------------------------------

def double_or_die(x: int) -> tuple[int, int]:
    """2x, and the worker's pid; item 7 kills its own worker, item 9 raises (a bug)."""
    if x == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 9:
        raise ZeroDivisionError("nine")
    time.sleep(0.005)
    return 2 * x, os.getpid()


def worker_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except FileNotFoundError:
        return False


# --- the engine -------------------------------------------------------------------------------------------

@LINUX_ONLY
def test_a_killed_worker_fails_its_input_only_and_is_replaced():
    with WorkerPool(double_or_die, 2) as pool:
        first = pool.pids
        done = {d.item: d for d in pool.imap(range(30))}
        assert sorted(done) == list(range(30))  # every input is reported once
        killed = done.pop(7)
        assert isinstance(killed.error, WorkerDied) and killed.value is None
        assert str(killed.error) == "the worker process handling it died (killed by SIGKILL)"
        raised = done.pop(9)
        assert isinstance(raised.error, TaskError) and str(raised.error) == "ZeroDivisionError: nine"
        assert "ZeroDivisionError" in raised.error.details  # the worker's traceback, for --debug
        assert all(d.error is None and d.value is not None and d.value[0] == 2 * i for i, d in done.items())
        assert pool.restarts == 1 and len(set(first) - set(pool.pids)) == 1  # one worker replaced
        assert {d.value[1] for i, d in done.items() if i > 20} <= set(pool.pids)  # the new one took work


def test_submission_is_bounded_and_a_stop_lets_the_inputs_in_flight_finish():
    pulled = []

    def items():
        for i in range(40):
            pulled.append(i)
            yield i

    finished = []
    with WorkerPool(abs, 2, per_worker=2) as pool:
        for done in pool.imap(items(), go_on=lambda: len(finished) < 5):
            finished.append(done.item)
            assert len(pulled) - len(finished) <= 4  # at most per_worker x workers in flight
    assert len(finished) == len(pulled) and 5 <= len(finished) <= 9  # started ones finished, no new ones


def test_a_payload_can_wait_for_room():
    """``payload`` returning None holds the item until a result frees room (the pixel slots of stats)."""
    free = [0]
    with WorkerPool(abs, 2) as pool:
        order = []
        for done in pool.imap(range(-6, 0), payload=lambda i: (free.pop(), i)[1] if free else None):
            order.append(done.item)
            free.append(0)
    assert order == list(range(-6, 0))  # one slot: one input at a time, in order


@LINUX_ONLY
def test_workers_die_with_their_parent_even_on_sigkill():
    script = ("import sys, time\nfrom apt_viz.batch.workers import WorkerPool\n"
              "pool = WorkerPool(abs, 2)\nprint(*pool.pids, flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    parent.kill()
    parent.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)]


# --- one classifier, one exit code ------------------------------------------------------------------------

def test_failure_classifier_and_exit_codes():
    bad = failure_of("a.jpg", ImageLoadError("a.jpg: not a readable image"))
    assert (bad.kind, bad.error) == ("input", "a.jpg: not a readable image")
    died = failure_of("b.jpg", WorkerDied("the worker process handling it died (killed by SIGKILL)"))
    assert (died.kind, died.error) == ("internal", "b.jpg: internal error: the worker process handling it died "
                                                   "(killed by SIGKILL)")
    raised = failure_of("c.jpg", TaskError("KeyError", "'x'", "Traceback ...\nKeyError: 'x'\n"), debug=True)
    assert raised.kind == "internal" and raised.error.startswith("c.jpg: internal error: KeyError: 'x'\nTraceback")
    try:
        {}["y"]
    except KeyError as exc:
        bug = failure_of("d.jpg", exc)
    assert bug.error == "d.jpg: internal error: KeyError: 'y' (rerun with --debug for the traceback)"
    assert exit_code(0) == EXIT_OK == 0
    assert exit_code(2) == EXIT_FAILURES == 1
    assert exit_code(2, internal=1) == EXIT_INTERNAL == 3
    assert exit_code(2, internal=1, interrupted=True) == EXIT_INTERRUPTED == 130


# --- run and stats with a worker killed mid-run ------------------------------------------------------------

IMAGES = 14


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """14 distinct 900x600 photos (rotated crops of the test photos)."""
    folder = tmp_path_factory.mktemp("photos")
    sources = [Image.open(path).convert("RGB") for path in PHOTO_PATHS.values()]
    for index in range(IMAGES):
        photo = sources[index % len(sources)].rotate(index * 11)
        photo.resize((900, 600), Image.Resampling.BILINEAR).save(folder / f"img{index:02d}.jpg", quality=90)
    return folder


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "apt_viz", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)


def kill_a_worker_when(process: subprocess.Popen, ready, timeout: float = 120) -> int:
    """SIGKILL one worker of ``process`` once ``ready()`` (some inputs are done, many are not); its pid."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run ended or hung before a worker could be killed: {process.communicate()[1][-2000:]}")
        time.sleep(0.005)
    workers = worker_pids(process.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    return workers[0]


KILLED = "internal error: the worker process handling it died (killed by SIGKILL)"


@LINUX_ONLY
@pytest.mark.slow
def test_run_with_a_worker_killed_mid_run(photos, tmp_path):
    out = tmp_path / "out"
    process = cli("run", str(photos), "-o", str(out), "-j", "2", "--device", "cpu", "-m", "budget", "--alpha", "0.3",
                  "-q")
    killed = kill_a_worker_when(process, lambda: len(list(out.glob("*/stats.json"))) >= 2)
    _, err = process.communicate(timeout=300)
    assert not alive(killed)
    assert process.returncode == EXIT_INTERNAL, err
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].endswith(KILLED), err
    name = Path(failed[0].removeprefix("failed: ").split(": ")[0]).name
    complete = {folder.name for folder in out.iterdir() if (folder / "stats.json").is_file()}
    # Every other image completed. The killed worker's own image may be complete too: the kill can land
    # after its last atomic write but before its result reached the parent, which then cannot know.
    assert complete - {name} == {f"img{i:02d}.jpg" for i in range(IMAGES)} - {name}
    assert leftover_temp_files(out) == []  # nothing half-written
    summary = json.loads((out / "summary.json").read_text())
    assert [(f["input"], f["kind"]) for f in summary["failures"]] == [(str(photos / name), "internal")]

    again = cli("run", str(photos), "-o", str(out), "-j", "2", "--device", "cpu", "-m", "budget", "--alpha", "0.3",
                "-q", "--skip-existing")
    _, err = again.communicate(timeout=300)
    assert again.returncode == EXIT_OK, err
    assert len(list(out.glob("*/stats.json"))) == IMAGES and leftover_temp_files(out) == []
    redone = json.loads((out / name / "stats.json").read_text())
    assert set(redone["artifacts"]) == {str(p.relative_to(out / name)) for p in (out / name).rglob("*")
                                        if p.is_file() and p.name != "stats.json"}


@LINUX_ONLY
@pytest.mark.slow
def test_stats_with_a_worker_killed_mid_run(photos, tmp_path):
    args = ["-m", "budget", "--alpha", "0.3,0.5", "--device", "cpu", "-j", "2", "-q", "--no-plot"]
    complete = tmp_path / "complete.parquet"
    whole = cli("stats", str(photos), "-o", str(complete), *args)
    assert whole.wait(timeout=300) == EXIT_OK

    table = tmp_path / "stats.parquet"
    partial = tmp_path / "stats.parquet.partial"
    process = cli("stats", str(photos), "-o", str(table), *args, "--row-group-size", "2")
    kill_a_worker_when(process, lambda: (partial / "part-000001.parquet").exists())
    _, err = process.communicate(timeout=300)
    assert process.returncode == EXIT_INTERNAL, err
    assert not partial.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".apt-tmp")]
    rows = pq.read_table(table).to_pylist()
    failed = {row["path"] for row in rows if row["error"] is not None}
    assert len(rows) == 2 * IMAGES and len(failed) == 1  # every other image completed
    assert all(row["error"].endswith(KILLED) for row in rows if row["path"] in failed)
    assert f"failed: {next(iter(failed))}: {KILLED}" in err

    resumed = cli("stats", str(photos), "-o", str(table), *args, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == EXIT_OK, err
    key = lambda row: (row["path"], row["setting"])  # noqa: E731
    assert sorted(pq.read_table(table).to_pylist(), key=key) == sorted(pq.read_table(complete).to_pylist(), key=key)
